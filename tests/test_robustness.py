"""Missing and corrupted modalities at evaluation and prediction time."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from mmcli.cli import app
from mmcli.config import from_dict
from mmcli.evaluation import corrupt

RUNNER = CliRunner()
SMALL = {"image_size": 32, "n_mels": 32, "max_seconds": 1.0, "text_max_len": 16}
# accuracy may rise by this much from one corruption level to the next (sampling noise)
NOISE = 0.05


def ok(result):
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def toy(toy_1200) -> Path:
    return toy_1200  # the set test_fusion_training.py trains on, made and preprocessed once


def _config(manifest: Path, seed: int = 0, **model) -> object:
    return from_dict({"data": {"manifest": str(manifest), **SMALL},
                      # without the auxiliary heads, whose own fall-back for a lone modality would
                      # hide what modality dropout changes (docs/robustness.md measured this setting)
                      "model": {"feature_dim": 64, "hidden_dim": 64, "aux_loss_weight": 0.0, **model},
                      "train": {"epochs": 6, "patience": 0, "batch_size": 32, "seed": seed}})


@pytest.fixture(scope="module")
def trained(toy, tmp_path_factory) -> Path:
    from mmcli.training.api import train

    return train(_config(toy), tmp_path_factory.mktemp("rob") / "run").run_dir


def evaluate(run: Path, *args: str) -> dict:
    return json.loads(ok(RUNNER.invoke(app, ["evaluate", str(run), "--json", *args])).stdout)


def test_a_dropped_modality_lowers_accuracy(trained):
    clean = evaluate(trained)["accuracy"]
    drops = {}
    for name in ("image", "audio", "text"):
        dropped = evaluate(trained, "--drop", name)
        assert dropped["dropped"] == [name]
        assert dropped["accuracy"] < clean, (name, dropped["accuracy"], clean)
        drops[name] = dropped["accuracy"]
    # text carries the colour, which no other modality gives reliably: its loss is large
    assert drops["text"] < clean - 0.1, (drops, clean)
    assert (trained / "eval-test-drop-text.json").is_file()
    assert json.loads((trained / "eval-test.json").read_text())["accuracy"] == clean


def test_bad_drop_and_corrupt_arguments_exit_2(trained):
    for args, needle in ((["--drop", "smell"], "no modality 'smell'"),
                         (["--drop", "image", "--drop", "audio", "--drop", "text"], "nothing would be left"),
                         (["--corrupt", "image:typos@0.5"], "not a corruption of image"),
                         (["--corrupt", "image:blur@2"], "[0, 1]"),
                         (["--corrupt", "imageblur"], "MODALITY:KIND@LEVEL")):
        result = RUNNER.invoke(app, ["evaluate", str(trained), *args])
        assert result.exit_code == 2 and needle in result.output, (args, result.output)


def test_corruptions_are_identity_at_zero_seeded_and_change_at_one():
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=gen)
    db = torch.rand(4, 16, 20, generator=gen) * 60 - 60
    lengths = torch.tensor([20, 15, 10, 20])
    texts = ["a crimson roundish thing on a noisy background", "someone sketched a big navy object"]
    for kind in corrupt.KINDS["image"]:
        assert torch.equal(corrupt.corrupt_images(images, kind, 0.0, 1), images)
        one = corrupt.corrupt_images(images, kind, 1.0, 1)
        assert one.dtype == torch.uint8 and one.shape == images.shape and not torch.equal(one, images), kind
        assert torch.equal(one, corrupt.corrupt_images(images, kind, 1.0, 1))
    for kind in corrupt.KINDS["text"]:
        assert corrupt.corrupt_texts(texts, kind, 0.0, 1) == texts
        assert corrupt.corrupt_texts(texts, kind, 1.0, 1) != texts
        assert corrupt.corrupt_texts(texts, kind, 0.7, 3) == corrupt.corrupt_texts(texts, kind, 0.7, 3)
    for kind in corrupt.KINDS["audio"]:
        assert torch.equal(corrupt.corrupt_audio(db, lengths, kind, 0.0, 1), db)
        one = corrupt.corrupt_audio(db, lengths, kind, 1.0, 1)
        assert torch.isfinite(one).all() and not torch.equal(one, db), kind
        assert torch.equal(one, corrupt.corrupt_audio(db, lengths, kind, 1.0, 1))


def test_single_corruption_through_the_cli(trained):
    clean = evaluate(trained)["accuracy"]
    hit = evaluate(trained, "--corrupt", "text:word_dropout@1.0")
    assert hit["corrupted"] == ["text:word_dropout@1.0"] and hit["accuracy"] < clean - 0.05
    assert evaluate(trained, "--corrupt", "image:blur@0")["accuracy"] == clean


def test_robustness_sweep_curves_fall_with_the_level(trained):
    result = json.loads(ok(RUNNER.invoke(app, ["evaluate", str(trained), "--robustness", "--json"])).stdout)
    assert result["levels"] == [round(i / 10, 1) for i in range(11)]
    assert set(result["curves"]) == {"image", "audio", "text"}
    assert set(result["curves"]["image"]) == set(corrupt.KINDS["image"])
    for m, kinds in result["curves"].items():
        for kind, curve in kinds.items():
            assert len(curve) == 11 and curve[0] == result["clean"]
            assert all(b <= a + NOISE for a, b in zip(curve, curve[1:])), (m, kind, curve)
            rel = result["relative_robustness"][m][kind]
            assert min(curve) - 1e-9 <= rel <= max(curve) + 1e-9
            assert math.isclose(result["effective_robustness"][m][kind], sum(c - curve[0] for c in curve))
    # the strongest level costs accuracy; a lot where the model leans on the modality (text)
    for m, kind in (("image", "occlusion"), ("audio", "white_noise"), ("text", "typos")):
        curve = result["curves"][m][kind]
        assert curve[-1] < curve[0], (m, kind, curve)
    curve = result["curves"]["text"]["word_dropout"]
    assert curve[-1] < curve[0] - 0.1, curve
    for m in ("image", "audio", "text"):
        assert (trained / f"robustness-{m}.png").stat().st_size > 1000
    assert json.loads((trained / "robustness.json").read_text())["clean"] == result["clean"]


def test_predictions_with_a_missing_modality_use_the_mask(trained, toy):
    from mmcli.inference import predict_records, records_from_dicts
    from mmcli.pipeline import load_run

    run = load_run(trained)
    base = toy.parent
    items = [{"id": "all", "image": str(base / "images/00001.png"), "audio": str(base / "audio/00001.wav"), "text": "a crimson roundish thing"},
             {"id": "no-audio", "image": str(base / "images/00001.png"), "text": "a crimson roundish thing"},
             {"id": "text-only", "text": "a crimson roundish thing"}]
    preds = predict_records(run, records_from_dicts(run, items, Path.cwd(), "test"), top_k=12)
    assert [p["modalities_used"] for p in preds] == [["image", "audio", "text"], ["image", "text"], ["text"]]
    for p in preds:
        values = list(p["probabilities"].values())
        assert all(math.isfinite(v) for v in values) and sum(values) == pytest.approx(1.0, abs=1e-3)
    assert preds[0]["probabilities"] != preds[1]["probabilities"]


def test_modality_dropout_makes_a_missing_modality_cost_less(toy, trained, tmp_path):
    """Mean over 3 seeds of (accuracy with all - accuracy without text); measured values are
    in docs/robustness.md. Margin: dropout must cut the loss by at least 0.05. Rate 0 with
    seed 0 is the config of `trained`, which is not trained a second time."""
    from mmcli.evaluation.api import evaluate_run
    from mmcli.training.api import train

    assert _config(toy, 0, modality_dropout=0.0).to_dict() == _config(toy).to_dict()
    losses = {}
    for rate in (0.0, 0.5):
        per_seed = []
        for seed in (0, 1, 2):
            if (rate, seed) == (0.0, 0):
                run = trained
            else:
                run = train(_config(toy, seed, modality_dropout=rate), tmp_path / f"r{rate}-{seed}").run_dir
            clean = evaluate_run(run, save=False)["accuracy"]
            per_seed.append(clean - evaluate_run(run, drops=["text"], save=False)["accuracy"])
        losses[rate] = sum(per_seed) / 3
    assert losses[0.5] < losses[0.0] - 0.05, losses
