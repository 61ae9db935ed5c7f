"""OpenCLIP towers (`image.openclip`, `text.openclip`) through the real CLI, on a tiny
OpenCLIP model built from a custom config and saved as a local checkpoint: retrieval
trained frozen and fine-tuned, zero-shot retrieval and classification against counts made
by hand with the model's own encode_image / encode_text, and the offline failure."""

from __future__ import annotations

import csv
import json
import os
import shutil
import time
from pathlib import Path

import pytest
import torch

open_clip = pytest.importorskip("open_clip", reason="the openclip extra: pip install -e '.[openclip]'")

TINY = {"embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> tuple[Path, Path, object]:
    """(its JSON config, its checkpoint, the model)."""
    folder = tmp_path_factory.mktemp("tiny-openclip")
    torch.manual_seed(0)
    model = open_clip.CLIP(**TINY).eval()
    (folder / "tiny.json").write_text(json.dumps(TINY), encoding="utf-8")
    torch.save(model.state_dict(), folder / "tiny.pt")
    return folder / "tiny.json", folder / "tiny.pt", model


@pytest.fixture(scope="module")
def pairs(toy_small, tmp_path_factory) -> Path:
    """The toy captions with a split column: 120 train, 24 val, 48 test rows."""
    source = toy_small.parent
    out = tmp_path_factory.mktemp("pairs")
    shutil.copytree(source / "images", out / "images")
    rows = list(csv.DictReader(open(source / "captions.csv", encoding="utf-8")))[:192]
    with open(out / "captions.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, ["id", "image", "caption", "split"])
        writer.writeheader()
        for i, row in enumerate(rows):
            writer.writerow({**row, "split": "train" if i < 120 else "val" if i < 144 else "test"})
    return out / "captions.csv"


def _config(folder: Path, tiny_clip, trainable: bool, projection: str) -> Path:
    config, weights, _ = tiny_clip
    options = {"model": str(config), "weights": str(weights), "trainable": trainable}
    text = json.dumps({"model": {"task": "retrieval", "encoders": {"image": "openclip", "text": "openclip"},
                                 "encoder_options": {"image.openclip": options, "text.openclip": options},
                                 "task_options": {"projection": projection}},
                       "train": {"epochs": 1, "batch_size": 32, "seed": 0}})
    path = folder / f"{trainable}-{projection}.yaml"
    path.write_text(text, encoding="utf-8")  # JSON is YAML
    return path


@pytest.fixture(scope="module")
def zero_shot_run(pairs, tiny_clip, tmp_path_factory) -> Path:
    """Frozen towers, no projection: only the temperature trains, which ranks nothing."""
    from typer.testing import CliRunner

    from mmcli.cli import app

    folder = tmp_path_factory.mktemp("zs")
    before = os.environ.get("MMCLI_VERBOSE")  # `-v` sets it: not for later tests
    try:
        result = CliRunner().invoke(app, [str(a) for a in ("-v", "train", pairs, "--config",
                                                           _config(folder, tiny_clip, False, "none"), "--out", folder / "run")])
    finally:
        os.environ.pop("MMCLI_VERBOSE", None) if before is None else os.environ.update(MMCLI_VERBOSE=before)
    assert result.exit_code == 0, result.output
    for name in ("image", "caption"):  # frozen: their features computed once, through the feature cache
        assert f"feature cache miss: computed {name} features" in result.output
    return folder / "run"


def _images(paths: list[Path]) -> torch.Tensor:
    from mmcli.config import DataConfig
    from mmcli.data.decode import decode_image, normalize_image
    from mmcli.encoders.openclip import OPENAI_MEAN, OPENAI_STD

    data = DataConfig(image_size=32, image_mean=OPENAI_MEAN, image_std=OPENAI_STD)
    return normalize_image(torch.stack([decode_image(p, data) for p in paths]), data)


@torch.no_grad()
def _embed(model, images: list[Path], texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    tokens = open_clip.SimpleTokenizer(context_length=16)(texts)
    return (torch.nn.functional.normalize(model.encode_image(_images(images)), dim=-1),
            torch.nn.functional.normalize(model.encode_text(tokens), dim=-1))


def test_zero_shot_retrieval_is_the_models_own_recall(cli, zero_shot_run, pairs, tiny_clip):
    result = cli("evaluate", zero_shot_run, "--json")
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout.strip().splitlines()[-1])
    rows = [r for r in csv.DictReader(open(pairs, encoding="utf-8")) if r["split"] == "test"]
    captions = list(dict.fromkeys(r["caption"] for r in rows))  # the gallery holds each distinct caption once
    image, text = _embed(tiny_clip[2], [pairs.parent / r["image"] for r in rows], captions)
    similarity = image @ text.t()
    image_hits = sum(captions[int(similarity[i].argmax())] == r["caption"] for i, r in enumerate(rows))
    text_hits = sum(rows[int(similarity[:, j].argmax())]["caption"] == c for j, c in enumerate(captions))
    assert scores["n_examples"] == len(rows) == 48
    assert scores["image_to_caption_R@1"] == pytest.approx(image_hits / len(rows))
    assert scores["caption_to_image_R@1"] == pytest.approx(text_hits / len(captions))
    weights = _weights(zero_shot_run)
    assert torch.equal(weights["encoders.image.visual.conv1.weight"], tiny_clip[2].visual.conv1.weight)


def _weights(run: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(run / "best.safetensors"))


def test_zero_shot_classification_is_the_models_own_accuracy(cli, zero_shot_run, toy_small, tiny_clip):
    manifest = toy_small.parent / "manifest.csv"
    result = cli("evaluate", zero_shot_run, "--zero-shot", manifest, "--prompt", "a drawing of a {label}", "--json")
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout.strip().splitlines()[-1])
    rows = list(csv.DictReader(open(manifest, encoding="utf-8")))
    classes = sorted({r["label"] for r in rows})
    image, text = _embed(tiny_clip[2], [manifest.parent / r["image"] for r in rows],
                         [f"a drawing of a {c}" for c in classes])
    predicted = (image @ text.t()).argmax(dim=1)
    hits = sum(classes[int(p)] == r["label"] for p, r in zip(predicted, rows))
    assert scores["n_examples"] == len(rows) and scores["n_classes"] == len(classes) == 12
    assert scores["accuracy"] == pytest.approx(hits / len(rows))
    assert (zero_shot_run / "zero-shot-manifest.json").is_file()


def test_fine_tuned_towers_train_and_move(cli, pairs, tiny_clip, tmp_path):
    """... and the run rebuilds both towers without the model's config and checkpoint files."""
    copies = (tmp_path / "model" / "tiny.json", tmp_path / "model" / "tiny.pt")
    copies[0].parent.mkdir()
    for source, copy in zip(tiny_clip[:2], copies):
        shutil.copyfile(source, copy)
    result = cli("train", pairs, "--config", _config(tmp_path, (*copies, tiny_clip[2]), True, "linear"),
                 "--out", tmp_path / "run", "-q")
    assert result.exit_code == 0, result.output
    scores = json.loads((tmp_path / "run" / "eval-test.json").read_text(encoding="utf-8"))
    assert 0 <= scores["mean_recall"] <= 1 and scores["n_examples"] == 48
    weights = _weights(tmp_path / "run")
    assert not torch.equal(weights["encoders.image.visual.conv1.weight"], tiny_clip[2].visual.conv1.weight)
    assert not torch.equal(weights["encoders.caption.tower.token_embedding.weight"], tiny_clip[2].token_embedding.weight)
    result = cli("predict", tmp_path / "run", "--query-text", "a big red circle", "--index", pairs, "--top-k", "2")
    assert result.exit_code == 0, result.output
    shutil.rmtree(copies[0].parent)
    again = cli("predict", tmp_path / "run", "--query-text", "a big red circle", "--index", pairs, "--top-k", "2")
    assert again.exit_code == 0 and again.stdout == result.stdout, again.output


def test_projection_none_needs_one_size(cli, pairs, tiny_clip, tmp_path):
    config = _config(tmp_path, tiny_clip, False, "none")
    result = cli("train", pairs, "--config", config, "--set", "model.encoders.text=bag", "--out", tmp_path / "run")
    assert result.exit_code == 2
    assert "projection=none" in result.output and "caption 128" in result.output


def test_no_local_checkpoint_fails_at_once_before_decoding(cli, tmp_path):
    manifest = tmp_path / "broken.csv"
    (tmp_path / "a.png").write_bytes(b"not an image")  # decoding it would be a data error, not the message below
    manifest.write_text("image,caption\n" + "a.png,a cat\n" * 8, encoding="utf-8")
    start = time.monotonic()
    result = cli("train", manifest, "--task", "retrieval", "--set", "model.encoders.image=openclip",
                 "--set", "model.encoder_options.image.openclip.model=ViT-B-32", "--out", tmp_path / "run")
    took = time.monotonic() - start
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "ViT-B-32" in text and "weights=PATH" in text and "never downloads" in text
    assert "not an image" not in text and "a.png" not in text
    assert took < 1.0, f"{took:.2f} s"
    assert not (tmp_path / "run").exists()


def test_the_tokenizer_gives_open_clips_ids():
    from mmcli.data.text import PretrainedTokenizer, encode
    from mmcli.encoders.openclip import clip_tokenizer

    texts = ["a big green triangle at the bottom right", "It's the dog's 2nd   toy!!  Ünïcode café", "",
             "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen"]
    ours = (encode(PretrainedTokenizer(clip_tokenizer(), 16), texts) - 1).clamp(min=0)  # mmcli shifts ids by one
    assert torch.equal(ours, open_clip.SimpleTokenizer(context_length=16)(texts))
