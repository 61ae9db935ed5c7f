"""`mmcli export`: a run's model as ONNX or TorchScript, with preprocessing.json, checked."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from typing_extensions import Annotated

from mmcli.cli.common import CacheDirOpt, QuietOpt, cache_arg, handles_errors, set_quiet


@handles_errors
def export(
    run: Annotated[Path, typer.Argument(help="Run folder written by mmcli train.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write the model(s), preprocessing.json and export.json into: new or empty.", show_default=False)],
    fmt: Annotated[str, typer.Option("--format", help="onnx (run with onnxruntime; needs pip install 'mmcli[export]') or torchscript (torch.jit.load).")] = "onnx",
    weights: Annotated[str, typer.Option("--weights", help="best or last.")] = "best",
    data: Annotated[Optional[Path], typer.Option("--data", help="A manifest whose first rows the check runs (default: the run's test split).", show_default=False)] = None,
    examples: Annotated[int, typer.Option("--examples", min=1, help="How many examples the check compares the exported model with the run's on.")] = 8,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an earlier export at --out; refused if the folder holds a file that mmcli export did not write.")] = False,
    cache_dir: CacheDirOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Export a run's model as ONNX or TorchScript (a retrieval run: one model per tower), with
    preprocessing.json, which says how raw inputs become its tensors; the export is checked
    against the run's own outputs on a few examples (export.json has the numbers)."""
    import json
    import sys

    from mmcli.export import export_run
    from mmcli.reporting.console import log

    set_quiet(quiet)
    log(f"exporting {run} as {fmt}" + (" (capturing the model takes a few seconds per modality)" if fmt == "onnx" else ""))
    summary = export_run(run, fmt, out, weights, data, examples, overwrite, cache_arg(cache_dir))
    log(f"wrote {out}: {', '.join(summary['models'])}, preprocessing.json, export.json; outputs equal the run's within "
        f"{summary['tolerance']:.0e} on {summary['examples']}")
    sys.stdout.write(json.dumps(summary) + "\n")
