"""Warm start inside `compare`: each fused run starts from the unimodal runs of its seed.

The unimodal variants are trained anyway; each run of a fused variant (multimodal, or a
subset of two or more modalities) has its encoders and auxiliary heads initialised from
the unimodal runs of the same seed that use the same encoder (`model.init_from`,
mmcli.training.warmstart), then trains as before. Such a cell lists the cells it starts
from (`after`) and runs once they have finished; its fingerprint includes theirs, so what
makes a unimodal run train again (config, data, mmcli's version) makes the fused runs that
start from it train again. `--no-warm-start` trains every run from scratch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmcli.errors import UsageError

if TYPE_CHECKING:
    from mmcli.compare.runner import Plan
    from mmcli.config import Config

LOG = logging.getLogger("mmcli")

AFTER = "after"  # in a cell: modality -> the index of the unimodal cell it starts from


def encoder_identity(cfg: Config, modality: str, spec) -> str:
    """What must be equal for one run's encoder of `modality` to start another's: the
    encoder and its options, the feature size and the data settings its inputs are made with."""
    from mmcli.models import encoder_choice

    name, options = encoder_choice(cfg, spec)
    return json.dumps([name, options, cfg.model.feature_dim, cfg.model.hidden_dim, dataclasses.asdict(cfg.data)],
                      sort_keys=True, default=str)


def link(plan: Plan, configs: list[Config], specs: dict[str, Any]) -> None:
    """Give each fused cell its `after`: per modality, the unimodal cell of the same seed
    with the same encoder. `configs[k]` is cell k's config. A modality with no such cell
    starts from scratch (said in the log)."""
    unimodal: dict[tuple[str, int, str], int] = {}
    for k, cell in enumerate(plan.cells):
        v = plan.variant(cell["variant"])
        if v.family == "unimodal":
            m = v.modalities[0]
            unimodal.setdefault((m, cell["seed_index"], encoder_identity(configs[k], m, specs[m])), k)
    lonely: set[str] = set()
    for k, cell in enumerate(plan.cells):
        v = plan.variant(cell["variant"])
        if len(v.modalities) < 2 or v.fusion is None or v.crossmodal:
            continue
        after = {}
        for m in v.modalities:
            source = unimodal.get((m, cell["seed_index"], encoder_identity(configs[k], m, specs[m])))
            if source is None:
                lonely.add(f"{v.name} ({m})")
            else:
                after[m] = source
        if after:
            cell[AFTER] = after
            cell["fingerprint"] += suffix([plan.cells[j]["fingerprint"] for j in after.values()])
    if lonely:
        LOG.info("warm start: no unimodal run with the same encoder for %s; trained from scratch", ", ".join(sorted(lonely)))


def suffix(fingerprints: list[str]) -> str:
    """What a warm-started run adds to its fingerprint: the runs it starts from, so that what
    makes one of them train again makes it train again."""
    return "-w" + hashlib.sha256("".join(fingerprints).encode()).hexdigest()[:8]


def sources(plan: Plan, k: int) -> dict[str, int]:
    return {m: int(j) for m, j in (plan.cells[k].get(AFTER) or {}).items()}


def init_from(plan: Plan, k: int, out: Path, finished) -> dict[str, str]:
    """model.init_from for cell k: the run folders of the cells it starts from, which must
    have finished (`finished(j)` is the saved result of cell j, or None)."""
    out_from = {}
    for m, j in sources(plan, k).items():
        if finished(j) is None:
            cell, dep = plan.cells[k], plan.cells[j]
            raise UsageError(f"job {k} ({cell['variant']} seed {cell['seed']}) starts from job {j} ({dep['variant']} seed "
                             f"{dep['seed']}), which has not finished: run job {j} first (or plan with --no-warm-start)")
        out_from[m] = str((out / plan.cells[j]["run"]).resolve())
    return out_from


def ready_order(plan: Plan, todo: list[int]) -> list[int]:
    """`todo` with every cell after the cells it starts from (stable otherwise)."""
    waiting = {k for k in todo if sources(plan, k)}
    return [k for k in todo if k not in waiting] + [k for k in todo if k in waiting]
