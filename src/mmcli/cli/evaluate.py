"""`mmcli evaluate`: score a run on a split of its data, or on other data."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from typing_extensions import Annotated

from mmcli.cli.common import CacheDirOpt, QuietOpt, cache_arg, handles_errors, set_quiet


@handles_errors
def evaluate(
    run: Annotated[Path, typer.Argument(help="Run folder written by mmcli train.")],
    data: Annotated[Optional[str], typer.Option("--data", help="Other data to score (default: the run's training data, same split).", show_default=False)] = None,
    split: Annotated[Optional[str], typer.Option("--split", help="train, val or test (default test; for --data without a split column, every row). Rows the run was trained or validated on are never scored as other data.", show_default=False)] = None,
    weights: Annotated[str, typer.Option("--weights", help="best or last.")] = "best",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object to stdout instead of tables.")] = False,
    drop: Annotated[Optional[list[str]], typer.Option("--drop", help="Evaluate with this modality absent, through the model's mask (repeatable).", show_default=False)] = None,
    corrupt: Annotated[Optional[list[str]], typer.Option("--corrupt", help="Degrade a modality: MODALITY:KIND@LEVEL, LEVEL in [0, 1] (repeatable); kinds in docs/robustness.md.", show_default=False)] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the corruptions.")] = 0,
    robustness: Annotated[bool, typer.Option("--robustness", help="Sweep every corruption of every modality over levels 0.0-1.0 and every dropped modality; writes robustness.json and a PNG per modality.")] = False,
    plots: Annotated[bool, typer.Option("--plots", help="Also write curves.png (losses and validation metrics per epoch, 1000x400 px) and, for classification, confusion-<split>.png (800x800 px); for verification, roc-det-<split>.png (ROC and DET curves, 1000x400 px); for retrieval, retrieval-<query>-to-<gallery>-<split>.png (a few queries and their 5 nearest items, hits framed green); for captioning, captions-<split>.png (a few sources with their generated captions); into the run folder.")] = False,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or mps (not the device the run was trained on).")] = "auto",
    errors: Annotated[Optional[Path], typer.Option("--errors", help="Also write the examples answered wrongly to this file, worst first (classification: the most confident mistakes; multilabel: the most wrong labels; regression: every example by its error), with their ids, answers and the truth: JSON lines, or CSV for a .csv name.", show_default=False)] = None,
    zero_shot: Annotated[Optional[str], typer.Option("--zero-shot", help="Retrieval runs that align text with another modality: classify the rows of this labelled data set (a manifest, or a folder holding manifest.csv) by the nearest of one text prompt per class, and report the accuracy; writes zero-shot-<data>.json (docs/crossmodal.md#zero-shot-baselines).", show_default=False)] = None,
    prompt: Annotated[str, typer.Option("--prompt", help="With --zero-shot: each class's text, {label} standing for the class name.")] = "a photo of a {label}.",
    trials: Annotated[Optional[Path], typer.Option("--trials", help="Verification runs: score these trials instead of drawn ones: a CSV with columns a, b (example ids of the scored split or --data) and same (1/0, true/false, same/different).", show_default=False)] = None,
    cache_dir: CacheDirOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """The task's metrics (classification: accuracy, macro-F1, per-class precision and recall, the
    confusion matrix; multilabel: micro/macro-F1, mAP, subset accuracy; regression: MAE, RMSE, R^2;
    verification: EER, minDCF, TAR@FAR, ROC AUC, rank-1); saves eval-<split>.json."""
    from mmcli.errors import UsageError
    from mmcli.evaluation.api import evaluate_run
    from mmcli.reporting.console import log, task_bar

    set_quiet(quiet)
    if split is not None and split not in ("train", "val", "test"):
        raise UsageError(f"--split must be train, val or test, not '{split}'")
    if weights not in ("best", "last"):
        raise UsageError(f"--weights must be best or last, not '{weights}'")
    if zero_shot is not None:
        return _zero_shot(run, zero_shot, prompt, split, device, as_json, [data, drop, corrupt, robustness, plots, errors, trials])
    if robustness:
        if plots or errors is not None or trials is not None:
            raise UsageError("--plots, --errors and --trials go with a plain evaluation; --robustness writes its own files")
        return _robustness(run, data, split, cache_arg(cache_dir), device, seed, as_json)
    if errors is not None:
        from mmcli.evaluation.api import check_errors_file

        check_errors_file(errors)
    outputs: dict = {}
    with task_bar("preprocessing") as update:
        scores = evaluate_run(run, data, split, cache_arg(cache_dir), weights, update, device=device,
                              drops=drop or [], corruptions=corrupt or [], seed=seed, outputs=outputs, trials=trials)
    if errors is not None:
        from mmcli.evaluation.api import write_errors

        log(f"wrote {write_errors(run, outputs, errors)} wrong answer(s) to {errors}")
    for warning in scores.get("warnings", []):
        log(f"warning: {warning}")
    if plots:
        from mmcli.evaluation.api import write_plots

        log(f"wrote {', '.join(str(p) for p in write_plots(run, scores, outputs))}")
    log(f"wrote {run / scores.pop('saved_as')}")
    if as_json or not sys.stdout.isatty():
        sys.stdout.write(json.dumps(scores) + "\n")
        return
    _show(scores)


def _show(scores: dict) -> None:
    from mmcli.reporting.tables import show_table

    headline = [(k, f"{v:.4f}" if isinstance(v, float) else v) for k, v in scores.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "epoch"]
    show_table(f"{scores['split']} split", ["metric", "value"], headline, "table")
    per_class = scores.get("per_class", {})
    if per_class:
        show_table("per class", ["label", "precision", "recall", "f1", "support"],
                   [(k, f"{v['precision']:.3f}", f"{v['recall']:.3f}", f"{v['f1']:.3f}", v["support"]) for k, v in per_class.items()], "table")
    per_label = scores.get("per_label", {})
    if per_label:
        show_table("per label", ["label", "f1", "support", "threshold"],
                   [(k, f"{v['f1']:.3f}", v["support"], f"{v['threshold']:.2f}") for k, v in per_label.items()], "table")
    if scores.get("samples"):  # captioning
        show_table("first captions", ["generated", "reference"], [(s["generated"], s["reference"]) for s in scores["samples"]], "table")
    cm = scores.get("confusion_matrix")
    if cm:
        short = [str(i) for i in range(len(cm["labels"]))]
        rows = [(f"{i} {label}", *row) for i, (label, row) in enumerate(zip(cm["labels"], cm["matrix"]))]
        show_table("confusion matrix (rows: true, columns: predicted)", ["true \\ pred", *short], rows, "table")


def _zero_shot(run: Path, data: str, prompt: str, split: str | None, device: str, as_json: bool, others: list) -> None:
    from mmcli.errors import UsageError
    from mmcli.evaluation.zero_shot import zero_shot_scores
    from mmcli.reporting.console import log
    from mmcli.reporting.tables import show_table

    if any(o is not None and o is not False and o != [] for o in others):
        raise UsageError("--zero-shot goes alone (with --split, --prompt, --device, --json)")
    scores = zero_shot_scores(run, data, prompt, None, split, device)
    log(f"wrote {run / scores.pop('saved_as')}")
    if as_json or not sys.stdout.isatty():
        sys.stdout.write(json.dumps(scores) + "\n")
        return
    show_table(f"zero-shot classification ({scores['n_examples']} examples, {scores['n_classes']} classes)",
               ["metric", "value"], [("accuracy", f"{scores['accuracy']:.4f}"),
                                     ("chance_accuracy", f"{scores['chance_accuracy']:.4f}")], "table")


def _robustness(run: Path, data, split: str | None, cache_dir, device: str, seed: int, as_json: bool) -> None:
    from mmcli.evaluation.robustness import sweep
    from mmcli.reporting.console import log, task_bar
    from mmcli.reporting.tables import show_table

    with task_bar("robustness sweep") as update:
        result = sweep(run, data, split, cache_dir, device, seed, on_step=update)
    for warning in result.get("warnings", []):
        log(f"warning: {warning}")
    log(f"wrote {run / 'robustness.json'} and {', '.join(result['plots'])}")
    if as_json or not sys.stdout.isatty():
        sys.stdout.write(json.dumps(result) + "\n")
        return
    rows = [(m, kind, f"{c[0]:.3f}", f"{c[5]:.3f}", f"{c[-1]:.3f}", f"{result['relative_robustness'][m][kind]:.3f}",
             f"{result['effective_robustness'][m][kind]:.3f}") for m, kinds in result["curves"].items() for kind, c in kinds.items()]
    rows += [(m, "missing", f"{result['clean']:.3f}", "", f"{v:.3f}", "", "") for m, v in result["dropped"].items()]
    show_table(f"robustness ({result['metric']}, {result['split']} split)",
               ["modality", "corruption", "level 0", "level 0.5", "level 1", "relative", "effective"], rows, "table")
