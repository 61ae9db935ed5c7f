"""`mmcli train`: train one variant and write its run folder."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from typing_extensions import Annotated

from mmcli.cli.common import (CacheDirOpt, ConfigOpt, EncoderOpt, QuietOpt, SetOpt, WorkersOpt, cache_arg,
                              encoder_flags, handles_errors, resolve_config, set_quiet, split_list)


@handles_errors
def train(
    data: Annotated[Optional[str], typer.Argument(help="Manifest, folder holding manifest.csv, or cache folder; default: the built-in toy set.", show_default=False)] = None,
    config: ConfigOpt = None,
    modalities: Annotated[Optional[str], typer.Option("--modalities", "-m", help="Comma-separated modalities to use, e.g. image,text (default: all).", show_default=False)] = None,
    fusion: Annotated[Optional[str], typer.Option("--fusion", help="Fusion for two or more modalities (see mmcli list fusions).", show_default=False)] = None,
    encoders: EncoderOpt = None,
    task: Annotated[Optional[str], typer.Option("--task", help="Task: classification, multilabel, regression, retrieval, captioning, transcription or verification (see mmcli list tasks).", show_default=False)] = None,
    logger: Annotated[Optional[str], typer.Option("--logger", help="Also log losses, metrics and the learning rate to: tensorboard (needs pip install 'mmcli[tensorboard]'); metrics.jsonl is always written.", show_default=False)] = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", min=1, help="Most epochs to train (early stopping may end sooner).", show_default=False)] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", min=1, help="Examples per batch.", show_default=False)] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Peak learning rate of AdamW.", show_default=False)] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Seed of the initialisation, the shuffling and (unless data.split_seed is set) the split.", show_default=False)] = None,
    device: Annotated[Optional[str], typer.Option("--device", help="auto, cpu, cuda or mps.", show_default=False)] = None,
    nproc: Annotated[int, typer.Option("--nproc", min=1, help="Processes to train in, started through torchrun (distributed data parallel: gloo on CPU, nccl on GPUs, one GPU each); --batch-size is the global batch.")] = 1,
    precision: Annotated[Optional[str], typer.Option("--precision", help="fp32, bf16 or fp16 (mixed precision through torch.autocast; fp16 with a gradient scaler).", show_default=False)] = None,
    loader_workers: Annotated[Optional[int], typer.Option("--loader-workers", min=0, help="Processes that assemble batches from the cache while the model trains, kept from epoch to epoch (default: 0 on the CPU, up to 4 with a GPU, where batches also go to pinned memory).", show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Run folder (default: runs/<variant>-<timestamp>).", show_default=False)] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing run folder at --out, when the run ends; refused if the folder holds a file that mmcli did not write.")] = False,
    resume_run: Annotated[Optional[Path], typer.Option("--resume", help="Continue the interrupted training of this run folder (Ctrl-C or a kill) from its last finished epoch; its saved config is used.", show_default=False)] = None,
    sets: SetOpt = None,
    cache_dir: CacheDirOpt = None,
    workers: WorkersOpt = 1,
    quiet: QuietOpt = False,
) -> None:
    """Train one model (unimodal with one modality, fused with several) and save its run folder."""
    from mmcli.heads import make_task
    from mmcli.reporting.console import FitBar, log, task_bar
    from mmcli.training.api import train as run_train
    from mmcli.training.distributed import world

    here = world()
    set_quiet(quiet or here.rank > 0)  # distributed: rank 0 speaks for all
    if resume_run is not None:
        given = any(v is not None for v in (data, config, modalities, fusion, encoders, task, logger, epochs, batch_size,
                                            lr, seed, device, precision, loader_workers, out, sets))
        _resume(resume_run, given or overwrite, cache_dir)
        return
    flags = {"data.manifest": data, "model.modalities": split_list(modalities), "model.fusion": fusion,
             "model.task": task, "train.epochs": epochs, "train.batch_size": batch_size, "train.lr": lr,
             "train.seed": seed, "train.device": device, "train.logger": logger, "train.precision": precision,
             "train.loader_workers": loader_workers, **encoder_flags(encoders)}
    cfg = resolve_config(config, flags, sets)
    if nproc > 1 and not here.active:
        raise typer.Exit(_launch(nproc, cfg, out, overwrite, cache_dir, workers))
    with task_bar("preprocessing") as update, FitBar(metric=cfg.eval.metric or make_task(cfg).default_metric, logger=log) as bar:
        outcome = run_train(cfg, out, overwrite, cache_arg(cache_dir), workers, bar,
                            preprocess_progress=update, argv=["mmcli", *sys.argv[1:]])
    if here.active:
        from mmcli.training.distributed import finish

        finish()
        if not here.main:
            return
    _report(outcome)


def _resume(run: Path, other_options: bool, cache_dir: Optional[Path]) -> None:
    from mmcli.errors import UsageError
    from mmcli.reporting.console import FitBar, log, task_bar
    from mmcli.training.api import resume

    if other_options:
        raise UsageError("--resume continues a run with its saved config; drop the other options")
    with task_bar("preprocessing") as update, FitBar(metric="", logger=log) as bar:
        outcome = resume(run, cache_arg(cache_dir), bar, update)
    _report(outcome)


def _launch(nproc: int, cfg, out: Optional[Path], overwrite: bool, cache_dir: Optional[Path], workers: int) -> int:
    """Check what can be checked once, preprocess once (the ranks then read the cache),
    and start `nproc` copies of this command through torchrun's launcher."""
    import subprocess

    from mmcli.data.preprocess import preprocess
    from mmcli.reporting.console import log, task_bar

    if out is not None:
        from mmcli.runs import resolve_out_dir

        resolve_out_dir(out, "", overwrite)  # an existing folder without --overwrite: refused before starting
    from mmcli.heads import make_task
    from mmcli.training.api import training_config

    trained, _ = training_config(cfg)  # preprocessed as the ranks will ask for it (retrieval: no label column)
    with task_bar("preprocessing") as update:
        task = make_task(trained)
        preprocess(trained.data.manifest, trained.data, cache_arg(cache_dir), workers, update, task.needs_label,
                   task.length_percentile)
    args = _without_nproc(sys.argv[1:])
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m", "mmcli", *args]
    log(f"starting {nproc} processes: torchrun --standalone --nproc_per_node={nproc} -m mmcli {' '.join(args)}")
    import os

    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))  # the cores shared out
    return subprocess.run(command, env=env).returncode


def _without_nproc(args: list[str]) -> list[str]:
    out, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


def _report(outcome) -> None:
    from mmcli.reporting.console import log
    from mmcli.reporting.tables import print_jsonl, show_table

    result, scores = outcome.result, outcome.test_scores or {}
    summary = {"run": str(outcome.run_dir), "best_epoch": result.best_epoch,
               f"val_{result.metric}": result.best_metric, f"test_{result.metric}": scores.get(result.metric),
               "parameters": outcome.parameters, "seconds": round(result.seconds, 1)}
    log(f"run folder: {outcome.run_dir}")
    if sys.stdout.isatty():
        show_table("training finished", list(summary), [[_fmt(v) for v in summary.values()]], "table")
    else:
        print_jsonl(summary)


def _fmt(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)
