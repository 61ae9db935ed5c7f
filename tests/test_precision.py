"""Mixed precision and gradient accumulation: bf16 autocast on the CPU trains like fp32
(within a stated margin); fp16 goes through a gradient scaler; accumulation steps the
optimizer once every N batches."""

from __future__ import annotations

import json

import pytest
import torch

from mmcli.config import from_dict
from mmcli.errors import ConfigError

BASE = {"model": {"modalities": ["image", "text"]}, "train": {"epochs": 2, "seed": 4, "patience": 0}}


def _train(toy, tmp_path, name: str, **train):
    from mmcli.training.api import train as run

    values = json.loads(json.dumps(BASE))
    values["data"] = {"manifest": str(toy)}
    values["train"].update(train)
    return run(from_dict(values), tmp_path / name)


def test_bf16_autocast_trains_within_a_margin_of_fp32(toy_small, tmp_path):
    fp32 = _train(toy_small, tmp_path, "fp32").result.history
    bf16 = _train(toy_small, tmp_path, "bf16", precision="bf16").result.history
    # bf16 keeps 8 bits of mantissa: the same training, rounded; 5 % on the loss after 2 epochs
    assert bf16[-1]["train_loss"] == pytest.approx(fp32[-1]["train_loss"], rel=0.05)
    assert bf16[-1]["train_loss"] != fp32[-1]["train_loss"]  # autocast did run in bf16
    assert bf16[-1]["train_loss"] < bf16[0]["train_loss"]  # and it learns


def test_fp16_uses_a_gradient_scaler_and_accumulation_steps_less_often(toy_small, tmp_path):
    outcome = _train(toy_small, tmp_path, "fp16", precision="fp16", accumulate=2, batch_size=32)
    assert all(torch.isfinite(torch.tensor(h["train_loss"])) for h in outcome.result.history)
    checkpoint = torch.load(outcome.run_dir / "checkpoint.pt", weights_only=True)
    batches = -(-outcome.data.counts()["train"] // 32)
    assert checkpoint["scaler"]["scale"] > 0  # the scaler ran and its state is saved for --resume
    assert checkpoint["scheduler"]["last_epoch"] == 2 * -(-batches // 2)  # one step per two batches


def test_gpu_check_script_runs_its_checks_on_the_cpu(tmp_path, capsys, monkeypatch):
    """bench/gpu_check.py is meant for a GPU; on the CPU the same checks run (bf16 step,
    loader time against step time), so the script is known to work before a GPU is lent."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.py"
    monkeypatch.syspath_prepend(str(path.parent))  # as when run as a script: it imports bench/scale.py
    spec = importlib.util.spec_from_file_location("gpu_check", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--device", "cpu", "--n", "240", "--batch-size", "32", "--loader-workers", "2"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["available"] and report["bf16_vs_fp32"] < 0.05
    assert report["bf16_step_ms"] > 0 and report["batch_load_ms"] > 0
    assert report["loader_workers"] == 2 and report["loader_batch_ms"] > 0
    if not torch.cuda.is_available():
        assert module.main([]) == 0
        assert json.loads(capsys.readouterr().out)["available"] is False


def test_bad_precision_and_accumulation_are_config_errors():
    with pytest.raises(ConfigError, match="train.precision"):
        from_dict({"train": {"precision": "fp8"}})
    with pytest.raises(ConfigError, match="train.accumulate"):
        from_dict({"train": {"accumulate": 0}})
