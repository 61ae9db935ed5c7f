"""Tests for the built-in toy data set generator (mmcli.data.toy)."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from mmcli.data.toy import TOY_CLASSES, make_toy

N = 60  # 5 examples per class: small enough to be fast, large enough to check balance


def _rows(manifest: Path) -> list[dict[str, str]]:
    with open(manifest, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_toy(tmp_path_factory.mktemp("toy") / "data", n=N, seed=0)


def test_classes_are_sorted_and_complete() -> None:
    assert TOY_CLASSES == sorted(TOY_CLASSES)
    assert len(TOY_CLASSES) == 12
    assert "red-circle-small" in TOY_CLASSES


def test_manifest_columns_and_rows(toy: Path) -> None:
    assert toy.name == "manifest.csv"
    with open(toy, newline="", encoding="utf-8") as fh:
        header = next(csv.reader(fh))
    assert header == ["id", "image", "audio", "text", "label"]
    rows = _rows(toy)
    assert len(rows) == N
    assert rows[17]["id"] == "00017"
    assert rows[17]["image"] == "images/00017.png"
    assert rows[17]["audio"] == "audio/00017.wav"
    assert not list(toy.parent.glob("*.tmp"))


def test_files_exist_and_decode(toy: Path) -> None:
    root = toy.parent
    for row in _rows(toy):
        with Image.open(root / row["image"]) as img:
            assert img.format == "PNG"
            assert img.mode == "RGB"
            assert img.size == (64, 64)
        info = sf.info(str(root / row["audio"]))
        assert info.channels == 1
        assert info.samplerate == 16_000
        assert info.subtype == "PCM_16"
        assert 0.5 <= info.duration <= 0.9
        assert row["text"].strip()


def test_labels_valid_and_balanced(toy: Path) -> None:
    counts = Counter(row["label"] for row in _rows(toy))
    assert set(counts) <= set(TOY_CLASSES)
    assert counts == {label: N // 12 for label in TOY_CLASSES}


def test_same_seed_is_byte_identical(toy: Path, tmp_path: Path) -> None:
    again = make_toy(tmp_path / "again", n=N, seed=0)
    assert again.read_bytes() == toy.read_bytes()
    assert (again.parent / "images/00007.png").read_bytes() == (
        toy.parent / "images/00007.png"
    ).read_bytes()
    assert (again.parent / "audio/00007.wav").read_bytes() == (
        toy.parent / "audio/00007.wav"
    ).read_bytes()


def test_different_seed_differs(toy: Path, tmp_path: Path) -> None:
    other = make_toy(tmp_path / "other", n=N, seed=1)
    assert other.read_bytes() != toy.read_bytes()


def test_existing_nonempty_out_raises(tmp_path: Path) -> None:
    out = tmp_path / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("do not overwrite")
    with pytest.raises(FileExistsError, match="busy"):
        make_toy(out, n=12)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_existing_empty_out_is_fine(tmp_path: Path) -> None:
    out = tmp_path / "empty"
    out.mkdir()
    assert len(_rows(make_toy(out, n=12))) == 12


def test_progress_reports_to_the_end(tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    make_toy(tmp_path / "p", n=120, progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (120, 120)
    assert all(total == 120 for _, total in calls)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)


def test_text_never_names_angular_shapes(toy: Path) -> None:
    for row in _rows(toy):
        words = row["text"].lower()
        assert "square" not in words
        assert "triangle" not in words


def test_audio_pitch_tells_size(toy: Path) -> None:
    root = toy.parent
    for row in _rows(toy):
        wave, sr = sf.read(str(root / row["audio"]), dtype="float32")
        spectrum = np.abs(np.fft.rfft(wave))
        peak_hz = float(np.fft.rfftfreq(len(wave), d=1.0 / sr)[int(np.argmax(spectrum))])
        if row["label"].endswith("-small"):
            assert peak_hz > 800, row
        else:
            assert peak_hz < 500, row
