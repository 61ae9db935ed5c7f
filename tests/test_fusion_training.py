"""Fusions trained for real on small data: each beats the best single modality on the
toy set, and learned weights move towards the informative modality."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from mmcli.compare.runner import run_compare
from mmcli.config import from_dict
from mmcli.fusion import FUSIONS

# a fusion must beat the best unimodal variant by this many accuracy points
MARGIN = 0.10


def test_every_fusion_beats_the_best_single_modality(toy_1200, tmp_path):
    """15 short runs, two at a time (`--jobs 2`, one torch thread each). Small image, mel
    and feature sizes keep it fast; the smallest margin measured with this budget was
    0.17 (transformer, best single modality 0.40), with one run at a time and with two."""
    config = from_dict({
        "data": {"manifest": str(toy_1200), "image_size": 32, "n_mels": 32, "max_seconds": 1.0, "text_max_len": 16},
        "model": {"feature_dim": 64, "hidden_dim": 64},
        "train": {"epochs": 6, "patience": 0, "batch_size": 32},
    })
    result = run_compare(config, ["unimodal", "multimodal:all"], seeds=1, out=tmp_path / "cmp", jobs=2)
    by = {r["variant"]: r["mean"] for r in result.summary}
    best_uni = max(v for k, v in by.items() if k.startswith("unimodal:"))
    fusions = [n for n in FUSIONS.names() if n != "identity"]
    learned = {k: v for k, v in by.items() if k.startswith("multimodal:") and k != "multimodal:ensemble"}
    assert "multimodal:ensemble" in by  # the average of the unimodal runs: not a fusion, so not held to the margin
    assert sorted(k.split(":")[1] for k in learned) == sorted(fusions)
    short = {k: round(v, 3) for k, v in learned.items() if v < best_uni + MARGIN}
    assert not short, f"best unimodal {best_uni:.3f}; below it + {MARGIN}: {short}"


def _noise_and_tone_manifest(folder: Path, n: int = 90) -> Path:
    """Images of pure noise (no information) and tones whose pitch is the label."""
    import soundfile
    from PIL import Image

    rng = np.random.default_rng(5)
    (folder / "img").mkdir(parents=True)
    (folder / "wav").mkdir()
    rows = []
    for i in range(n):
        label = i % 3
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / "img" / f"{i}.png")
        t = np.arange(8000) / 16000.0
        tone = 0.4 * np.sin(2 * np.pi * (300, 800, 2000)[label] * t) + 0.02 * rng.standard_normal(t.size)
        soundfile.write(folder / "wav" / f"{i}.wav", tone.astype(np.float32), 16000)
        rows.append({"image": f"img/{i}.png", "audio": f"wav/{i}.wav", "label": f"c{label}"})
    path = folder / "manifest.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_weighted_fusion_learns_to_trust_the_informative_modality(tmp_path):
    from mmcli.training.api import train

    manifest = _noise_and_tone_manifest(tmp_path / "data")
    config = from_dict({"data": {"manifest": str(manifest), "image_size": 32, "max_seconds": 0.5},
                        "model": {"fusion": "weighted"}, "train": {"epochs": 6, "patience": 0, "batch_size": 16}})
    outcome = train(config, tmp_path / "run")
    from mmcli.pipeline import load_run

    model = load_run(outcome.run_dir, "last").model
    weights = dict(zip(model.fusion.names, torch.softmax(model.fusion.logits.detach(), dim=0).tolist()))
    assert weights["audio"] > 0.5 > weights["image"], weights
    assert outcome.test_scores["accuracy"] > 0.6
