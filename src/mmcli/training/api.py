"""`train(config)`: the one function behind `mmcli train` and each run of `mmcli compare`."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from mmcli import __version__, runs
from mmcli.config import Config, check_batch_size
from mmcli.encoders import skip_pretrained
from mmcli.models import adapt_data, build, check_options, chosen_modalities, count_parameters, fusion_choice
from mmcli.errors import ConfigError
from mmcli.heads import make_task
from mmcli.encoders.from_data import text_encoder_defaults
from mmcli.pipeline import RunData, make_specs, modality_kinds, prepare_training, save_run_inputs
from mmcli.training.loop import FitProgress, FitResult, fit, predict_logits
from mmcli.training.distributed import world
from mmcli.training.setup import pick_device, seed_everything


@dataclass
class TrainOutcome:
    run_dir: Path
    result: FitResult
    data: RunData
    test_scores: dict | None
    parameters: int
    model: object = None  # the trained model (best weights where the test split was scored)

LOG = logging.getLogger("mmcli")


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def variant_of(config: Config, modalities: list[str]) -> str:
    task = make_task(config)
    if task.text_output:  # captioning, transcription: a source to the label column's text
        return f"{task.name}:{modalities[0]}-to-{config.data.label}"
    if task.crossmodal:
        return f"{task.name}:{'+'.join(modalities)}"
    if config.model.crossmodal == "translate":
        return f"crossmodal:translate:{modalities[0]}"
    if config.model.crossmodal == "align":
        return "crossmodal:align"
    if len(modalities) == 1:
        return f"unimodal:{modalities[0]}"
    return f"multimodal:{fusion_choice(config, modalities)}"


def fingerprint(config: Config, data_key: str, texts: bool = False) -> str:
    """What makes two runs the same run: the resolved config, the data, mmcli's version,
    its task's rules (what no config key records: mmcli.heads.Task.rules) and, for a run
    that reads texts (`texts`), the revision of the tokenizer mmcli fits, so that a
    comparison resumed after that changed trains its text runs again."""
    from mmcli.data.text import TOKENIZER_REVISION
    from mmcli.heads import TASKS

    rules = TASKS.get(config.model.task).rules
    text = json.dumps({"config": config.to_dict(), "data": data_key, "mmcli": __version__,
                       **({"rules": rules} if rules else {}), **({"tokenizer": TOKENIZER_REVISION} if texts else {})},
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def data_fingerprint(config: Config, data: RunData) -> str:
    """`fingerprint` of a run on `data`, with the tokenizer's revision where it reads texts."""
    modalities = chosen_modalities(config, list(data.table.modalities))
    return fingerprint(config, data.table.key, texts=any(m in data.tokenizers for m in modalities))


def planned_fingerprint(config: Config, data: RunData) -> str:
    """A compare cell's identity before it trains: `config` with the encoders that the data
    chooses for it (encoders.from_data.text_encoder_defaults), so a rule's choice is part of it."""
    return data_fingerprint(text_encoder_defaults(config, data, log=False), data)


def _run_data(config: Config, data: RunData | None, cache_dir, workers, progress) -> RunData:
    if data is None:
        return prepare_training(config, cache_dir, workers, progress)
    # a caller (compare) prepared the data once; take this config's modalities from it
    modalities = chosen_modalities(config, list(data.table.modalities))
    tokenizers = {n: t for n, t in data.tokenizers.items() if n in modalities}
    return RunData(config, data.table, data.splits, modalities, data.labels, tokenizers,
                   make_specs(config, data.table, modalities, tokenizers), dict(data.target_state),
                   data.val_sources, data.groups)


def _with_defaults(config: Config, task, n_train: int) -> Config:
    """The config with what depends on the data filled in: the metric, and the budget
    (epochs, patience, cycles) from the training split's size, logged; saved with the run."""
    from mmcli.training.setup import MAX_CYCLES, budget, stop_floor

    train = config.train
    if config.eval.metric is not None and None not in (train.epochs, train.patience, train.min_epochs, train.max_cycles):
        return config
    config = config.copy()
    config.eval.metric = config.eval.metric or task.default_metric
    derived = config.train.epochs is None
    if config.train.max_cycles is None:  # a set budget is trained as set; a task's own cap (captioning's), in one cycle
        config.train.max_cycles = MAX_CYCLES if derived and task.max_epochs is None else 1
    if config.train.epochs is None or config.train.patience is None:
        config.train.epochs, config.train.patience = budget(n_train, config.train, task.max_epochs)
        if derived:
            LOG.info("train.epochs=%d, train.patience=%d (derived from %d training examples in batches of %d)",
                     config.train.epochs, config.train.patience, n_train, config.train.batch_size)
    if config.train.min_epochs is None:
        config.train.min_epochs = stop_floor(config.train.epochs, config.train)
    return config


def check_config(config: Config, task) -> None:
    """What the task must support of the config: its metric, class weights, the sampler."""
    if config.train.class_weights != "none" and not task.has_classes:
        raise ConfigError(f"config key 'train.class_weights': the {task.name} task has no classes to weigh")
    if config.train.sampler != "random" and not task.has_classes:
        raise ConfigError(f"config key 'train.sampler': the {task.name} task has no classes to balance")
    if config.eval.metric not in task.metrics:
        raise ConfigError(f"config key 'eval.metric': '{config.eval.metric}' is not a metric of {task.name} "
                          f"(choose from {', '.join(task.metrics)})")


def training_config(config: Config) -> tuple[Config, dict[str, str]]:
    """The config a run trains with (the data's settings that its encoders want, the task's
    choice of modalities and target), and the data's modality kinds."""
    kinds = modality_kinds(config)
    return make_task(config).adapt_config(adapt_data(config, kinds), kinds), kinds


def train(config: Config, out: Path | None = None, overwrite: bool = False, cache_dir: str | None = None,
          workers: int = 1, progress: FitProgress | None = None, data: RunData | None = None,
          preprocess_progress=None, argv: list[str] | None = None, evaluate_test: bool = True) -> TrainOutcome:
    """Preprocess (cached), train with early stopping, save the run folder, score the test split.

    Everything is checked and the model built before the run folder is touched; training
    writes into a hidden sibling folder that replaces `out` only when it has finished, so a
    failed or interrupted run never destroys the run it was to replace.
    """
    config, kinds = training_config(config)
    check_batch_size(config, set(kinds.values()))  # before any preprocessing
    data = _run_data(config, data, cache_dir, workers, preprocess_progress)
    config = data.config  # with the length limits derived from the data (mmcli.data.lengths)
    task = data.task
    config = _with_defaults(text_encoder_defaults(config, data), task, data.counts()["train"])
    data = dataclasses.replace(data, config=config)
    check_config(config, task)
    check_options(config, data.specs)
    variant = variant_of(config, data.modalities)
    here = world()
    scratch = None
    if here.active and not here.main:  # distributed: only rank 0 writes the run folder
        scratch = Path(tempfile.mkdtemp(prefix=f"mmcli-rank{here.rank}-"))
        out, overwrite = scratch / "run", True
    final = runs.resolve_out_dir(out, variant, overwrite)
    generator = seed_everything(config.train.seed, config.train.deterministic)
    model = build(config, data.specs, task.n_outputs(data.labels))
    if config.model.init_from:
        from mmcli.training.warmstart import warm_start

        warm_start(model, config.model.init_from, data)
    if LOG.isEnabledFor(logging.INFO):
        LOG.info("%s: %s parameters; train/val/test %s; device %s, %d threads", variant,
                 f"{count_parameters(model):,}", "/".join(str(n) for n in data.counts().values()),
                 pick_device(config.train.device), _threads())
    info = runs.provenance(argv)
    info.update({"variant": variant, "data_key": data.table.key, "fingerprint": data_fingerprint(config, data),
                 "world_size": here.size})
    if config.model.crossmodal == "align" and config.train.align_epochs:
        from mmcli.training.align import align_encoders

        info["align_losses"] = align_encoders(model, data.part("train"), config, generator)
        LOG.info("aligned the encoders for %d epochs: contrastive loss %s", len(info["align_losses"]), info["align_losses"])
    with runs.out_lock(final):  # a second training into the same folder is refused until this one publishes
        work = runs.staging_dir(final, overwrite)
        save_run_inputs(work, data)
        runs.write_json(work / "provenance.json", info)  # unfinished: --resume reads it
        try:
            return _fit_and_publish(model, task, data, config, work, final, generator, progress, info, evaluate_test,
                                    cache_dir=cache_dir)
        finally:
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)


def _fit_and_publish(model, task, data: RunData, config: Config, work: Path, final: Path, generator, progress,
                     info: dict, evaluate_test: bool, resume: dict | None = None, cache_dir: str | None = None) -> TrainOutcome:
    """Train in the staging folder `work`, then publish it as `final`. Ctrl-C keeps the
    staging folder with its last checkpoint (exit 130), as a SIGKILL would: `--resume`."""
    from mmcli.errors import Interrupted
    from mmcli.training.loop import CHECKPOINT

    keep = False
    try:
        result = fit(model, task, data.part("train"), data.part("val"), config, work, data.labels, generator, progress,
                     cache_dir=cache_dir, resume=resume)
        task = _after_fit(model, task, data, config, work, cache_dir)
        scores = _score_test(model, task, data, config, work, result, cache_dir) if evaluate_test else None
        info.update({"finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "seconds": round(result.seconds, 2),
                     "best_epoch": result.best_epoch, "parameters": count_parameters(model),
                     "examples_per_rank": result.examples_per_rank})
        runs.write_json(work / "provenance.json", info)
        runs.publish(work, final)
    except KeyboardInterrupt:
        keep = (work / CHECKPOINT).is_file()
        if keep:
            raise Interrupted(f"interrupted; the last finished epoch is saved: continue with mmcli train --resume {final}") from None
        raise
    finally:
        if work.exists() and not keep:
            shutil.rmtree(work, ignore_errors=True)
    return TrainOutcome(final, result, data, scores, count_parameters(model), model)


def resume(run: Path, cache_dir: str | None = None, progress: FitProgress | None = None,
           preprocess_progress=None) -> TrainOutcome:
    """Continue the interrupted training of `run` from its last checkpoint: the same data,
    split, model, optimizer, scheduler and random states, so it ends where an
    uninterrupted run with the same seed would."""
    from mmcli.config import from_dict, load_yaml
    from mmcli.errors import UsageError
    from mmcli.training.loop import CHECKPOINT, load_checkpoint

    run = Path(run)
    candidates = sorted(run.parent.glob(f".{run.name}.partial-*"), key=lambda p: p.stat().st_mtime)
    work = next((p for p in reversed(candidates) if (p / CHECKPOINT).is_file()), None)
    if work is None:
        finished = (run / "provenance.json").is_file() and "finished" in runs.read_json(run / "provenance.json", dict)
        raise UsageError(f"{run}: " + ("this run finished; there is nothing to resume" if finished else
                                       "no interrupted training of this run to resume (no checkpoint was saved)"))
    config = from_dict(load_yaml(work / "config.yaml"), trained=True)
    manifest = config.data.manifest
    if manifest and not manifest.startswith("builtin:"):
        config.data.manifest = str((work / manifest).resolve())
    data = _run_data(config, None, cache_dir, 1, preprocess_progress)
    from mmcli.runfiles import with_defaults_of_then

    config = with_defaults_of_then(work / "config.yaml", config, data.specs)
    data = dataclasses.replace(data, config=config)
    task = data.task
    checkpoint = load_checkpoint(work)
    generator = seed_everything(config.train.seed, config.train.deterministic)
    with skip_pretrained():  # the checkpoint's weights replace them
        model = build(config, data.specs, task.n_outputs(data.labels))
    if config.model.init_from:  # the optimizer's groups of the interrupted run
        from mmcli.training.warmstart import mark_trained

        mark_trained(model, config.model.init_from)
    if "model" in checkpoint:  # the weights of the checkpoint's own epoch
        model.load_state_dict(checkpoint["model"])
    else:  # a checkpoint written before the weights went into it
        runs.load_weights(model, work / "last.safetensors")
    info = runs.read_json(work / "provenance.json", dict)
    info["resumed_from_epoch"] = checkpoint["epoch"]
    with runs.out_lock(run):
        return _fit_and_publish(model, task, data, config, work, run, generator, progress, info, True, checkpoint, cache_dir)


def _after_fit(model, task, data: RunData, config: Config, run_dir: Path, cache_dir: str | None = None):
    """Load the best weights; let the task choose what it chooses on validation
    (multi-label thresholds), saved into target.json; return the task with that state."""
    from mmcli.training.features import cached_part

    runs.load_weights(model, run_dir / "best.safetensors")
    val = data.part("val")
    if not len(val):
        return task
    device = pick_device(config.train.device)
    update = task.after_fit(predict_logits(model, cached_part(model, val, config, device, cache_dir), config, device),
                            val.labels, data.labels)
    if update:
        data.target_state.update(update)
        runs.write_json(run_dir / "target.json", {"task": config.model.task, **data.target_state})
    return data.task


def _score_test(model, task, data: RunData, config: Config, run_dir: Path, result: FitResult,
                cache_dir: str | None = None) -> dict | None:
    from mmcli.training.features import cached_part

    test_part = data.part("test")
    if not len(test_part):
        return None
    device = pick_device(config.train.device)
    logits = predict_logits(model, cached_part(model, test_part, config, device, cache_dir), config, device)
    scores = task.score(logits, test_part, data.labels)
    for warning in task.final_warnings(scores):
        logging.getLogger("mmcli").warning("test split: %s", warning)
    scores.update({"split": "test", "weights": "best", "best_epoch": result.best_epoch})
    runs.write_json(run_dir / "eval-test.json", scores)
    return scores
