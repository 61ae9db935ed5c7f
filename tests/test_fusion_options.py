"""Modality dropout, auxiliary losses, late fusion's weights and what the fusion attends to."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from mmcli.cli import app
from mmcli.config import from_dict
from mmcli.encoders import ModalitySpec
from mmcli.heads import TASKS
from mmcli.models import build, drop_modalities

SPECS = {"a": ModalitySpec("a", "image", image_size=16), "b": ModalitySpec("b", "text", vocab_size=30, max_len=8)}


def batch(n: int = 6) -> dict:
    g = torch.Generator().manual_seed(0)
    return {"a": torch.randn(n, 3, 16, 16, generator=g), "b": torch.randint(1, 30, (n, 8), generator=g),
            "lengths": {}, "mask": {"a": torch.ones(n, dtype=torch.bool), "b": torch.ones(n, dtype=torch.bool)},
            "label": torch.arange(n) % 3}


def test_modality_dropout_hides_at_the_rate_and_keeps_one():
    torch.manual_seed(0)
    n = 4000
    mask = {m: torch.ones(n, dtype=torch.bool) for m in ("x", "y", "z")}
    mask["z"][:1000] = False
    out = drop_modalities(mask, 0.4)
    kept = torch.stack(list(out.values()), dim=1)
    assert kept.any(dim=1).all(), "an example lost every modality"
    assert not out["z"][:1000].any(), "an absent modality came back"
    share = out["x"].float().mean().item()
    assert 0.55 < share < 0.70  # 0.6 kept, plus the examples given one back
    assert torch.equal(drop_modalities(mask, 0.0)["x"], mask["x"])


def test_modality_dropout_only_in_training():
    config = from_dict({"model": {"modality_dropout": 0.9}})
    model = build(config, SPECS, 3)
    data = batch()
    model.eval()
    first = model(data)
    assert torch.equal(first, model(data))  # eval: no dropout, deterministic
    model.train()
    torch.manual_seed(1)
    drop = model._forward(data)  # runs with a dropped mask
    assert drop[0].shape == first.shape


def test_aux_losses_add_a_head_per_modality():
    task = TASKS.get("classification")()
    plain = build(from_dict({"model": {"aux_loss_weight": 0.0}}), SPECS, 3)
    aux = build(from_dict({"model": {"aux_loss_weight": 0.5}}), SPECS, 3)
    assert len(plain.aux_heads) == 0 and set(aux.aux_heads) == {"a", "b"}
    aux.load_state_dict(plain.state_dict(), strict=False)
    plain.eval()
    aux.eval()
    data = batch()
    base = plain.loss(data, task)
    total = aux.loss(data, task)
    extra = torch.stack([task.loss(aux.aux_heads[m](aux.encode(data)[m].pooled), data) for m in ("a", "b")]).mean()
    assert torch.allclose(total, base + 0.5 * extra, atol=1e-5)


def test_late_fusion_learned_weights_and_explain():
    model = build(from_dict({"model": {"fusion": "late", "fusion_options": {"weights": "learned"}}}), SPECS, 3)
    assert isinstance(model.head, torch.nn.Identity) and model.fusion.logits is not None
    out = model.eval()(batch())
    assert out.shape == (6, 3)
    w = model.fusion.last_weights
    assert torch.allclose(w.sum(dim=1), torch.ones(6))
    with pytest.raises(Exception, match="mean.*learned"):
        build(from_dict({"model": {"fusion": "late", "fusion_options": {"weights": "max"}}}), SPECS, 3)


@pytest.mark.parametrize("fusion", ["attention", "concat"])
def test_predict_explain_and_weights_per_class(toy_small, tmp_path, fusion):
    runner = CliRunner()
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", str(toy_small), "--epochs", "1", "--fusion", fusion, "--out", str(out)])
    assert result.exit_code == 0, result.output
    lines = runner.invoke(app, ["predict", str(out), str(toy_small), "--explain"]).stdout.splitlines()
    first = json.loads(lines[0])
    scores = json.loads(runner.invoke(app, ["evaluate", str(out), "--json"]).stdout)
    if fusion == "concat":  # no weights to report
        assert first["modality_weights"] is None and "modality_weights_per_class" not in scores
        return
    assert set(first["modality_weights"]) == {"image", "audio", "text"}
    assert sum(first["modality_weights"].values()) == pytest.approx(1.0, abs=1e-4)
    per_class = scores["modality_weights_per_class"]
    assert len(per_class) == 12
    assert all(sum(v.values()) == pytest.approx(1.0, abs=1e-4) for v in per_class.values())


def test_gradient_blending_weights_follow_generalisation_over_overfitting():
    from mmcli.training.blending import GradientBlender

    blender = GradientBlender(["fused", "a", "b"])
    assert blender.update({"fused": 2.0, "a": 2.0, "b": 2.0}, {"fused": 2.2, "a": 2.2, "b": 2.2}) == pytest.approx(
        {"fused": 1 / 3, "a": 1 / 3, "b": 1 / 3})
    # fused: val gain 0.4, gap grew 0.1 -> 40; a: gain 0.2, gap grew 0.2 -> 5; b: got worse -> floor
    w = blender.update({"fused": 1.5, "a": 1.6, "b": 1.9}, {"fused": 1.8, "a": 2.0, "b": 2.3})
    assert w["fused"] > w["a"] > w["b"] and sum(w.values()) == pytest.approx(1.0)
    assert w["fused"] / w["a"] == pytest.approx(40 / 5, rel=1e-6)


def test_training_with_gradient_blending(toy_small, tmp_path):
    runner = CliRunner()
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", str(toy_small), "--epochs", "3", "--set", "train.gradient_blending=true", "--out", str(out)])
    assert result.exit_code == 0, result.output
    epochs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    weights = [e["blend_weights"] for e in epochs]
    assert all(set(w) == {"fused", "image", "audio", "text"} and sum(w.values()) == pytest.approx(1.0) for w in weights)
    assert weights[0] == pytest.approx({k: 0.25 for k in weights[0]})
    assert weights[-1] != pytest.approx(weights[0])
    one = runner.invoke(app, ["train", str(toy_small), "-m", "text", "--set", "train.gradient_blending=true", "--out", str(tmp_path / "x")])
    assert one.exit_code == 2 and "gradient_blending" in one.output
