"""`mmcli preprocess`: decode a data set once into the cache, and summarise it."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Optional

import typer
from typing_extensions import Annotated

from mmcli.kinds import KINDS
from mmcli.cli.common import CacheDirOpt, ConfigOpt, QuietOpt, SetOpt, WorkersOpt, cache_arg, handles_errors, resolve_config, set_quiet


@handles_errors
def preprocess(
    data: Annotated[Optional[str], typer.Argument(help="Manifest (CSV, TSV, JSONL) or folder holding manifest.csv; default: the built-in toy set.", show_default=False)] = None,
    config: ConfigOpt = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Cache folder to use (same as --cache-dir).", show_default=False)] = None,
    cache_dir: CacheDirOpt = None,
    workers: WorkersOpt = 1,
    on_error: Annotated[str, typer.Option("--on-error", help="fail: stop on bad rows; skip: leave them out and list them in bad_rows.csv.")] = "fail",
    seed: Annotated[Optional[int], typer.Option("--seed", help="Seed of the split shown in the summary.", show_default=False)] = None,
    sets: SetOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Validate every row, decode images and audio into tensors, and cache them."""
    from mmcli.data.preprocess import preprocess as run
    from mmcli.data.splits import source_groups, task_splits
    from mmcli.errors import UsageError
    from mmcli.reporting.console import log, task_bar
    from mmcli.reporting.tables import show_table

    set_quiet(quiet)
    if on_error not in ("fail", "skip"):
        raise UsageError(f"--on-error must be fail or skip, not '{on_error}'")
    cfg = resolve_config(config, {"data.manifest": data, "data.on_error": on_error, "train.seed": seed}, sets)
    from mmcli.heads import make_task

    task = make_task(cfg)  # retrieval, captioning and transcription data need no label column
    with task_bar("preprocessing") as update:
        table = run(cfg.data.manifest, cfg.data, cache_arg(out or cache_dir), workers, update, task.needs_label,
                    task.length_percentile)
    log(f"{len(table)} examples in cache {table.key}; modalities: "
        + ", ".join(f"{n} ({m.kind}, " + (f"columns {', '.join(m.columns)})" if KINDS[m.kind].many_columns
                                         else f"column {m.column})") + _lacking(table, n) for n, m in table.modalities.items()))
    from mmcli.data.preprocess import skipped_message

    skipped = skipped_message(table, cache_arg(out or cache_dir))
    if skipped:
        log(skipped)
    if table.labels is None and (task.needs_label or task.stratify):
        return
    seed_value = cfg.train.seed if cfg.data.split_seed is None else cfg.data.split_seed
    values = table.labels if table.labels is not None else [""] * len(table)
    splits = task_splits(task, values, table.given_splits, seed_value, cfg.data.val_fraction,
                         cfg.data.test_fraction, table.source, source_groups(table, task.crossmodal), cfg.data.label)
    if not task.stratify:  # regression, multilabel: no classes to count
        show_table("examples per split", ["train", "val", "test", "total"],
                   [tuple(splits.count(s) for s in ("train", "val", "test")) + (len(splits),)])
        return
    counts = Counter(zip(values, splits))
    rows = [(label, *(counts[(label, s)] for s in ("train", "val", "test")), sum(counts[(label, s)] for s in ("train", "val", "test")))
            for label in sorted(set(values))]
    rows.append(("all", *(splits.count(s) for s in ("train", "val", "test")), len(splits)))
    show_table("examples per split and class", ["label", "train", "val", "test", "total"], rows)


def _lacking(table, name: str) -> str:
    """' missing in N rows' for a modality that data.missing=allow kept rows without."""
    absent = int((~table.present[name]).sum()) if name in table.present else 0
    return f" missing in {absent} rows" if absent else ""
