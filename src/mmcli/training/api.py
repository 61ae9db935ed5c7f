"""`train(config)`: the one function behind `mmcli train` and each run of `mmcli compare`."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from mmcli import runs
from mmcli.config import Config
from mmcli.heads import TASKS
from mmcli.models import build, chosen_modalities, count_parameters, fusion_choice
from mmcli.pipeline import RunData, prepare_training, save_run_inputs
from mmcli.training.loop import FitProgress, FitResult, fit, predict_logits
from mmcli.training.setup import pick_device, seed_everything


@dataclass
class TrainOutcome:
    run_dir: Path
    result: FitResult
    data: RunData
    test_scores: dict | None
    parameters: int


def variant_of(config: Config, modalities: list[str]) -> str:
    if len(modalities) == 1:
        return f"unimodal:{modalities[0]}"
    return f"multimodal:{fusion_choice(config, modalities)}"


def train(config: Config, out: Path | None = None, overwrite: bool = False, cache_dir: str | None = None,
          workers: int = 1, progress: FitProgress | None = None, data: RunData | None = None,
          preprocess_progress=None, argv: list[str] | None = None, evaluate_test: bool = True) -> TrainOutcome:
    """Preprocess (cached), train with early stopping, save the run folder, score the test split."""
    if data is None:
        data = prepare_training(config, cache_dir, workers, preprocess_progress)
    else:  # a caller (compare) prepared the data once; use this config's modalities
        data = RunData(config, data.table, data.splits, chosen_modalities(config, list(data.table.modalities)),
                       data.labels, data.tokenizers, {})
        data.tokenizers = {n: t for n, t in data.tokenizers.items() if n in data.modalities}
        from mmcli.pipeline import make_specs

        data.specs = make_specs(config, data.table, data.modalities, data.tokenizers)
    run_dir = runs.prepare_run_dir(out, variant_of(config, data.modalities), overwrite)
    info = runs.provenance(argv)
    info["variant"] = variant_of(config, data.modalities)
    info["data_key"] = data.table.key
    save_run_inputs(run_dir, data)
    generator = seed_everything(config.train.seed, config.train.deterministic)
    task = TASKS.get(config.model.task)()
    model = build(config, data.specs, len(data.labels))
    train_part, val_part = data.part("train"), data.part("val")
    result = fit(model, task, train_part, val_part, config, run_dir, data.labels, generator, progress)
    scores = None
    if evaluate_test:
        test_part = data.part("test")
        if len(test_part):
            runs.load_weights(model, run_dir / "best.safetensors")
            logits = predict_logits(model, test_part, config, pick_device(config.train.device))
            scores = task.evaluate(logits, test_part.labels, data.labels)
            scores.update({"split": "test", "weights": "best", "best_epoch": result.best_epoch})
            runs.write_json(run_dir / "eval-test.json", scores)
    info.update({"finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "seconds": round(result.seconds, 2),
                 "best_epoch": result.best_epoch, "parameters": count_parameters(model)})
    runs.write_json(run_dir / "provenance.json", info)
    return TrainOutcome(run_dir, result, data, scores, count_parameters(model))
