"""`multimodal:ensemble`: the comparison's unimodal runs averaged, a late fusion that trains nothing.

UME, the uni-modal ensemble of Du et al. (ICML 2023, "On Uni-Modal Feature Learning in
Supervised Multi-Modal Learning"): each modality's model is trained alone and their
predictions are averaged (classification: the softmax probabilities; multilabel: each
label's sigmoid; regression: the predicted values; `Task.average`). Du et al. show that
joint training can leave the weaker modality's encoder under-trained, and that this
ensemble is a baseline a learned fusion must beat. Inside `compare` it costs nothing: the
unimodal variants are trained anyway.

Every unimodal run of a comparison saves its raw outputs on the validation and test
splits (OUTPUTS, beside compare-result.json). The ensemble of seed i is computed from the
unimodal runs of seed i when the results are collected: it is no job of its own, so
`--jobs`, `--print-jobs` and `--collect` give the same result, reproducible from the saved
files. "Without m" is the ensemble of the other modalities' runs. A multi-label ensemble
chooses its thresholds on the validation split, as every multi-label run does.
"""

from __future__ import annotations

import io
import logging
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmcli import runs
from mmcli.compare import crossfit
from mmcli.compare.variants import ENSEMBLE, Variant
from mmcli.compare.variants import ensemble_members as members  # modality -> the unimodal variant it averages
from mmcli.errors import UsageError

if TYPE_CHECKING:
    from mmcli.compare.runner import Plan

LOG = logging.getLogger("mmcli")

NAME = f"multimodal:{ENSEMBLE}"
OUTPUTS = "compare-outputs.npz"
ROWS = "resample"  # in an ensemble's result (never written): its test rows, for mmcli.compare.resample
WEIGHED_ON = "weighed_on"  # in an ensemble's result: "validation", "out-of-fold", or None (equal weights)
FLAG = "outputs"  # in a plan's cell: an ensemble reads this run's outputs; in its result: the file


def is_ensemble(v: Variant) -> bool:
    return v.family == "multimodal" and v.fusion == ENSEMBLE


def mark_cells(plan: Plan) -> None:
    """Flag the cells an ensemble reads: their result counts only with its outputs saved, so
    a run finished by an mmcli older than the ensemble (no outputs) runs again."""
    needed = {name for v in plan.variants if is_ensemble(v) for name in members(v).values()}
    for cell in plan.cells:
        if cell["variant"] in needed:
            cell[FLAG] = True


def has_outputs(folder: Path, cell: dict[str, Any], saved: dict[str, Any]) -> bool:
    """False for a cell an ensemble reads whose run saved no outputs (an older mmcli)."""
    return not cell.get(FLAG) or (saved.get(FLAG) == OUTPUTS and (folder / OUTPUTS).is_file())


def save_outputs(folder: Path, outcome, cfg, splits: tuple[str, ...] = ("val", "test"),
                 cache_dir: str | None = None) -> str:
    """The run's raw outputs (logits; regression: standardised values), row ids and targets
    on `splits`, and the test rows' sources, as one .npz written atomically into its folder."""
    import numpy as np
    import torch

    from mmcli.training.features import cached_part
    from mmcli.training.loop import predict_logits
    from mmcli.training.setup import pick_device

    device = pick_device(cfg.train.device)
    arrays = {}
    for split in splits:
        part = outcome.data.part(split)
        outputs = (predict_logits(outcome.model, cached_part(outcome.model, part, cfg, device, cache_dir), cfg, device)
                   if len(part) else torch.empty(0))
        arrays.update({f"{split}_ids": np.array(part.ids, dtype=str), f"{split}_outputs": outputs.numpy(),
                       f"{split}_targets": part.labels.numpy()})
    source = outcome.data.source_of("test")  # the test rows' sources: the resampling draws them (mmcli.compare.resample)
    arrays["test_groups"] = np.array([source[i] for i in arrays["test_ids"].tolist()], dtype=np.int64)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    runs.write_atomic(folder / OUTPUTS, buffer.getvalue())
    return OUTPUTS


def degraded_file(spec: str) -> str:
    """The file of a run's test outputs under one `--corrupt` spec (mmcli.compare.degraded)."""
    import hashlib

    return f"compare-outputs-{hashlib.sha256(spec.encode()).hexdigest()[:12]}.npz"


def save_degraded(folder: Path, spec: str, ids: list[str], outputs: Any) -> None:
    import numpy as np

    buffer = io.BytesIO()
    np.savez(buffer, test_ids=np.array(ids, dtype=str), test_outputs=outputs.numpy())
    runs.write_atomic(folder / degraded_file(spec), buffer.getvalue())


def _degraded(plan: Plan, loaded: dict[str, dict[str, Any]], runs_of: dict[str, Path], names: list[str],
              state: dict[str, Any], weights: dict[str, float] | None) -> dict[str, dict[str, float]]:
    """The ensemble's scores under each `--corrupt` spec: each member that reads the
    degraded modality brings its degraded test outputs (saved when it was scored so), the
    others their clean ones; a spec some member lacks is left out."""
    import numpy as np
    import torch

    from mmcli.compare.runner import _scalars

    out = {}
    for spec in plan.corruptions:
        modality, swapped = spec.split(":", 1)[0], dict(loaded)
        if modality in loaded:
            try:
                with np.load(runs_of[modality] / degraded_file(spec), allow_pickle=False) as z:
                    if z["test_ids"].tolist() != loaded[modality]["test_ids"]:
                        continue
                    swapped[modality] = {**loaded[modality], "test_outputs": torch.from_numpy(z["test_outputs"])}
            except (OSError, ValueError, KeyError):
                continue
        out[spec] = _scalars(evaluate(plan, swapped, list(loaded), names, state, weights))
    return out


def results(out: Path, plan: Plan, saved: dict[int, dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(cell, result) for every seed of every ensemble whose unimodal runs have all finished,
    in the form of a run's cell and result."""
    pairs = []
    for v in plan.variants:
        if not is_ensemble(v):
            continue
        for i in range(plan.seeds):
            ks: dict[str, Any] = {m: next((k for k, c in enumerate(plan.cells) if c["variant"] == name
                                           and c["seed_index"] == i and not crossfit.is_fold(c)), None)
                                  for m, name in members(v).items()}
            if not all(k in saved for k in ks.values()):
                continue  # the runs that are missing are named by collect
            loaded = {m: load(out / plan.cells[k]["run"]) for m, k in ks.items()}
            if any(x is None for x in loaded.values()):
                continue
            first = plan.cells[ks[v.modalities[0]]]
            cell = {"variant": v.name, "seed_index": i, "seed": first["seed"], "run": None}
            result = score(plan, typing.cast(dict, loaded), out / first["run"], _out_of_fold(out, plan, saved, ks))
            if plan.corruptions:
                result["corrupted"] = _degraded(plan, typing.cast(dict, loaded),
                                                {m: out / plan.cells[k]["run"] for m, k in ks.items()},
                                                *task_files(out / first["run"]), result["weights"])
            pairs.append((cell, result))
    return pairs


def _out_of_fold(out: Path, plan: Plan, saved: dict[int, dict[str, Any]],
                 ks: dict[str, int]) -> dict[str, dict[str, Any]] | None:
    """Each member's out-of-fold outputs (`crossfit.out_of_fold`), or None unless every
    member has them (said where the plan has fold runs that have not all finished)."""
    if not any(crossfit.is_fold(c) for c in plan.cells):
        return None
    index = {id(c): k for k, c in enumerate(plan.cells)}

    def loaded_of(cell: dict[str, Any]) -> dict[str, Any] | None:
        return load(out / cell["run"]) if index[id(cell)] in saved else None

    fit = {m: crossfit.out_of_fold(plan, loaded_of, plan.cells[k]) for m, k in ks.items()}
    if any(f is None for f in fit.values()):
        LOG.warning("%s seed %d: the fold runs that choose the ensemble's weights have not all finished; equal weights "
                    "until they have (run the missing jobs, then --collect)", NAME, plan.cells[next(iter(ks.values()))]["seed"])
        return None
    if len({tuple(typing.cast(dict, f)["val_ids"]) for f in fit.values()}) > 1:
        raise UsageError(f"the fold runs in {out} predicted different rows (a folder of another comparison?); rerun the "
                         "comparison with --overwrite")
    return typing.cast(dict, fit)


def load(folder: Path) -> dict[str, Any] | None:
    import zipfile

    import numpy as np
    import torch

    try:
        with np.load(folder / OUTPUTS, allow_pickle=False) as z:
            return {k: (z[k].tolist() if k.endswith("_ids") else torch.from_numpy(z[k])) for k in z.files}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        LOG.warning("%s: cannot read (%s); the ensemble leaves this seed out: delete %s and rerun the comparison",
                    folder / OUTPUTS, exc, folder)
        return None


def task_files(run: Path) -> tuple[list[str], dict[str, Any]]:
    """A member run's class names and the task's fitted state, which the average is scored with."""
    return runs.read_json(run / "labels.json", list), {k: v for k, v in runs.read_json(run / "target.json", dict).items()
                                                       if k != "task"}


def score(plan: Plan, loaded: dict[str, dict[str, Any]], first_run: Path,
          fit: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """The ensemble's test scores, per-class scores and its scores without each modality.
    `fit`: per member, its out-of-fold outputs on the training split, which the weights are
    chosen on instead of the validation split (`mmcli.compare.crossfit`)."""
    from mmcli.compare.runner import _scalars

    mods = list(loaded)
    for m in mods[1:]:
        for split in ("val", "test"):
            if loaded[m][f"{split}_ids"] != loaded[mods[0]][f"{split}_ids"]:
                raise UsageError(f"the unimodal runs in {first_run.parent} scored different {split} rows "
                                 "(a folder of another comparison?); rerun the comparison with --overwrite")
    names, state = task_files(first_run)
    weights = choose_weights(plan, loaded, names, state, fit)
    task, outputs = _combined(plan, loaded, mods, names, state, _shares(weights, mods), "test")
    full = task.evaluate(outputs, loaded[mods[0]]["test_targets"], names)
    without = {}  # the ensemble of the other modalities' runs, weighed again among themselves
    for m in mods:
        others = {o: loaded[o] for o in mods if o != m}
        weighed = choose_weights(plan, others, names, state, fit and {o: fit[o] for o in others})
        without[m] = _scalars(evaluate(plan, others, list(others), names, state, weighed))
    return {"family": "multimodal", "scores": _scalars(full), "per_class": full.get("per_class"),
            "without": without if len(mods) > 1 else {}, "best_epoch": None, "seconds": None, "weights": weights,
            WEIGHED_ON: None if weights is None else "out-of-fold" if fit else "validation",
            ROWS: _test_rows(loaded[mods[0]], task, outputs)}


def _test_rows(first: dict[str, Any], task: Any, outputs: Any) -> dict[str, Any]:
    """The average's test outputs with the rows' targets, ids and sources, and the task's
    state with the validation choices made for the average, for
    `mmcli.compare.resample` (kept in memory: the ensemble has no run folder)."""
    rows = {"test_outputs": outputs, "test_targets": first["test_targets"], "test_ids": first["test_ids"],
            "state": task.state}
    return {**rows, "test_groups": first["test_groups"]} if "test_groups" in first else rows


def choose_weights(plan: Plan, loaded: dict[str, dict[str, Any]], names: list[str],
                   state: dict[str, Any], fit: dict[str, dict[str, Any]] | None = None) -> dict[str, float] | None:
    """Each member's weight in the average, chosen on the validation split: the weights on a
    grid over the simplex (steps of 1/20 for two members, 1/10 for more) whose average,
    with the task's validation choices made for it as `evaluate` makes them, scores best
    on the comparison's metric, the most even among equals. On mdi-icons' 399 validation
    icons they took the ensemble from 0.7 points below the name model to 0.4 above it.
    `fit` (the members' out-of-fold outputs, in the form of `loaded`'s validation split):
    chosen on those instead. Without it, None (equal weights) where the validation split
    holds fewer than FEW_VALIDATION sources: on COCO-mini's 6 validation photos the chosen
    weights did worse on the test photos than equal ones (46.1 -> 34.5 %)."""
    import itertools
    import math

    from mmcli.data.splits import FEW_VALIDATION

    mods = list(loaded)
    if len(mods) < 2 or (not fit and (plan.val_sources or 0) < FEW_VALIDATION):
        return None
    loaded = {m: {**loaded[m], **fit[m]} for m in mods} if fit else loaded
    steps = 20 if len(mods) == 2 else 10
    best: tuple[float, float, tuple[float, ...]] | None = None
    for head in itertools.product(range(steps + 1), repeat=len(mods) - 1):
        if sum(head) > steps:
            continue
        w = tuple(c / steps for c in (*head, steps - sum(head)))
        value = _averaged(plan, loaded, mods, names, state, list(w), "val").get(plan.metric)
        if value is None or not math.isfinite(value):
            return None
        key = (value if plan.higher_is_better else -value, -sum(abs(x - 1 / len(mods)) for x in w), w)
        best = key if best is None or key[:2] > best[:2] else best
    assert best is not None
    return dict(zip(mods, best[2]))


def evaluate(plan: Plan, loaded: dict[str, dict[str, Any]], mods: list[str], names: list[str],
             state: dict[str, Any], weights: dict[str, float] | None = None) -> dict[str, Any]:
    """Average the runs of `mods` with their `weights` (renormalised over `mods`; None or all
    zero: equal) and score the test split."""
    return _averaged(plan, loaded, mods, names, state, _shares(weights, mods), "test")


def _shares(weights: dict[str, float] | None, mods: list[str]) -> list[float] | None:
    total = sum((weights or {}).get(m, 0.0) for m in mods)
    return [weights[m] / total for m in mods] if weights and total > 0 else None


def _averaged(plan: Plan, loaded: dict[str, dict[str, Any]], mods: list[str], names: list[str],
              state: dict[str, Any], shares: list[float] | None, split: str) -> dict[str, Any]:
    """The average of `mods` with `shares` scored on `split`."""
    task, outputs = _combined(plan, loaded, mods, names, state, shares, split)
    return task.evaluate(outputs, loaded[mods[0]][f"{split}_targets"], names)


def _combined(plan: Plan, loaded: dict[str, dict[str, Any]], mods: list[str], names: list[str],
              state: dict[str, Any], shares: list[float] | None, split: str) -> tuple[Any, Any]:
    """The task and the average of `mods` with `shares` on `split`; the task's validation
    choices (multi-label and verification thresholds) are made again for the average first."""
    from mmcli.heads import make_task

    config = plan.base_config()
    task: Any = make_task(config, state)
    val = loaded[mods[0]]
    if len(val["val_ids"]):
        state = {**state, **task.after_fit(task.average([loaded[m]["val_outputs"] for m in mods], shares),
                                           val["val_targets"], names)}
        task = make_task(config, state)
    return task, task.average([loaded[m][f"{split}_outputs"] for m in mods], shares)
