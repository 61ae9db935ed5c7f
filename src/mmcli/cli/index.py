"""`mmcli index build`: a retrieval run's embeddings of a data set, saved once to search many times."""

from __future__ import annotations

from pathlib import Path

import typer
from typing_extensions import Annotated

from mmcli.cli.common import QuietOpt, handles_errors, set_quiet

app = typer.Typer(help="Search indexes: a retrieval run's embeddings of a data set, built once, searched many times.",
                  no_args_is_help=True)


@app.command("build")
@handles_errors
def build(
    run: Annotated[Path, typer.Argument(help="Run folder of a retrieval run (mmcli train --task retrieval).")],
    data: Annotated[Path, typer.Argument(help="Manifest (CSV, TSV, JSONL) whose rows are the items to search: each modality of the run that a row has is embedded.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write the index into: new or empty (or an earlier index, with --overwrite).", show_default=False)],
    weights: Annotated[str, typer.Option("--weights", help="best or last: the weights that embed the items (searches must use the same).")] = "best",
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or mps.")] = "auto",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an earlier index at --out; refused if the folder holds a file that mmcli index build did not write.")] = False,
    quiet: QuietOpt = False,
) -> None:
    """Embed DATA's items with RUN's towers once and save them to --out, so that
    `predict RUN --query-text ... --index OUT`, `serve RUN --index OUT` and
    `mmcli.load(RUN).search(..., index=OUT)` search them without embedding DATA again.
    Prints the index's record (index.json) as one JSON line."""
    import json
    import sys

    from mmcli import index_files
    from mmcli.export import outdir
    from mmcli.pipeline import load_run
    from mmcli.reporting.console import log
    from mmcli.search import SearchIndex

    set_quiet(quiet)
    outdir.check(out, overwrite, index_files.RECORD, "mmcli index build")  # refused before any embedding
    loaded = load_run(run, weights)
    log(f"embedding the items of {data} with {run} ({weights} weights)")
    index = SearchIndex(loaded, data, device)
    record = index_files.save(index.sides, loaded, data, out, overwrite)
    log(f"wrote {out}: " + ", ".join(f"{n} {s['items']} items x {s['dim']}" for n, s in record["sides"].items()))
    sys.stdout.write(json.dumps({k: v for k, v in record.items() if k != "files"}) + "\n")
