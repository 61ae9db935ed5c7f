"""`compare --tune`: the same small search on the validation split for every variant.

A comparison is only as fair as its least tuned variant: a fused model run at a learning
rate that suits the image model but not the text model loses for a reason that has nothing
to do with fusion. With `--tune`, each trained variant gets the same grid of settings
(by default the learning rate x {1/3, 1, 3} and the weight decay x {1, 10} of the
configuration: 6 trials; `--tune-space KEY=V1,V2,...` replaces it, `--tune-trials N`
draws N of its points with the base seed, the same points for every variant). Each trial
trains the variant with the comparison's first seed on the training split and is scored
on the validation split, never on the test split (trials are trained with
`evaluate_test=False` and write no test scores); the setting with the best validation
score (equal scores: the lower validation loss) is the variant's for every seed. A fused
variant's trials start from the unimodal variants' chosen trials (warm start), as its
runs start from their runs.

Trials live in `tune/<variant>/trial-<i>/` of the comparison folder with a
`tune-result.json` carrying their fingerprint, so a comparison resumed or extended with
more seeds never repeats a finished trial. The chosen values are in `compare.json`,
`summary.json` (`tuned`) and `report.md`.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from mmcli import runs
from mmcli.config import apply_set, from_dict
from mmcli.errors import ConfigError, UsageError

if TYPE_CHECKING:
    from mmcli.compare.pool import DataPool
    from mmcli.compare.runner import Plan
    from mmcli.config import Config

LOG = logging.getLogger("mmcli")

RESULT = "tune-result.json"
FOLDER = "tune"
DEFAULT_FACTORS = {"train.lr": (1 / 3, 1.0, 3.0), "train.weight_decay": (1.0, 10.0)}
# what a trial may not change: the data every variant shares, what makes a variant, the seed
FIXED = ("data", "eval", "train.seed", "train.device", "model.modalities", "model.fusion", "model.crossmodal",
         "model.task", "model.init_from", "model.encoders", "model.encoder_options")
SECTIONS = ("train", "model")  # a whole section is no setting: its keys are


def parse_space(items: list[str]) -> dict[str, list[Any]]:
    """`--tune-space KEY=V1,V2,...` (each value read as YAML, like --set) -> {key: values}."""
    from mmcli.yamlio import read_yaml

    space: dict[str, list[Any]] = {}
    for item in items:
        if "=" not in item:
            raise UsageError(f"--tune-space {item}: expected KEY=V1,V2,... (for example train.lr=0.001,0.003,0.01)")
        key, raw = (s.strip() for s in item.split("=", 1))
        if key in space:
            raise UsageError(f"--tune-space {key}: given twice; list all its values once")
        try:
            values = read_yaml(raw if raw.startswith("[") else f"[{raw}]")
        except Exception:  # noqa: BLE001 - the YAML library's own error types vary
            raise UsageError(f"--tune-space {key}: cannot read the values '{raw}'") from None
        if not isinstance(values, list) or not values:
            raise UsageError(f"--tune-space {key}: give one or more values, comma-separated")
        space[key] = values
    return space


def default_space(base: Config) -> dict[str, list[Any]]:
    """The learning rate x {1/3, 1, 3} and the weight decay x {1, 10} of `base`: the factor
    1 is the configured value itself (a variant that keeps it trains the runs it would
    train without --tune), the others rounded to 3 digits; a point outside the key's
    allowed range, or equal to another, is left out (a weight decay of 0 has one)."""
    space = {}
    for key, factors in DEFAULT_FACTORS.items():
        section, name = key.split(".")
        value = getattr(getattr(base, section), name)
        points = []
        for f in factors:
            point = value if f == 1.0 else float(f"{value * f:.3g}")
            try:
                with_values(base, {key: point})
            except ConfigError:
                continue
            points.append(point)
        space[key] = list(dict.fromkeys(points))
    return space


def check_space(base: Config, space: dict[str, list[Any]]) -> None:
    """Every key a setting a trial may change, every value one the config accepts: exit 2 naming it."""
    for key, values in space.items():
        if key in SECTIONS or any(key == f or key.startswith(f + ".") for f in FIXED):
            raise UsageError(f"--tune-space {key}: not searchable (the data, the split, the seed and what makes a variant "
                             "are the same for every trial); search train.* or model.* settings such as train.lr, "
                             "train.weight_decay, model.dropout; an encoder's options are compared with "
                             "'@encoder' variants")
        for value in values:
            try:
                with_values(base, {key: value})
            except ConfigError as exc:
                raise UsageError(f"--tune-space {key}={value}: {exc}") from None


def grid(space: dict[str, list[Any]], trials: int | None, seed: int) -> list[dict[str, Any]]:
    """Every point of the space, or `trials` of them drawn with `seed` (in grid order)."""
    keys = list(space)
    points = [dict(zip(keys, combo)) for combo in itertools.product(*(space[k] for k in keys))]
    if trials is not None and trials < len(points):
        chosen = sorted(random.Random(seed).sample(range(len(points)), trials))
        points = [points[i] for i in chosen]
    return points


def with_values(cfg: Config, values: dict[str, Any]) -> Config:
    """`cfg` with `values` ({'train.lr': 0.001, ...}) set, checked as --set checks them."""
    if not values:
        return cfg
    raw = cfg.to_dict()
    for key, value in values.items():
        apply_set(raw, key.split("."), value)
    return from_dict(raw)


def describe(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items()) or "-"


def tune_plan(plan: Plan, pool: DataPool, out: Path, progress=None, say: Callable[[str], Any] | None = None) -> None:
    """--tune: run the search into `out`, then list the plan's cells with its choices."""
    if plan.tune is None:
        return
    from mmcli.compare.runner import list_cells

    search(plan, pool, out, progress, say)
    list_cells(plan, pool, pool.get(plan.base_config()).specs)


def search(plan: Plan, pool: DataPool, out: Path, progress=None, say: Callable[[str], Any] | None = None) -> None:
    """Run (or reuse) every trial of every trained variant, the unimodal ones first; set
    plan.tuned[variant]."""
    from mmcli.compare import ensemble
    from mmcli.compare.variants import run_dir_for, variant_config
    from mmcli.compare.warm import encoder_identity

    tune: dict[str, Any] = plan.tune or {}  # a plan made with --tune
    points = grid(tune["space"], tune.get("trials"), plan.base_config().train.seed)
    base = plan.base_config()
    specs = pool.get(base).specs
    order = sorted((v for v in plan.variants if not ensemble.is_ensemble(v)), key=lambda v: v.family != "unimodal")
    chosen_uni: dict[tuple[str, str], tuple[Path, str]] = {}  # (modality, encoder identity) -> chosen trial, its fingerprint
    lowered = [run_dir_for(x, 0).lower() for x in plan.variants]  # as list_cells names the runs' folders
    for v in order:
        clash = lowered.count(run_dir_for(v, 0).lower()) > 1
        folder = out / FOLDER / Path(run_dir_for(v, 0, clash)).name.rsplit("-seed", 1)[0]
        trials = []
        for i, values in enumerate(points):
            cfg = variant_config(base, v, 0, plan.kinds, values)  # as the variant's runs will be made
            sources = {}
            if plan.warm_start and len(v.modalities) > 1 and v.fusion and not v.crossmodal:
                sources = {m: chosen_uni[key] for m in v.modalities
                           if (key := (m, encoder_identity(cfg, m, specs[m]))) in chosen_uni}
            saved = _trial(plan, pool, cfg, sources, folder / f"trial-{i}", {"variant": v.name, "values": values},
                           progress, say, f"tune {v.name} trial {i + 1}/{len(points)}: {describe(values)}")
            trials.append({**saved, "values": values, "folder": folder / f"trial-{i}", "trial": i,
                           "loss": _val_loss(folder / f"trial-{i}", saved["best_epoch"])})
        best = _record(plan, v.name, trials, say)
        if best is not None and v.family == "unimodal":
            m = v.modalities[0]
            cfg = variant_config(base, v, 0, plan.kinds, best["values"])
            chosen_uni.setdefault((m, encoder_identity(cfg, m, specs[m])), (best["folder"], best["fingerprint"]))


def _trial(plan: Plan, pool: DataPool, cfg: Config, sources: dict[str, tuple[Path, str]], folder: Path,
           meta: dict[str, Any], progress, say, message: str) -> dict[str, Any]:
    """One trial's saved result (`meta`: the variant and values it records): reused when its
    fingerprint matches, else trained without test scoring, warm-started from `sources`
    (modality -> chosen unimodal trial, its fingerprint)."""
    from mmcli.compare.runner import clean_partials
    from mmcli.compare.warm import suffix
    from mmcli.training.api import planned_fingerprint, train

    data = pool.get(cfg)
    fp = planned_fingerprint(cfg, data)
    if sources:
        fp += suffix([f for _, f in sources.values()])
        cfg.model.init_from = {m: str(p.resolve()) for m, (p, _) in sources.items()}
    saved = _read(folder, fp)
    if saved is None:
        if say:
            say(message)
        clean_partials(folder)
        outcome = train(cfg, folder, overwrite=True, data=data, progress=progress, evaluate_test=False,
                        cache_dir=pool.cache_dir)
        saved = {"fingerprint": fp, **meta, "score": outcome.result.best_metric, "best_epoch": outcome.result.best_epoch,
                 "seconds": round(outcome.result.seconds, 2)}
        runs.write_json(folder / RESULT, saved)
    LOG.info("tune %s %s: validation %s %s", meta["variant"], describe(meta["values"]), plan.metric, saved["score"])
    return saved


def _record(plan: Plan, variant: str, trials: list[dict[str, Any]], say) -> dict[str, Any] | None:
    """Choose among a variant's trials and keep the choice and every trial in plan.tuned."""
    best = choose(trials, plan.higher_is_better)
    record = [{"values": t["values"], "score": _finite(t["score"]), "loss": t["loss"], "best_epoch": t["best_epoch"],
               "seconds": t["seconds"]} for t in trials]
    if best is None:  # no trial has a finite validation score (every one diverged): the configured values
        LOG.warning("tune %s: no trial has a finite validation %s; its runs use the configured values", variant, plan.metric)
        plan.tuned[variant] = {"values": {}, "score": None, "trial": None, "trials": record}
        return None
    plan.tuned[variant] = {"values": best["values"], "score": best["score"], "trial": best["trial"], "trials": record}
    if say:
        say(f"tune {variant}: chose {describe(best['values'])} (validation {plan.metric} {best['score']:.4f})")
    return best


def _finite(score: Any) -> float | None:
    return float(score) if isinstance(score, (int, float)) and math.isfinite(score) else None


def choose(trials: list[dict[str, Any]], higher_is_better: bool) -> dict[str, Any] | None:
    """The trial with the best finite validation score; among equal scores (a few hundred
    validation rows make many), the one with the lowest validation loss at its kept epoch,
    as early stopping breaks its ties; then the first in grid order. None when no trial
    has a finite score."""
    scored = [t for t in trials if _finite(t["score"]) is not None]
    if not scored:
        return None

    def key(t: dict[str, Any]) -> tuple[float, float]:
        loss = _finite(t.get("loss"))
        return (t["score"] if higher_is_better else -t["score"], -loss if loss is not None else -math.inf)

    return max(scored, key=key)


def _val_loss(folder: Path, epoch: int | None) -> float | None:
    """The validation loss of a trial's kept epoch, from its metrics.jsonl (None if absent)."""
    try:
        lines = (folder / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("epoch") == epoch:
            return _finite(record.get("val_loss"))
    return None


def _read(folder: Path, fp: str) -> dict[str, Any] | None:
    try:
        saved = json.loads((folder / RESULT).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return saved if saved.get("fingerprint") == fp else None
