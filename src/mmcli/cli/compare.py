"""`mmcli compare`: the ablation of unimodal and multimodal variants, with statistics."""

from __future__ import annotations

import shlex
import sys
from datetime import datetime
from pathlib import Path
from typing import Optional

import typer
from typing_extensions import Annotated

from mmcli.cli.common import (CacheDirOpt, ConfigOpt, EncoderOpt, QuietOpt, SetOpt, WorkersOpt, cache_arg, encoder_flags,
                              handles_errors, resolve_config, set_quiet, split_list)
from mmcli.errors import UsageError


@handles_errors
def compare(
    ctx: typer.Context,
    items: Annotated[Optional[list[str]], typer.Argument(help="Families (unimodal, multimodal, subsets, crossmodal) or variants (unimodal:image, multimodal:concat, subset:image+text, crossmodal:translate:text); default: unimodal multimodal. After '@', an encoder choice the variant's name keeps, so encoders compare side by side: unimodal:image@mobilenet_v2:frozen (modes frozen, finetuned, scratch), multimodal:concat@image=mobilenet_v2,text=bigru, multimodal@image=mobilenet_v2:frozen (every fusion, and the ensemble of that encoder's unimodal runs where they run); options per encoder name with --set model.encoder_options.image.mobilenet_v2.weights=PATH.", show_default=False)] = None,
    data: Annotated[Optional[str], typer.Option("--data", help="Manifest or folder; default: the built-in toy set.", show_default=False)] = None,
    modalities: Annotated[Optional[str], typer.Option("--modalities", "-m", help="Comma-separated modalities to compare (default: all of the data's).", show_default=False)] = None,
    config: ConfigOpt = None,
    task: Annotated[Optional[str], typer.Option("--task", help="Task of every run: classification, multilabel, regression or verification (retrieval, captioning and transcription train with mmcli train).", show_default=False)] = None,
    encoders: EncoderOpt = None,
    seeds: Annotated[int, typer.Option("--seeds", min=1, help="Seeds per variant; results pair up by seed. Intervals and tests need 2 or more.")] = 1,
    epochs: Annotated[Optional[int], typer.Option("--epochs", min=1, help="Most epochs per run.", show_default=False)] = None,
    metric: Annotated[Optional[str], typer.Option("--metric", help="Metric of the summary, the statistics and the verdicts (default: the task's, accuracy for classification).", show_default=False)] = None,
    reference: Annotated[Optional[str], typer.Option("--reference", help="Test every variant against this one, paired by seed (default: the best unimodal variant); also with --collect.", show_default=False)] = None,
    warm_start: Annotated[bool, typer.Option("--warm-start/--no-warm-start", help="Start each fused run's encoders and per-modality heads from the unimodal runs of its seed (UMT, Du et al. 2023; docs/fusion.md), so the weaker modality's encoder is trained too; --no-warm-start trains every run from scratch.")] = True,
    ensemble_folds: Annotated[Optional[int], typer.Option("--ensemble-folds", min=0, help="Where the validation split holds fewer than 30 sources, choose multimodal:ensemble's weights on out-of-fold predictions: each unimodal run it averages is trained again this many times, each time without one fold of the training split (docs/compare.md); 0: equal weights there, else 2 or more. Default: 5.", show_default=False)] = None,
    tune: Annotated[bool, typer.Option("--tune", help="Before the runs, give every trained variant the same small search on the validation split (first seed): by default the learning rate x {1/3, 1, 3} and the weight decay x {1, 10}; each variant's best setting is used for all its seeds and reported in report.md and summary.json. The test split is never seen by the search.")] = False,
    tune_space: Annotated[Optional[list[str]], typer.Option("--tune-space", help="A key and the values to search, KEY=V1,V2,... (train.* or model.*; repeat for a grid over several keys); implies --tune and replaces the default space.", show_default=False)] = None,
    tune_trials: Annotated[Optional[int], typer.Option("--tune-trials", min=1, help="Search this many points of the grid, drawn with the base seed (the same for every variant); default: the whole grid. Implies --tune.", show_default=False)] = None,
    corrupt: Annotated[Optional[list[str]], typer.Option("--corrupt", help="Also score every run on the test split with a modality degraded, MODALITY:KIND@LEVEL as evaluate --corrupt takes it (repeatable); report.md compares the variants under each degradation, paired by seed.", show_default=False)] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Base seed: the split's seed, and seed i trains with base + i.", show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Folder for runs and results (default: runs/compare-<timestamp>). Rerunning into the same folder skips finished runs.", show_default=False)] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Start over in an existing comparison folder: deletes the files mmcli wrote there, and refuses if the folder holds any other file.")] = False,
    jobs: Annotated[str, typer.Option("--jobs", "-j", help="Runs at once, in separate processes that share the CPU cores; auto: one per core (at most 4) on the CPU, 1 on a GPU.")] = "auto",
    print_jobs: Annotated[bool, typer.Option("--print-jobs", help="Plan the comparison into --out, print one shell command per run and nothing else (for xargs -P, GNU parallel or a Slurm array); then use --collect.")] = False,
    job: Annotated[Optional[int], typer.Option("--job", min=0, help="Run only job K of the comparison planned in --out (what --print-jobs prints).", show_default=False)] = None,
    collect_dir: Annotated[Optional[Path], typer.Option("--collect", help="Summarise the runs finished in this comparison folder (after --print-jobs) and write the reports.", show_default=False)] = None,
    sets: SetOpt = None,
    cache_dir: CacheDirOpt = None,
    workers: WorkersOpt = 1,
    quiet: QuietOpt = False,
) -> None:
    """Train every variant with the same splits, budget and seeds; report mean, 95 % interval,
    the paired difference to the best single modality (or to --reference) with its p-value, each variant without
    each modality, and (with the subsets family) each modality's Shapley value."""

    set_quiet(quiet)
    if collect_dir is not None or job is not None:
        _refuse_ignored(collect_dir, job, items=items, data=data, modalities=modalities, config=config, task=task, epochs=epochs, metric=metric,
                        seed=seed, sets=sets, print_jobs=print_jobs, overwrite=overwrite, seeds=seeds != 1, encoder=encoders,
                        reference=reference if job is not None else None, no_warm_start=not warm_start,
                        tune=tune or bool(tune_space) or tune_trials is not None, corrupt=corrupt,
                        ensemble_folds=ensemble_folds is not None)
    if collect_dir is not None:
        return _collect(collect_dir, reference)
    if job is not None:
        return _run_job(out, job, cache_arg(cache_dir))
    cfg = resolve_config(config, {"data.manifest": data, "model.modalities": split_list(modalities), "train.epochs": epochs, "train.seed": seed, "model.task": task,
                                  **encoder_flags(encoders)}, sets)
    n_jobs = _jobs(jobs, cfg.train.device)
    out = out or Path("runs") / f"compare-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    command = _command_line(ctx)
    plan_options = {"reference": reference, "warm_start": warm_start, "tune": _tune_request(tune, tune_space, tune_trials),
                    "folds": ensemble_folds}
    if print_jobs and corrupt:
        raise UsageError("--corrupt scores the runs of a comparison that mmcli runs itself; with --print-jobs, "
                         "use mmcli evaluate RUN --corrupt on the finished runs")
    if print_jobs:
        return _print_jobs(cfg, items or [], seeds, metric, out, overwrite, cache_arg(cache_dir), workers, command, n_jobs,
                           plan_options)
    _run(cfg, items or [], seeds, metric, out, overwrite, cache_arg(cache_dir), workers, n_jobs, command, plan_options,
         corrupt or [])


def _run_job(out: Optional[Path], job: int, cache_dir: str | None) -> None:
    """--job K: one run of the comparison planned in --out."""
    from mmcli.compare.crossfit import label
    from mmcli.compare.runner import run_job
    from mmcli.reporting.console import log

    if out is None:
        raise UsageError("--job needs --out: the comparison folder that --print-jobs planned")
    result, reused = run_job(out, job, cache_dir)
    log(f"job {job}: {label(result)} {'already finished' if reused else 'finished'}")


def _tune_request(tune: bool, space: list[str] | None, trials: int | None) -> dict | None:
    """--tune, --tune-space, --tune-trials -> what make_plan takes (None: no search)."""
    if not (tune or space or trials is not None):
        return None
    from mmcli.compare.tune import parse_space

    return {"space": parse_space(space) if space else None, "trials": trials}


def _collect(collect_dir: Path, reference: str | None) -> None:
    from mmcli.compare.collect import collect
    from mmcli.reporting.console import log

    result = collect(collect_dir, reference=reference)
    if result.missing:
        log(f"warning: {len(result.missing)} run(s) have no result yet and are left out: " + "; ".join(result.missing))
    log(f"results in {collect_dir}")
    _show(result)


def _refuse_ignored(collect_dir, job, **given) -> None:
    """--collect and --job read the plan saved in the folder: options they would ignore are an error."""
    flags = {"items": "variants", "sets": "--set", "print_jobs": "--print-jobs", "no_warm_start": "--no-warm-start",
             "ensemble_folds": "--ensemble-folds"}
    named = [flags.get(k, f"--{k}") for k, v in given.items() if v]
    if collect_dir is not None and job is not None:
        named.append("--job")
    if named:
        mode = "--collect" if collect_dir is not None else "--job"
        raise UsageError(f"{mode} uses the plan saved in the comparison folder; drop {', '.join(named)}")


def _jobs(value: str, device: str) -> int:
    from mmcli.compare.parallel import auto_jobs

    if value.strip().lower() == "auto":
        return auto_jobs(device)
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise UsageError(f"--jobs {value}: give a whole number of 1 or more, or auto")
    return n


def _command_line(ctx: typer.Context) -> str:
    """The command as the user could retype it: the arguments and every option given a
    value other than its default (rebuilt from the parsed parameters, so it is the same
    whether mmcli runs from a shell or in-process)."""
    words = ["mmcli", ctx.info_name or "compare"]
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if value is None or value == param.default or value == () or value == []:
            continue
        if param.name in ("print_jobs", "overwrite"):  # how this one was started, not what it compares
            continue
        if param.param_type_name == "argument":
            words += [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]
            continue
        name = max(param.opts, key=len)
        if getattr(param, "is_flag", False):  # an on/off pair given its "off" form: --no-warm-start
            words.append(max(param.secondary_opts, key=len) if value is False and param.secondary_opts else name)
        elif isinstance(value, (list, tuple)):
            for v in value:
                words += [name, str(v)]
        else:
            words += [name, str(value)]
    return shlex.join(words)


def _print_jobs(cfg, items, seeds, metric, out, overwrite, cache_dir, workers, command, jobs, plan_options) -> None:
    from mmcli.compare.parallel import threads_per_job
    from mmcli.compare.runner import job_commands, make_plan, prepare_out, write_plan
    from mmcli.compare.tune import tune_plan
    from mmcli.reporting.console import log, task_bar

    with task_bar("preprocessing") as update:  # each job runs with the threads a --jobs run would give it
        plan, pool = make_plan(cfg, items, seeds, metric, cache_dir, workers, update, command,
                               threads_per_job(jobs) if jobs > 1 else 0, **plan_options)
    prepare_out(out, overwrite)
    tune_plan(plan, pool, out, say=log)  # the search runs here, before the jobs are handed out
    write_plan(out, plan)
    for line in job_commands(out, plan, cache_dir):
        print(line)


def _run(cfg, items, seeds, metric, out, overwrite, cache_dir, workers, jobs, command, plan_options,
         corrupt: list[str]) -> None:
    from mmcli.compare.crossfit import label
    from mmcli.compare.runner import run_compare
    from mmcli.reporting.console import FitBar, log, task_bar

    from mmcli.heads import make_task

    metric = metric or cfg.eval.metric or make_task(cfg).default_metric
    parallel = jobs > 1
    with task_bar("preprocessing") as update, \
            (task_bar(f"runs, {jobs} at once") if parallel else FitBar(metric=metric)) as bar:
        def on_run(done: int, total: int, name: str) -> None:
            log(f"[{done + 1}/{total}] {name}")

        training: dict[str, float] = {}  # the running runs: the share of their epochs done

        def show(done: int, total: int) -> None:
            info = ("training " + " ".join(f"{100 * share:.0f}%" for share in training.values())) if training else ""
            bar(done + sum(training.values()), total, info)  # type: ignore[operator]  # the task bar's update

        def on_epoch(name: str, finished: int, epochs: int, done: int, total: int) -> None:
            training[name] = finished / max(1, epochs)
            show(done, total)

        def on_done(done: int, total: int, result: dict) -> None:
            if parallel:
                training.pop(label(result), None)
                show(done, total)
                name = metric
                value = result["scores"].get(name)
                score = "" if value is None else f": {name} {value:.4f}"
                log(f"[{done}/{total}] {label(result)}{score} ({result['seconds']:.0f} s)")

        result = run_compare(cfg, items, seeds, out, metric, cache_dir, overwrite, workers, on_run,
                             None if parallel else bar, update, jobs, command, on_done, say=log, corruptions=corrupt,
                             on_epoch=on_epoch if parallel else None, **plan_options)
    names = ["results.csv", "summary.csv", "summary.json", "report.md", "compare.png"]
    names += ["attribution.json"] if result.attribution else []
    log(f"results in {out} ({', '.join(names)})")
    _show(result)


def _rate(metric: str) -> bool:
    return metric in ("accuracy", "macro_f1", "micro_f1", "subset_accuracy", "mean_average_precision")


def _show(result) -> None:
    from mmcli.reporting.tables import show_table

    rate = _rate(result.metric)

    def f(v, signed=False):
        if v is None:
            return "–"
        if rate:
            return f"{100 * v:+.1f}" if signed else f"{100 * v:.1f}"
        return f"{v:+.4g}" if signed else f"{v:.4g}"

    mods = [m for m in result.modalities if any(r.get(f"without_{m}") is not None for r in result.summary)]
    alone = any(r.get("others_missing") is not None for r in result.summary)  # translation: the source alone
    rows = []
    for r in result.summary:
        pm = "" if r["std"] is None else f" ± {f(r['std'])}"
        ci = "–" if r["ci_low"] is None else f"{f(r['ci_low'])}–{f(r['ci_high'])}"
        rows.append((r["variant"], r["n"], f"{f(r['mean'])}{pm}", ci, f(r["delta_vs_reference"], True),
                     *("–" if r.get(key) is None else f"{r[key]:.3g}" for key in ("p_value", "p_holm", "p_resampled_holm")),
                     *[f(r.get(f"without_{m}")) for m in mods], *([f(r.get("others_missing"))] if alone else []),
                     r["verdict"]))
    unit = f"{result.metric} (%)" if rate else result.metric
    fmt = "table" if sys.stdout.isatty() else "csv"
    headers = ["variant", "n", unit, "95% CI", f"delta vs {result.reference or 'best unimodal'}", "p (paired t)", "p (Holm)",
               "p (test resampled, Holm)", *[f"without {m}" for m in mods],
               *(["others missing"] if alone else []), "verdict"]
    prior = next((r["prior"] for r in result.summary if r.get("prior") is not None), None)
    said = "" if prior is None else f"; label prior (no input) {f(prior)}"
    show_table(f"compare: {unit}, mean ± std over seeds{said}", headers, rows, fmt)
    a = result.attribution
    if a is not None and fmt == "table":
        shap = [(m, f(s["mean"], True), "–" if s["ci_low"] is None else f"{f(s['ci_low'])}–{f(s['ci_high'])}")
                for m, s in a["shapley"].items()]
        shap += [(f"{p} (interaction)", f(s["mean"], True), "–" if s["ci_low"] is None else f"{f(s['ci_low'])}–{f(s['ci_high'])}")
                 for p, s in a["interaction"].items()]
        show_table(f"attribution: Shapley value of {unit} per modality (empty set {f(a['empty_set'])})",
                   ["modality", "Shapley value", "95% CI"], shap, fmt)
