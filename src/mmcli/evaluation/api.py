"""`evaluate_run`: score a run folder's best weights on a split of its data, or other data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmcli import runs
from mmcli.errors import DataError, UsageError
from mmcli.pipeline import data_for_run, load_run
from mmcli.training.loop import predict_outputs
from mmcli.training.setup import pick_device


def weights_per_class(weights, labels, names: list[str], modalities: list[str]) -> dict[str, dict[str, float]]:
    """Mean per-modality fusion weight over the examples of each true class."""
    out = {}
    for i, name in enumerate(names):
        rows = weights[labels == i]
        if len(rows):
            out[name] = {m: round(float(v), 6) for m, v in zip(modalities, rows.mean(dim=0))}
    return out


def eval_file_name(data: str | None, scope: str, weights: str, tag: str = "") -> str:
    """eval-<split>.json for the run's own data, best weights and clean inputs; other
    evaluations get their own name (`scope`: their split, or "all"), so they never
    overwrite the run's test score."""
    parts = [f"eval-{scope}" if data is None else f"eval-{Path(data).stem}-{scope}"]
    parts += [weights] if weights != "best" else []
    parts += [tag] if tag else []
    return "-".join(parts) + ".json"


def _perturbation(run, drops: list[str], corruptions: list[str], seed: int):
    from mmcli.evaluation import corrupt

    kinds = {n: s.kind for n, s in run.specs.items()}
    for name in drops:
        if name not in kinds:
            raise UsageError(f"--drop {name}: the run has no modality '{name}' (it has: {', '.join(kinds)})")
    if drops and set(drops) >= set(kinds):
        raise UsageError(f"--drop {', '.join(drops)}: nothing would be left; this run reads only {', '.join(kinds)}")
    parsed = [corrupt.parse(c, kinds) for c in corruptions]
    if not drops and not parsed:
        return None, ""
    tag = "-".join([f"drop-{d}" for d in drops] + [f"{c.modality}-{c.kind}-{c.level:g}" for c in parsed])
    return (lambda table: corrupt.perturb(table, drops, parsed, seed)), tag


def evaluate_run(run_dir: Path, data: str | None = None, split: str | None = None, cache_dir: str | None = None,
                 weights: str = "best", progress=None, save: bool = True, device: str = "auto",
                 drops: list[str] | None = None, corruptions: list[str] | None = None, seed: int = 0,
                 outputs: dict[str, Any] | None = None, trials: Path | None = None) -> dict[str, Any]:
    """Scores of the run on `split` (default test; every row of other data without a split
    column), less any row the run was trained on; `drops` evaluate with those modalities
    absent (through the mask), `corruptions` (MODALITY:KIND@LEVEL) with degraded inputs.
    `outputs`, a dict, receives the raw outputs (`outputs`) and the rows' ids (`ids`);
    `trials` (verification runs): score the pairs of example ids a trials file lists."""
    run = load_run(run_dir, weights)
    if trials is not None and not run.task.disjoint_labels:
        raise UsageError(f"--trials scores verification runs' pairs of examples; this run is {run.task.name}")
    transform, tag = _perturbation(run, drops or [], corruptions or [], seed)
    chosen = data_for_run(run, data, split, cache_dir, progress, transform=transform)
    encoded = chosen.encoded
    if encoded.labels is None:
        raise DataError(f"{data}: no label column '{run.config.data.label}' to score against")
    task = run.task
    target = pick_device(device)
    run.model.to(target)
    logits, fusion_weights = predict_outputs(run.model, encoded, run.config, target)
    if outputs is not None:
        outputs.update(outputs=logits, ids=list(encoded.ids), targets=encoded.labels, rows=chosen, run=run)
    if trials is not None:
        scores = task.evaluate_trials(logits, list(encoded.ids), run.labels, Path(trials))
        tag = "-".join(t for t in (tag, f"trials-{Path(trials).stem}") if t)
    else:
        scores = task.score(logits, encoded, run.labels)
    if fusion_weights is not None and task.name == "classification":  # per class: needs one class per example
        scores["modality_weights_per_class"] = weights_per_class(fusion_weights, encoded.labels, run.labels, run.model.modalities)
    scope = chosen.split
    scores.update({
        "split": scope,
        "data": "training data" if data is None else str(data),
        "weights": weights,
        "epoch": int(run.weights_meta.get("epoch", 0)),
        "modalities": list(run.specs),
        "dropped": list(drops or []),
        "corrupted": list(corruptions or []),
        "left_out_seen_rows": chosen.left_out,
        "warnings": chosen.warnings + task.final_warnings(scores),
    })
    if save:
        name = eval_file_name(data, scope, weights, tag)
        runs.write_json(run_dir / name, scores)
        scores["saved_as"] = name
    return scores


SHOWCASE = 6  # sources (captioning) or queries per direction (retrieval) that evaluate --plots draws


def write_plots(run_dir: Path, scores: dict[str, Any], outputs: dict[str, Any] | None = None) -> list[Path]:
    """`evaluate --plots`: curves.png (losses and validation metrics per epoch, from
    metrics.jsonl) and, for classification, confusion-<name>.png of the scores just made;
    for verification, roc-det-<name>.png (the ROC and the DET curve of the trials); for
    retrieval and captioning, grids of what the model did on a few sources (`outputs`:
    what evaluate_run filled in; mmcli.reporting.showcase)."""
    from mmcli.reporting import plots, showcase

    written = []
    records = runs.read_metrics(run_dir)
    if records:
        best = runs.read_json(run_dir / "provenance.json", dict).get("best_epoch") if (run_dir / "provenance.json").is_file() else None
        best = best if type(best) is int else None
        written.append(plots.learning_curves(records, run_dir / "curves.png", best))
    cm = scores.get("confusion_matrix")
    if cm:
        name = Path(scores.get("saved_as", f"eval-{scores['split']}.json")).stem.removeprefix("eval-")
        written.append(plots.confusion_matrix(cm["labels"], cm["matrix"], run_dir / f"confusion-{name}.png",
                                              f"confusion matrix, {scores['split']} split"))
    curve = scores.get("roc_curve")
    if curve:
        name = Path(scores.get("saved_as", f"eval-{scores['split']}.json")).stem.removeprefix("eval-")
        written.append(plots.roc_det(curve["far"], curve["tar"], run_dir / f"roc-det-{name}.png",
                                     f"{scores['split']} split, {scores.get('n_trials', '?')} trials"))
    if outputs and "rows" in outputs:
        run, chosen = outputs["run"], outputs["rows"]
        entries = run.task.showcase(outputs["outputs"], chosen.encoded, run.labels, SHOWCASE)
        name = Path(scores.get("saved_as", f"eval-{scores['split']}.json")).stem.removeprefix("eval-")
        written += showcase.draw(entries, chosen.table, run_dir, name)
    return written


def write_errors(run_dir: Path, outputs: dict[str, Any], path: Path, top_k: int = 5) -> int:
    """`evaluate --errors FILE`: the examples the run answered wrongly (mmcli.heads.Task.errors),
    worst first, with their ids, as JSON lines (CSV when FILE ends in .csv); how many.
    A file that exists is replaced only where mmcli can prove it wrote it (mmcli.ledger)."""
    import csv
    import io
    import json

    run = load_run(run_dir)
    wrong = run.task.errors(outputs["outputs"], outputs["targets"], run.labels, top_k)
    if wrong is None:
        raise UsageError(f"--errors lists wrong answers; a {run.task.name} run has none to list")
    check_errors_file(path)
    ids = outputs["ids"]
    rows = [{"id": ids[e.pop("row")], **e} for e in wrong]
    if path.suffix.lower() == ".csv":
        buffer = io.StringIO()
        flat = [{k: json.dumps(v, ensure_ascii=False) if isinstance(v, (dict, list)) else v for k, v in r.items()} for r in rows]
        header = list(dict.fromkeys(k for r in flat for k in r)) or ["id"]
        writer = csv.DictWriter(buffer, fieldnames=header, lineterminator="\n")
        writer.writeheader()
        writer.writerows(flat)
        text = buffer.getvalue()
    else:
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    runs.write_atomic(path, text)
    return len(rows)


def check_errors_file(path: Path) -> None:
    """--errors FILE, before any work: an existing file outside mmcli's folders is the user's."""
    from mmcli import ledger

    if path.exists() and ledger.header(path.parent) is None:
        raise UsageError(f"--errors {path}: the file exists; mmcli does not replace a file it cannot prove it wrote: "
                         f"remove it or name another")
