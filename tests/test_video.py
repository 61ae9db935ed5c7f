"""The video kind end to end (issue 21): detected by suffix with its sound track beside
it, decoded into the cache, trained with the temporal encoder, corrupted, predicted from a
file outside the data, searched and captioned, and a frozen per-frame backbone's features
read from the feature cache on a second run. Clips are made here, written as real MP4
files through PyAV: a square that moves left or right (one frame cannot tell which) with a
tone whose pitch says the same. A clip to the left is a clip to the right played backwards,
the same frames: only their order says the direction."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("av")

FRAMES, SIZE, FPS, RATE = 8, 32, 8, 16000


def _clip(direction: str, rng: np.random.Generator, start: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    frames = np.zeros((FRAMES, SIZE, SIZE, 3), dtype=np.uint8)
    x0 = int(rng.integers(0, 4)) if start is None else start
    row = int(rng.integers(4, SIZE - 12))
    for t in range(FRAMES):
        x = x0 + 2 * (t if direction == "right" else FRAMES - 1 - t)  # the same places, in the other order
        frames[t, row:row + 8, x:x + 8] = 255
    seconds = FRAMES / FPS
    tone = 440.0 if direction == "right" else 880.0
    audio = 0.3 * np.sin(2 * np.pi * tone * np.arange(int(seconds * RATE)) / RATE).astype(np.float32)
    return frames, audio


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    from mmcli.data.video import write_video

    folder = tmp_path_factory.mktemp("clips")
    rng = np.random.default_rng(0)
    rows = ["id,clip,caption,label"]
    for i in range(64):
        direction = "right" if i % 2 else "left"
        frames, audio = _clip(direction, rng)
        write_video(folder / f"c{i}.mp4", frames, FPS, audio, RATE)
        rows.append(f"c{i},c{i}.mp4,a white square moves to the {direction},{direction}")
    (folder / "manifest.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    frames, audio = _clip("right", np.random.default_rng(99), start=2)
    outside = tmp_path_factory.mktemp("outside") / "new.mp4"
    write_video(outside, frames, FPS, audio, RATE)
    return folder


SMALL = ["--set", f"data.video_frames={FRAMES}", "--set", f"data.image_size={SIZE}", "--workers", "1"]


def test_a_video_column_is_detected_with_its_sound_track(clips):
    from mmcli.config import DataConfig
    from mmcli.data.manifest import detect_modalities, read_manifest

    found = detect_modalities(read_manifest(clips / "manifest.csv"), DataConfig())
    assert {n: (m.kind, m.column) for n, m in found.items()} == {
        "clip": ("video", "clip"), "clip_audio": ("audio", "clip"), "caption": ("text", "caption")}


@pytest.fixture(scope="module")
def video_run(clips, tmp_path_factory) -> Path:
    from typer.testing import CliRunner

    from mmcli.cli import app

    out = tmp_path_factory.mktemp("runs") / "video"
    result = CliRunner().invoke(app, ["train", str(clips / "manifest.csv"), "--modalities", "clip", "--out", str(out),
                                      "--epochs", "20", "--seed", "0", *SMALL])
    assert result.exit_code == 0, result.output
    return out


def test_the_temporal_encoder_learns_which_way_the_square_moves(video_run):
    """No single frame says the direction: only the order of the frames does."""
    scores = json.loads((video_run / "eval-test.json").read_text())
    assert scores["accuracy"] >= 0.8, scores
    assert json.loads((video_run / "data.json").read_text())["modalities"]["clip"]["kind"] == "video"


def test_predict_reads_a_video_outside_the_data(video_run, clips, cli):
    outside = next(clips.parent.glob("outside*/new.mp4"))
    result = cli("predict", str(video_run), "--video", str(outside))
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)
    assert row["label"] == "right" and row["modalities_used"] == ["clip"], row


def test_shuffling_the_frames_in_time_costs_what_the_order_carried(video_run, cli):
    clean = json.loads((video_run / "eval-test.json").read_text())["accuracy"]
    result = cli("evaluate", str(video_run), "--corrupt", "clip:temporal_shuffle@1")
    assert result.exit_code == 0, result.output
    shuffled = json.loads(result.stdout)["accuracy"]
    assert shuffled < clean, (shuffled, clean)


def test_each_video_corruption_does_what_it_says():
    from mmcli.evaluation.corrupt_video import corrupt_video

    x = torch.arange(1, 9, dtype=torch.uint8).view(1, 8, 1, 1, 1).expand(2, 8, 3, 4, 4).contiguous()
    lengths = torch.tensor([8, 4])
    dropped = corrupt_video(x, lengths, "dropped_frames", 0.5, 0)
    assert (dropped[0, :, 0, 0, 0] == 0).sum() == 4 and (dropped[1, :, 0, 0, 0] == 0).sum() == 2
    assert torch.equal(dropped[1, 4:], x[1, 4:])  # padding frames are not real frames
    frozen = corrupt_video(x, lengths, "frozen_frames", 1.0, 0)
    assert frozen[0, :, 0, 0, 0].tolist() == [1] * 8  # each frame the one before it
    shuffled = corrupt_video(x, lengths, "temporal_shuffle", 1.0, 3)
    assert sorted(shuffled[0, :, 0, 0, 0].tolist()) == list(range(1, 9))
    assert shuffled[0, :, 0, 0, 0].tolist() != list(range(1, 9))
    assert shuffled[1, 4:, 0, 0, 0].tolist() == [5, 6, 7, 8]
    noisy = corrupt_video(x, lengths, "noise", 1.0, 0)
    assert noisy.shape == x.shape and not torch.equal(noisy, x)
    assert torch.equal(corrupt_video(x, lengths, "noise", 0.0, 0), x)


def test_retrieval_finds_a_clip_from_its_caption(clips, tmp_path, cli):
    out = tmp_path / "ret"
    result = cli("train", str(clips / "manifest.csv"), "--task", "retrieval", "--modalities", "clip,caption",
                 "--out", str(out), "--epochs", "3", *SMALL)
    assert result.exit_code == 0, result.output
    found = cli("predict", str(out), "--query-text", "a white square moves to the left", "--index",
                str(clips / "manifest.csv"), "--top-k", "3")
    assert found.exit_code == 0, found.output
    rows = [json.loads(line) for line in found.stdout.splitlines()]
    assert len(rows) == 3 and [r["rank"] for r in rows] == [1, 2, 3]
    by_video = cli("predict", str(out), "--query-video", str(clips / "c1.mp4"), "--index", str(clips / "manifest.csv"))
    assert by_video.exit_code == 0, by_video.output


def test_a_caption_is_written_from_a_video(clips, tmp_path, cli):
    out = tmp_path / "cap"
    result = cli("train", str(clips / "manifest.csv"), "--task", "captioning", "--modalities", "clip,caption",
                 "--out", str(out), "--epochs", "2", *SMALL)
    assert result.exit_code == 0, result.output
    written = cli("predict", str(out), "--video", str(clips / "c3.mp4"))
    assert written.exit_code == 0, written.output
    assert isinstance(json.loads(written.stdout)["caption"], str)


def test_a_frozen_per_frame_backbone_reads_its_features_from_the_cache_the_second_time(clips, tmp_path, isolated_cache):
    from mmcli.config import from_dict
    from mmcli.training.api import train
    from mmcli.training.features import features_dir

    def run(name: str):
        config = from_dict({"data": {"manifest": str(clips / "manifest.csv"), "video_frames": FRAMES, "image_size": SIZE},
                            "model": {"modalities": ["clip"], "encoders": {"clip": "resnet18"},
                                      "encoder_options": {"clip": {"trainable": False}}},
                            "train": {"epochs": 2, "seed": 1}})
        return train(config, tmp_path / name).result.history

    shutil.rmtree(features_dir(None), ignore_errors=True)
    first = run("first")
    entries = sorted(features_dir(None).iterdir())
    assert len(entries) == 3  # the training, validation and test split's frame features (scored after training)
    stamps = [p.stat().st_mtime_ns for p in entries]
    again = run("again")
    assert [p.stat().st_mtime_ns for p in sorted(features_dir(None).iterdir())] == stamps  # read, not written
    assert [h["train_loss"] for h in again] == [h["train_loss"] for h in first]


def test_datasets_get_av_moving_mnist_writes_clips_with_their_digit_spoken(cli, tmp_path):
    from conftest import SHARED_DATA

    from mmcli.data.video import probe

    if not (Path(SHARED_DATA) / "mnist").is_dir() or not (Path(SHARED_DATA) / "fsdd").is_dir():
        pytest.skip(f"needs mnist and fsdd in {SHARED_DATA}")
    out = tmp_path / "avmm"
    result = cli("datasets", "get", "av-moving-mnist", str(out), "--source", str(SHARED_DATA), "--n", "12",
                 "--frames", "4", "--size", "32", "--quiet")
    assert result.exit_code == 0, result.output
    rows = (out / "manifest.csv").read_text().splitlines()
    assert rows[0] == "id,video,label,split" and len(rows) == 13
    info = probe(out / rows[1].split(",")[1])
    assert info.has_audio and info.width == 32 and info.frames == 4
    assert json.loads((out / "recipe.json").read_text())["recipe"] == "av-moving-mnist"


def test_datasets_import_videofolder_writes_a_manifest(clips, tmp_path, cli):
    for label in ("left", "right"):
        (tmp_path / "videos" / label).mkdir(parents=True)
    for i in range(4):
        shutil.copy(clips / f"c{i}.mp4", tmp_path / "videos" / ("right" if i % 2 else "left") / f"c{i}.mp4")
    result = cli("datasets", "import", "videofolder", str(tmp_path / "videos"))
    assert result.exit_code == 0, result.output
    lines = (tmp_path / "videos" / "manifest.csv").read_text().splitlines()
    assert lines[0] == "id,video,label" and len(lines) == 5


def test_a_3d_video_network_loads_a_weights_file_and_asks_for_its_clip_size(tmp_path):
    import torchvision.models.video as tvv

    from mmcli.config import from_dict
    from mmcli.encoders import ENCODERS, ModalitySpec
    from mmcli.models import wanted_preprocessing

    source = tvv.mc3_18(weights=None)
    torch.save(source.state_dict(), tmp_path / "mc3.pth")
    spec = ModalitySpec("clip", "video", image_size=32)
    encoder = ENCODERS.get("video.mc3_18")(spec, 16, weights=str(tmp_path / "mc3.pth"))
    assert torch.equal(encoder.body[0][0].weight, source.stem[0].weight) and encoder.trained_parts == ("body.",)
    out = encoder(torch.randn(2, 4, 3, 32, 32))
    assert out.pooled.shape == (2, 16) and out.tokens.shape[0] == 2
    config = from_dict({"model": {"encoders": {"clip": "mc3_18"}, "encoder_options": {"clip": {"weights": "mc3.pth"}}}})
    assert wanted_preprocessing(config, {"clip": "video"})["image_size"] == 112  # the weights' crop
