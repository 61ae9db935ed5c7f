"""Cross-fitted weights for `multimodal:ensemble` where the validation split is too small.

The ensemble weighs its members on the validation split (`ensemble.choose_weights`). With
fewer than FEW_VALIDATION sources there, the weights it would choose are noise: on
COCO-mini's 6 validation photos they did worse on the test photos than equal weights. But
equal weights are no answer either: there an image model trained from scratch on 74
photos, below the majority class on the test photos, pulled the plain average 4.9 points
below the caption model (p 0.005 over 5 seeds).

So where validation is small, `compare` cross-fits (Chernozhukov et al., 2018; the
"stacking" of Wolpert, 1992): the training split's sources are dealt into `--ensemble-folds`
folds (FOLDS, 5), stratified by label, and each member is trained again as many times, each time without one
fold, which it then predicts. Every training source that can be held out (all but a
label's only source) is then predicted once by a model that did not train on it, and the
weights are chosen on those out-of-fold predictions, as on a validation split almost as
large as the training split. Only where those sources number at least 2 per fold and more
than the validation split's: else the validation split (or equal weights) stays. The
tokenizers and the target's statistics stay those of the whole training split, so every
fold's outputs are on the member's scale; a fold's held-out texts were counted in its
vocabulary, but never trained on. On COCO-mini's photos + captions
(74 training photos, 5 seeds) the caption model scored 46.7 % out of fold and the image
model 27.7 %, the chosen image weights were 0.25-0.50, and the ensemble rose from 46.2 to
49.5 % (the caption model: 51.1 %; -1.6, p 0.42; docs/results.md). The members' own
runs, which the ensemble averages, are unchanged; the fold runs only choose the weights.

A fold run is a cell of the plan like any other (resumable, run by `--jobs` and
`--job K`), with `FOLD` = [k, folds] in its cell and result: its test split is fold k of
the training split, its validation split the comparison's, and the comparison's test rows
it never sees. A source whose label has fewer than 2 training sources is never held out,
so every held-out label was seen in training. A plan with fold cells whose out-of-fold
outputs are not all there yet (`--collect` before every `--job`) gives equal weights and
says so.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mmcli.compare.runner import Plan
    from mmcli.pipeline import RunData

LOG = logging.getLogger("mmcli")

FOLDS = 5  # --ensemble-folds' default
FOLD = "fold"  # in a fold run's cell and result: [k, FOLDS]


def is_fold(cell: dict[str, Any]) -> bool:
    return FOLD in cell


def label(cell: dict[str, Any]) -> str:
    """How a cell (or a run's result) is named in progress lines: 'unimodal:image seed 1 fold 2/5'."""
    fold = cell.get(FOLD)
    return f"{cell['variant']} seed {cell['seed']}" + (f" fold {fold[0] + 1}/{fold[1]}" if fold else "")


def count(folds: int | None) -> int:
    """--ensemble-folds as given (None: FOLDS), checked: 0 (no folds) or 2 or more."""
    from mmcli.errors import UsageError

    folds = FOLDS if folds is None else folds
    if folds == 1 or folds < 0:
        raise UsageError(f"--ensemble-folds {folds}: give 0 (equal weights where validation is small) or 2 or more")
    return folds


def wanted(plan: Plan, data: RunData) -> bool:
    """Whether the plan's ensembles weigh on out-of-fold predictions: an ensemble of two or
    more members, a validation split of fewer than FEW_VALIDATION sources, a task that
    splits by rows (not verification's identities), and training sources that the folds
    can hold out (a label's second source and more) at least 2 per fold and more than the
    validation split holds: fewer would weigh on less than the validation split offers."""
    from mmcli.compare import ensemble
    from mmcli.data.splits import FEW_VALIDATION

    if plan.folds < 2 or not any(ensemble.is_ensemble(v) and len(v.modalities) > 1 for v in plan.variants):
        return False
    if (plan.val_sources or 0) >= FEW_VALIDATION or data.task.disjoint_labels:
        return False
    fold_of = folds(data, plan.folds, 0)  # how many are held out does not depend on the seed
    held = sum(fold_of[rows[0]] >= 0 for rows in _sources(data).values())
    return held >= max(2 * plan.folds, (plan.val_sources or 0) + 1)


def add_cells(plan: Plan, data: RunData) -> None:
    """Append a fold cell per fold for every cell an ensemble averages (already flagged by
    `ensemble.mark_cells`), when `wanted`."""
    from mmcli.compare.ensemble import FLAG

    if not wanted(plan, data):
        return
    members = [c for c in plan.cells if c.get(FLAG) and not is_fold(c)]
    n = plan.folds
    for cell in members:
        for k in range(n):
            plan.cells.append({**cell, "run": f"{cell['run']}-fold{k + 1}", FOLD: [k, n],
                               "fingerprint": f"{cell['fingerprint']}-x{k}of{n}"})


def announce(plan: Plan) -> None:
    """Say once, when the comparison is planned, that its fold runs are coming and why."""
    added = sum(is_fold(c) for c in plan.cells)
    if added:
        LOG.warning("the validation split holds %s sources, too few to weigh multimodal:ensemble's members on: their "
                    "weights are chosen on out-of-fold predictions of the training split instead, %d more runs (%d "
                    "folds of each member; --ensemble-folds 0: equal weights)", plan.val_sources or 0, added, plan.folds)


def tag(cell: dict[str, Any]) -> dict[str, Any]:
    """What a fold cell's result records of its fold (nothing for another cell)."""
    return {FOLD: cell[FOLD]} if is_fold(cell) else {}


def fold_run(config, data: RunData, cell: dict[str, Any]):
    """The config and data of a fold cell: the member's config with the encoders that the
    whole training split chose for it (a fold's texts might choose another), and `data`
    with the cell's fold held out."""
    from mmcli.encoders.from_data import text_encoder_defaults

    config = text_encoder_defaults(config, data, log=False)
    return config, fold_data(data, cell[FOLD], config.train.seed)


def base_fingerprint(fingerprint: str) -> str:
    """A cell's fingerprint without what warm start (-w) and folds (-x) add to it."""
    return fingerprint.split("-w")[0].split("-x")[0]


def _sources(data: RunData) -> dict[int, list[int]]:
    """The training split's sources: source -> its rows."""
    out: dict[int, list[int]] = {}
    for i, s in enumerate(data.splits):
        if s == "train":
            out.setdefault(data.groups[i] if data.groups is not None else -1 - i, []).append(i)
    return out


def folds(data: RunData, n_folds: int, seed: int) -> dict[int, int]:
    """Training row -> its fold: sources shuffled with `seed`, then dealt round-robin within
    each label (the task's stratification key; one stratum where it has none), so each fold
    holds every label about equally. Rows of a label with fewer than 2 sources get -1 (never
    held out)."""
    sources = _sources(data)
    task = data.task
    values = task.target_values(data.table)
    keys = task.split_keys(values) if values is not None else [""] * len(data.splits)
    order = sorted(sources)
    random.Random(seed).shuffle(order)
    strata: dict[str, list[int]] = {}
    for g in order:
        strata.setdefault(keys[sources[g][0]], []).append(g)
    fold_of, dealt = {}, 0
    for members in strata.values():
        for g in members:
            fold = -1 if len(members) < 2 else dealt % n_folds
            dealt += len(members) >= 2
            for i in sources[g]:
                fold_of[i] = fold
    return fold_of


def fold_data(data: RunData, fold: list[int], seed: int) -> RunData:
    """`data` with fold k of its training split as the test split; the comparison's test rows
    are left out, its validation rows kept."""
    k, n_folds = fold
    fold_of = folds(data, n_folds, seed)
    splits = ["test" if fold_of.get(i) == k else s if s in ("train", "val") else "" for i, s in enumerate(data.splits)]
    return dataclasses.replace(data, splits=splits)


def out_of_fold(plan: Plan, loaded_of, member: dict[str, Any]) -> dict[str, Any] | None:
    """The out-of-fold outputs of one member run (`member`: its cell), as the validation split
    of a run's saved outputs (`ensemble.load`'s form), from its fold cells' saved outputs;
    None where the plan has no fold cells for it or one of them has not finished.
    `loaded_of(cell)`: a finished cell's saved outputs, or None."""
    import torch

    cells = [c for c in plan.cells if is_fold(c) and c["variant"] == member["variant"]
             and c["seed_index"] == member["seed_index"]]
    if not cells:
        return None
    parts = [loaded_of(c) for c in sorted(cells, key=lambda c: c[FOLD][0])]
    if any(p is None for p in parts):
        return None
    return {"val_ids": [i for p in parts for i in p["test_ids"]],
            "val_outputs": torch.cat([p["test_outputs"] for p in parts]),
            "val_targets": torch.cat([p["test_targets"] for p in parts])}
