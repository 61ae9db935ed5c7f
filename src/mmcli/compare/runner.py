"""Plan and run a comparison: every variant on the same splits, budget and seeds.

The data is preprocessed once and split once (with the base seed); seed i of every
variant trains with the seed base + i, so results pair up by seed across variants. The
plan (`compare.json` in the output folder) lists every run ("cell") with the fingerprint
of its config and data. Each finished cell writes `compare-result.json` into its run
folder, atomically; a cell whose result is there with the planned fingerprint is never
run again, so a comparison that was stopped resumes where it stopped, `--jobs N` runs
cells in N processes, and `--print-jobs` hands them to any scheduler (`--job K` runs one).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from mmcli import ledger, runs
from mmcli.compare import crossfit, degraded, ensemble, warm
from mmcli.compare.locking import job_lock
from mmcli.compare.outdir import prepare_out  # noqa: F401 (the CLI imports it from here)
from mmcli.compare.pool import DataPool
from mmcli.compare.variants import Variant, expand, run_dir_for, variant_config
from mmcli.config import Config, check_batch_size, from_dict
from mmcli.errors import UsageError

LOG = logging.getLogger("mmcli")

if TYPE_CHECKING:  # torch is imported only where a cell runs: --collect and --print-jobs stay light
    from mmcli.pipeline import RunData

MARKER = "compare.json"
RESULT = "compare-result.json"
PLAN_FORMAT = 1


@dataclass
class Plan:
    variants: list[Variant]
    seeds: int
    metric: str
    higher_is_better: bool
    config: dict[str, Any]
    modalities: list[str]
    cells: list[dict[str, Any]] = field(default_factory=list)  # variant, seed_index, seed, run, fingerprint
    baseline: dict[str, float] | None = None  # metrics of the training label prior on the test split
    command: str = ""
    threads: int = 0  # torch threads of every run (0: torch's default), whichever process runs it
    kinds: dict[str, str] = field(default_factory=dict)  # modality -> kind, for the encoders variants choose
    reference: str | None = None  # the variant every other is tested against (None: the best unimodal one)
    warm_start: bool = False  # fused runs start from the unimodal runs of their seed (compare.warm); old plans: no
    tune: dict[str, Any] | None = None  # --tune: {"space": {key: values}, "trials": N or None} (compare.tune)
    tuned: dict[str, Any] = field(default_factory=dict)  # variant -> {"values", "score", "trial", "trials"}
    corruptions: list[str] = field(default_factory=list)  # --corrupt: each run also scored so (compare.degraded)
    val_sources: int | None = None  # sources in the validation split (the ensemble weighs on it; old plans: None)
    folds: int = 0  # --ensemble-folds where the validation split is small (compare.crossfit; old plans: 0)

    def base_config(self) -> Config:
        return from_dict(self.config)

    def tuned_values(self, variant: str) -> dict[str, Any] | None:
        """The values --tune chose for `variant` (None: no search, or nothing chosen)."""
        return (self.tuned.get(variant) or {}).get("values")

    def variant(self, name: str) -> Variant:
        return next(v for v in self.variants if v.name == name)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["variants"] = [v.to_dict() for v in self.variants]
        return {"format": PLAN_FORMAT, **out}

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> "Plan":
        if value.get("format") != PLAN_FORMAT:
            raise UsageError(f"comparison plan format {value.get('format')!r} is not {PLAN_FORMAT}; rerun the comparison")
        kwargs = {f.name: value[f.name] for f in dataclasses.fields(cls) if f.name in value}
        kwargs["variants"] = [Variant.from_dict(v) for v in value["variants"]]
        return cls(**kwargs)


def load_plan(out: Path) -> Plan:
    path = out / MARKER
    if not path.is_file():
        raise UsageError(f"{out}: not a comparison folder (no {MARKER}); make one with mmcli compare --out {out}")
    try:
        return Plan.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"{path}: cannot read the comparison plan ({exc})") from None


def shared_data(base: Config, cache_dir: str | None, workers: int = 1, progress=None, report: bool = True) -> RunData:
    """The data every cell reads: preprocessed (cached) and split once, all modalities.
    `report`: say what the length limits cut (the planning process did)."""
    from mmcli.pipeline import prepare_training

    return prepare_training(base, cache_dir, workers, progress, report)


def make_plan(config: Config, items: list[str], seeds: int, metric: str | None, cache_dir: str | None,
              workers: int = 1, progress=None, command: str = "", threads: int = 0,
              reference: str | None = None, warm_start: bool = True,
              tune: dict[str, Any] | None = None, folds: int | None = None) -> tuple[Plan, DataPool]:
    """Check the request, prepare the data once and list every cell with its fingerprint.
    `tune` ({"space": {key: values} or None for the default, "trials": N or None}): the cells
    are listed again by `compare.tune.tune_plan` once the search has chosen each variant's values."""
    from mmcli.compare.collect import check_reference
    from mmcli.data.preprocess import BUILTIN_PREFIX
    from mmcli.fusion import DEFAULT_FUSIONS, FUSIONS
    from mmcli.heads import make_task
    from mmcli.pipeline import modality_kinds
    from mmcli.training.api import check_config

    if seeds < 1:
        raise UsageError("--seeds must be at least 1")
    folds = crossfit.count(folds)
    task = make_task(config)
    if task.crossmodal:
        raise UsageError(f"compare runs ablations for classification, multilabel and regression; train the {task.name} "
                         "task with mmcli train (the crossmodal family compares cross-modal variants for a label)")
    metric = metric or config.eval.metric or task.default_metric
    if metric not in task.metrics:
        raise UsageError(f"--metric {metric}: not a metric of {task.name} (choose from {', '.join(task.metrics)})")
    base = config.copy()
    base.data.split_seed = config.train.seed if config.data.split_seed is None else config.data.split_seed
    base.eval.metric = metric
    check_config(base, task)  # before any preprocessing or run
    check_batch_size(base, set(modality_kinds(base).values()))
    if tune is not None:  # checked before any preprocessing
        from mmcli.compare import tune as tuning

        space = tune.get("space") or tuning.default_space(base)
        tuning.check_space(base, space)
        tune = {"space": space, "trials": tune.get("trials")}
    if base.data.manifest and not base.data.manifest.startswith(BUILTIN_PREFIX):
        # absolute in the plan, so that --job K finds the data from any working folder
        base.data.manifest = str(Path(base.data.manifest).resolve())
    data = shared_data(base, cache_dir, workers, progress)
    base = data.config  # the length limits derived from the data, the same for every variant
    if "test" not in data.splits:
        raise UsageError(f"{data.table.source}: no test rows to compare on; add rows with split=test, "
                         "or drop the split column to draw a split")
    if tune is not None and not len(data.part("val")):
        raise UsageError("--tune chooses on the validation split, and this data has none: set data.val_fraction above 0 "
                         "or give rows with split=val")
    from mmcli.encoders import ENCODERS

    kinds = {m: data.table.modalities[m].kind for m in data.modalities}
    variants = expand(items, data.modalities, FUSIONS.names(), DEFAULT_FUSIONS, base.model.fusion, kinds, ENCODERS.names())
    check_reference(reference, variants)
    plan = Plan(variants, seeds, metric, metric not in task.lower_is_better, base.to_dict(), list(data.modalities),
                baseline=_baseline(data.task, data), command=command, threads=threads, reference=reference, kinds=kinds,
                warm_start=warm_start, tune=tune, val_sources=data.val_sources, folds=folds)
    pool = DataPool(base, kinds, cache_dir, data)
    list_cells(plan, pool, data.specs)
    crossfit.announce(plan)  # here, not in list_cells: --tune lists the cells again after its search
    return plan, pool


def list_cells(plan: Plan, pool: DataPool, specs: dict[str, Any]) -> None:
    """plan.cells: every run of every trained variant, with its fingerprint (and, with warm
    start, the unimodal cells it starts from); with --tune, each variant's chosen values."""
    from mmcli.models import check_options
    from mmcli.training.api import planned_fingerprint

    base, kinds, variants = plan.base_config(), plan.kinds, plan.variants
    plan.cells = []
    stems = [run_dir_for(v, 0).lower() for v in variants]  # lower: folders differ only in case on macOS and Windows
    configs = []
    for v, stem in zip(variants, stems):
        if ensemble.is_ensemble(v):  # trains nothing: computed from the unimodal runs when collected
            continue
        for i in range(plan.seeds):
            cfg = variant_config(base, v, i, kinds, plan.tuned_values(v.name))
            if v.encoders:
                check_batch_size(cfg, set(kinds.values()))  # its encoders' image size
            if i == 0:  # a misspelt option stops the comparison before anything trains
                check_options(cfg, pool.get(cfg).specs)
            # the torch thread count is part of a run's identity: it changes the floating-point sums
            plan.cells.append({"variant": v.name, "seed_index": i, "seed": cfg.train.seed,
                               "run": run_dir_for(v, cfg.train.seed, stems.count(stem) > 1),
                               "fingerprint": f"{planned_fingerprint(cfg, pool.get(cfg))}-t{plan.threads}"})
            configs.append(cfg)
    if plan.warm_start:
        warm.link(plan, configs, specs)
    ensemble.mark_cells(plan)
    crossfit.add_cells(plan, pool.get(base))


def _baseline(task, data: RunData) -> dict[str, float] | None:
    """The metrics of the training label prior on the test split: v(empty set) of attribution;
    each metric that of the prior's best answer for it (multi-label: a label set per metric)."""
    train, test = data.part("train"), data.part("test")

    def scored(metric: str | None) -> dict[str, float] | None:
        outputs = task.prior_outputs(train.labels, task.n_outputs(data.labels), len(test), metric)
        return None if outputs is None else _scalars(task.evaluate(outputs, test.labels, data.labels))

    scores = scored(None)
    if scores is not None:
        for metric in task.metrics:
            value = (scored(metric) or {}).get(metric)
            if value is not None:
                scores[metric] = value
    return scores


def _scalars(scores: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in scores.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def write_plan(out: Path, plan: Plan) -> None:
    runs.write_json(out / MARKER, plan.to_dict())


def read_cell(out: Path, cell: dict[str, Any]) -> dict[str, Any] | None:
    """The saved result of a cell, if it finished with the planned config and data."""
    try:
        saved = json.loads((out / cell["run"] / RESULT).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if saved.get("fingerprint") != cell["fingerprint"] or not ensemble.has_outputs(out / cell["run"], cell, saved):
        return None
    return saved


def clean_partials(folder: Path) -> None:
    """Remove the staging folders that a killed training into `folder` left: only mmcli's,
    and only the files it wrote there."""
    for stale in folder.parent.glob(f".{folder.name}.partial-*"):
        if (ledger.header(stale) or {}).get("kind") == "staging":
            ledger.remove_written(stale)
        else:  # killed before its ledger was written: an empty folder goes, anything else stays
            with contextlib.suppress(OSError):
                stale.rmdir()


def run_cell(plan: Plan, pool: DataPool, k: int, out: Path, fit_progress=None,
             cache_dir: str | None = None) -> tuple[dict[str, Any], bool]:
    """Run cell k (train, score the test split clean and with each modality missing) unless
    its result is already saved; returns (result, reused)."""
    from mmcli.training.api import planned_fingerprint, train

    cell = plan.cells[k]
    saved = read_cell(out, cell)
    if saved is not None:
        LOG.info("job %d (%s): finished before, reused", k, crossfit.label(cell))
        return saved, True
    variant = plan.variant(cell["variant"])
    cfg = variant_config(plan.base_config(), variant, cell["seed_index"], plan.kinds, plan.tuned_values(variant.name))
    data = pool.get(cfg)
    if f"{planned_fingerprint(cfg, data)}-t{plan.threads}" != crossfit.base_fingerprint(cell["fingerprint"]):
        raise UsageError(f"job {k} ({crossfit.label(cell)}): the data, its files or mmcli changed "
                         f"since the comparison in {out} was planned; plan it again (rerun the compare command)")
    if plan.threads:
        import torch

        torch.set_num_threads(plan.threads)  # the same in every process: results do not depend on --jobs
    folder = out / cell["run"]
    if warm.sources(plan, k):  # after the check above: the fingerprint is of the config without it
        cfg.model.init_from = warm.init_from(plan, k, out, lambda j: read_cell(out, plan.cells[j]))
    with job_lock(out / ".locks" / f"{folder.name}.lock", k, cell):
        saved = read_cell(out, cell)  # another process may have finished it while we waited to start
        if saved is not None:
            return saved, True
        clean_partials(folder)
        if crossfit.is_fold(cell):  # the member's encoders, trained without one fold of the training split
            cfg, data = crossfit.fold_run(cfg, data, cell)
        outcome = train(cfg, folder, overwrite=True, data=data, progress=fit_progress, cache_dir=cache_dir)
        scoring = degraded.scoring_config(plan, cfg)  # with --corrupt: the whole encoder, as the degraded scores
        result = {"fingerprint": cell["fingerprint"], "variant": variant.name, "family": variant.family,
                  **crossfit.tag(cell), "seed": cell["seed"], "best_epoch": outcome.result.best_epoch,
                  "seconds": round(outcome.result.seconds, 2), **_test_scores(outcome, scoring, cache_dir)}
        # what the test-set resampling reads (mmcli.compare.resample), and for a unimodal run what
        # multimodal:ensemble averages, now or in a later plan (it weighs them on the validation split)
        result[ensemble.FLAG] = ensemble.save_outputs(folder, outcome, scoring, ("val", "test") if variant.family == "unimodal"
                                                      else ("test",), cache_dir)
        runs.write_json(folder / RESULT, result)
    LOG.info("job %d (%s): %s %.4f, best epoch %d, %.1f s", k, crossfit.label(cell), plan.metric,
             result["scores"].get(plan.metric, float("nan")), result["best_epoch"], result["seconds"])
    return result, False


def _test_scores(outcome, cfg: Config, cache_dir: str | None = None) -> dict[str, Any]:
    """Scalar test metrics, per-class scores, and the metrics with each modality missing."""
    import torch

    from mmcli.training.features import cached_part
    from mmcli.training.loop import predict_logits
    from mmcli.training.setup import pick_device

    rd: RunData = outcome.data
    task = rd.task
    device = pick_device(cfg.train.device)
    test = cached_part(outcome.model, rd.part("test"), cfg, device, cache_dir)
    trained = outcome.test_scores if cfg.train.feature_cache == rd.config.train.feature_cache else None  # scored alike
    scores = trained or task.score(predict_logits(outcome.model, test, cfg, device), test, rd.labels)
    without = {}
    if len(rd.modalities) > 1:
        for m in rd.modalities:
            hidden = dataclasses.replace(test, present={**test.present, m: torch.zeros_like(test.present[m])})
            without[m] = _scalars(task.score(predict_logits(outcome.model, hidden, cfg, device), hidden, rd.labels))
    out = {"scores": _scalars(scores), "per_class": scores.get("per_class"), "without": without}
    if cfg.model.crossmodal == "translate":  # scored from the source alone: every other modality hidden
        source = rd.modalities[0]
        alone = dataclasses.replace(test, present={m: p if m == source else torch.zeros_like(p) for m, p in test.present.items()})
        out["others_missing"] = _scalars(task.score(predict_logits(outcome.model, alone, cfg, device), alone, rd.labels))
    return out


# --------------------------------------------------------------------------- drivers

def run_compare(config: Config, items: list[str], seeds: int, out: Path, metric: str | None = None,
                cache_dir: str | None = None, overwrite: bool = False, workers: int = 1,
                on_run: Callable[[int, int, str], Any] | None = None, fit_progress=None,
                preprocess_progress=None, jobs: int = 1, command: str = "", on_done: Callable[[int, int, dict], Any] | None = None,
                reference: str | None = None, warm_start: bool = True, tune: dict[str, Any] | None = None,
                say: Callable[[str], Any] | None = None, corruptions: list[str] | None = None,
                on_epoch: Callable[[str, int, int, int, int], Any] | None = None, folds: int | None = None):
    """Plan, search (--tune), run every unfinished cell (in `jobs` processes), then collect
    the results.

    `on_run(done, total, name)` is called before each run of a sequential comparison,
    `on_done(done, total, result)` after each run that finished in either mode, `say` with
    each step of the search, `on_epoch(name, epochs_done, epochs, runs_done, runs)` with each
    epoch that a parallel comparison's workers start or finish."""
    from mmcli.compare.collect import collect
    from mmcli.compare.parallel import run_parallel, threads_per_job
    from mmcli.compare.tune import tune_plan

    plan, data = make_plan(config, items, seeds, metric, cache_dir, workers, preprocess_progress, command,
                           threads_per_job(jobs) if jobs > 1 else 0, reference, warm_start, tune, folds)
    plan.corruptions = degraded.check(corruptions or [], plan.kinds)
    prepare_out(out, overwrite)
    tune_plan(plan, data, out, fit_progress, say)
    write_plan(out, plan)
    reused = {k for k, cell in enumerate(plan.cells) if read_cell(out, cell) is not None}
    todo = warm.ready_order(plan, [k for k in range(len(plan.cells)) if k not in reused])
    total = len(plan.cells)
    done = len(reused)
    if jobs > 1:
        def epoch(k: int, finished: int, epochs: int) -> None:
            if on_epoch is not None:
                on_epoch(crossfit.label(plan.cells[k]), finished, epochs, done, total)

        for k, result in run_parallel(out, plan, cache_dir, todo, jobs, epoch if on_epoch is not None else None):
            done += 1
            if on_done:
                on_done(done, total, result)
    else:
        for k in todo:
            cell = plan.cells[k]
            if on_run:
                on_run(done, total, crossfit.label(cell))
            result, _ = run_cell(plan, data, k, out, fit_progress, cache_dir)
            done += 1
            if on_done:
                on_done(done, total, result)
    degraded.complete(out, plan, cache_dir)
    return collect(out, plan, reused)


def run_job(out: Path, k: int, cache_dir: str | None = None, wait: float = 5.0) -> tuple[dict[str, Any], bool]:
    """`mmcli compare --out DIR --job K`: run cell K of the plan in DIR. A warm-started
    cell first needs the unimodal cells it starts from: this process runs those that have
    not run, and waits for those that another process is running."""
    import time

    from mmcli.errors import Busy

    plan = load_plan(out)
    if not 0 <= k < len(plan.cells):
        raise UsageError(f"--job {k}: the comparison in {out} has jobs 0 to {len(plan.cells) - 1}")
    saved = read_cell(out, plan.cells[k])
    if saved is not None:
        return saved, True
    pool = DataPool(plan.base_config(), plan.kinds, cache_dir)
    for j in warm.sources(plan, k).values():
        while read_cell(out, plan.cells[j]) is None:
            try:
                run_cell(plan, pool, j, out, cache_dir=cache_dir)
            except Busy:
                LOG.info("job %d: waiting for job %d, which another process is running", k, j)
                time.sleep(wait)
    return run_cell(plan, pool, k, out, cache_dir=cache_dir)


def job_commands(out: Path, plan: Plan, cache_dir: str | None = None) -> list[str]:
    """One shell command per cell: the same Python, `-m mmcli compare --out DIR --job K`."""
    extra = ["--cache-dir", str(Path(cache_dir).resolve())] if cache_dir else []
    base = [sys.executable, "-m", "mmcli", "compare", "--out", str(out.resolve()), *extra, "--quiet", "--job"]
    return [shlex.join(base + [str(k)]) for k in warm.ready_order(plan, list(range(len(plan.cells))))]
