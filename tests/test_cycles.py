"""Learning-rate cycles (issue 19): a run whose budget was derived and whose validation
score or loss is still improving when its cosine decay ends trains another cycle of the
same epochs from a warm restart, at most `train.max_cycles` in all; a set budget is
trained as set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from conftest import stop_at_checkpoint_and_resume, write_own_manifest
from mmcli.config import Config, TrainConfig, from_dict
from mmcli.training.setup import MAX_CYCLES, make_optimizer
from mmcli.training.stopping import another_cycle, stops


def records(run: Path) -> list[dict]:
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [{k: v for k, v in r.items() if not k.endswith("_s")} for r in lines]


def test_another_cycle_only_at_a_cycle_s_end_while_validation_improves():
    cfg = TrainConfig(epochs=10, patience=3, max_cycles=3)
    assert another_cycle(cfg, 10, 2, validated=True)  # improved within the last 3 epochs
    assert not another_cycle(cfg, 10, 3, validated=True)  # 3 epochs without: it has stopped learning
    assert not another_cycle(cfg, 9, 0, validated=True)  # mid-cycle
    assert not another_cycle(cfg, 10, 0, validated=False)  # no validation split: nothing says it improves
    assert another_cycle(cfg, 20, 0, validated=True) and not another_cycle(cfg, 30, 0, validated=True)  # three at most
    assert not another_cycle(TrainConfig(epochs=10, patience=3, max_cycles=1), 10, 0, validated=True)
    assert not another_cycle(TrainConfig(epochs=10, patience=0, max_cycles=3), 10, 0, validated=True)  # no early stopping asked


def test_early_stopping_s_floor_counts_from_each_cycle_s_start():
    config = Config()
    config.train.epochs, config.train.patience, config.train.min_epochs = 10, 2, 6
    assert stops(config, 6, 2) and not stops(config, 5, 9)
    assert not stops(config, 13, 9)  # the third epoch after a restart: the rate is high again
    assert stops(config, 16, 2) and stops(config, 20, 2)


def test_each_cycle_restarts_the_warm_up_and_the_cosine_decay():
    cfg = TrainConfig(epochs=4, max_cycles=3, warmup_epochs=1)
    optimizer, scheduler = make_optimizer(torch.nn.Linear(2, 2), cfg, steps_per_epoch=5)
    rates = []
    for _ in range(3 * 4 * 5):
        rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert rates[:20] == rates[20:40] == rates[40:]
    assert rates[19] < 0.05 * cfg.lr and max(rates[20:40]) == pytest.approx(cfg.lr, rel=0.05)
    one = TrainConfig(epochs=4, max_cycles=1, warmup_epochs=1)  # one cycle: the rate stays at its end
    optimizer, scheduler = make_optimizer(torch.nn.Linear(2, 2), one, steps_per_epoch=5)
    for _ in range(30):
        optimizer.step()
        scheduler.step()
    assert scheduler.get_last_lr()[0] == 0.0


def test_a_derived_budget_may_cycle_and_a_set_one_is_trained_as_set(tmp_path, cli):
    manifest = write_own_manifest(tmp_path / "own", n=24)
    derived = cli("train", manifest, "--modalities", "photo", "--out", tmp_path / "derived", "--set", "train.patience=1")
    assert derived.exit_code == 0, derived.output
    assert yaml.safe_load((tmp_path / "derived" / "config.yaml").read_text())["train"]["max_cycles"] == MAX_CYCLES
    set_ = cli("train", manifest, "--modalities", "photo", "--out", tmp_path / "set", "--epochs", "3", "--set", "train.patience=50")
    assert set_.exit_code == 0, set_.output
    assert yaml.safe_load((tmp_path / "set" / "config.yaml").read_text())["train"]["max_cycles"] == 1
    assert len(records(tmp_path / "set")) == 3  # still improving by the rule, but the user set 3 epochs


def test_a_run_still_improving_trains_another_cycle_from_a_warm_restart(tmp_path, cli):
    manifest = write_own_manifest(tmp_path / "own", n=24)
    result = cli("train", manifest, "--modalities", "photo", "--out", tmp_path / "run", "--epochs", "3",
                 "--set", "train.max_cycles=2", "--set", "train.patience=50", "--set", "train.warmup_epochs=0")
    assert result.exit_code == 0, result.output
    got = records(tmp_path / "run")
    assert [r["epoch"] for r in got] == [1, 2, 3, 4, 5, 6]  # patience 50 is never spent: both cycles
    rates = [r["lr"] for r in got]  # each epoch's record holds the rate its next step uses
    assert rates[:3] == rates[3:] and rates[0] > rates[1]  # the second cycle repeats the first's decay
    said = [line for line in result.output.splitlines() if "another learning-rate cycle" in line]
    assert said == ["train: still improving at epoch 3: another learning-rate cycle, to epoch 6"]  # the console says why



@pytest.mark.parametrize("stop_after", [2, 3])  # at the end of the first cycle; inside the second
def test_a_run_interrupted_around_a_restart_resumes_into_the_same_cycles(toy_small, tmp_path, monkeypatch, stop_after):
    from mmcli.training.api import train

    config = {"data": {"manifest": str(toy_small)}, "model": {"modalities": ["image", "text"]},
              "train": {"epochs": 2, "max_cycles": 2, "seed": 3, "patience": 50}}
    train(from_dict(config), tmp_path / "plain")
    assert len(records(tmp_path / "plain")) == 4
    stop_at_checkpoint_and_resume(monkeypatch, config, tmp_path / "stopped", epoch=stop_after, written=True)
    assert records(tmp_path / "stopped") == records(tmp_path / "plain")


def test_a_validation_score_that_is_not_a_number_starts_no_cycle(toy_small, tmp_path, monkeypatch):
    """A validation split can give no score (verification's EER with one example per
    identity is NaN): nothing then says the run is still improving."""
    from mmcli.heads.classification import Classification
    from mmcli.training.api import train

    score = Classification.score

    def nan_accuracy(self, *args, **kwargs):
        return {**score(self, *args, **kwargs), "accuracy": float("nan")}

    monkeypatch.setattr(Classification, "score", nan_accuracy)
    config = {"data": {"manifest": str(toy_small)}, "model": {"modalities": ["image", "text"]},
              "train": {"epochs": 2, "max_cycles": 3, "seed": 3, "patience": 50}}
    train(from_dict(config), tmp_path / "run")
    assert [r["epoch"] for r in records(tmp_path / "run")] == [1, 2]
