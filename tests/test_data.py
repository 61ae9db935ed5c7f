"""Tests for the data layer: manifests, modality detection, splits, preprocessing, decoding.

Every test writes its own small files under tmp_path and uses its own cache folder.
"""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from conftest import write_own_manifest
from mmcli.config import DataConfig, ModalityConfig
from mmcli.data import preprocess as preprocess_module
from mmcli.data.decode import DecodeError, audio_frames, decode_audio, decode_image
from mmcli.data.manifest import detect_modalities, read_manifest
from mmcli.data.preprocess import preprocess
from mmcli.data.splits import assign_splits
from mmcli.errors import DataError, UsageError

# small preprocessing settings, to keep every test fast
SMALL = dict(image_size=16, n_mels=16, max_seconds=0.5)


def _small(**over) -> DataConfig:
    return DataConfig(**{**SMALL, **over})


def _read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _write_rows(path: Path, rows: list[dict[str, str]], fieldnames: list[str] | None = None) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fieldnames or list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


# --------------------------------------------------------------------------- read_manifest


def test_csv_tsv_jsonl_read_the_same_rows(tmp_path):
    manifests = {fmt: read_manifest(write_own_manifest(tmp_path / fmt, 6, fmt)) for fmt in ("csv", "tsv", "jsonl")}
    csv_m = manifests["csv"]
    assert csv_m.columns == ["id", "photo", "sound", "caption", "label"]
    assert len(csv_m.rows) == 6
    assert csv_m.rows[1] == {"id": "ex1", "photo": "pics/p1.png", "sound": "clips/c1.wav",
                             "caption": "a photo of a dog number 1", "label": "dog"}
    for fmt in ("tsv", "jsonl"):
        assert manifests[fmt].columns == csv_m.columns, fmt
        assert manifests[fmt].rows == csv_m.rows, fmt
    assert csv_m.lines == [2, 3, 4, 5, 6, 7]
    assert manifests["jsonl"].lines == [1, 2, 3, 4, 5, 6]
    assert csv_m.root == tmp_path / "csv"


def test_jsonl_values_become_strings_and_missing_keys_empty(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"id": 1, "text": "hi", "label": null}\n\n{"id": "b", "text": "yo", "extra": true}\n', encoding="utf-8")
    m = read_manifest(path)
    assert m.columns == ["id", "text", "label", "extra"]
    assert m.rows == [{"id": "1", "text": "hi", "label": "", "extra": ""},
                      {"id": "b", "text": "yo", "label": "", "extra": "true"}]
    assert m.lines == [1, 3]


def test_folder_holding_manifest_csv(tmp_path):
    written = write_own_manifest(tmp_path / "own", 4)
    written.rename(written.parent / "manifest.csv")
    m = read_manifest(tmp_path / "own")
    assert m.path.name == "manifest.csv"
    assert len(m.rows) == 4 and m.rows[0]["id"] == "ex0"


def test_folder_without_manifest_and_missing_path(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="manifest"):
        read_manifest(tmp_path / "empty")
    with pytest.raises(UsageError, match="no such file"):
        read_manifest(tmp_path / "nope.csv")


def test_utf8_bom_is_ignored(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbfid,text,label\n1,caf\xc3\xa9,a\n")
    m = read_manifest(path)
    assert m.columns == ["id", "text", "label"]
    assert m.rows == [{"id": "1", "text": "caf\u00e9", "label": "a"}]


def test_wrong_field_count_reports_row_and_line(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("id,text,label\n1,hello,a\n\n2,hi,b,extra\n3,yo\n4,ok,c\n", encoding="utf-8")
    with pytest.raises(DataError) as info:
        read_manifest(path)
    rows = info.value.rows
    assert [(r.row, r.line) for r in rows] == [(2, 4), (3, 5)]  # the blank line is no row, but is a line
    assert all(r.file == "m.csv" for r in rows)
    assert "4 fields" in rows[0].reason and "2 fields" in rows[1].reason
    message = str(info.value)
    assert "row 2 (line 4)" in message and "row 3 (line 5)" in message


def test_line_of_a_multiline_row_is_where_it_starts(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text('id,text,label\n1,"two\nlines",a\n2,b,c\n', encoding="utf-8")
    m = read_manifest(path)
    assert m.rows[0]["text"] == "two\nlines"
    assert m.lines == [2, 4]


@pytest.mark.parametrize("content", [b"id,text,label\n", b"id,text,label\n\n\n", b""])
def test_no_rows_is_a_data_error(tmp_path, content):
    path = tmp_path / "m.csv"
    path.write_bytes(content)
    with pytest.raises(DataError):
        read_manifest(path)


def test_empty_jsonl_is_a_data_error(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text("\n", encoding="utf-8")
    with pytest.raises(DataError, match="no rows"):
        read_manifest(path)


def test_bad_jsonl_lines_are_all_reported(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"id": 1}\nnot json\n[1, 2]\n{"id": 2}\n', encoding="utf-8")
    with pytest.raises(DataError) as info:
        read_manifest(path)
    assert [r.line for r in info.value.rows] == [2, 3]


def test_non_utf8_is_a_data_error(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("id,text,label\n1,ok,a\n2,caf\u00e9,b\n".encode("latin-1"))
    with pytest.raises(DataError) as info:
        read_manifest(path)
    assert "UTF-8" in str(info.value)
    assert "line 3" in str(info.value)


def test_bad_header_is_reported(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("id,text,text,\n1,a,b,c\n", encoding="utf-8")
    with pytest.raises(DataError) as info:
        read_manifest(path)
    assert {r.column for r in info.value.rows} == {"text", "#4"}
    semi = tmp_path / "semi.csv"
    semi.write_text("id;text;label\n1;a;b\n", encoding="utf-8")
    with pytest.raises(DataError, match="delimiter"):
        read_manifest(semi)


# --------------------------------------------------------------------------- detect_modalities


def _manifest_with_extra_columns(tmp_path: Path) -> Path:
    path = write_own_manifest(tmp_path / "own", 6)
    rows = _read_rows(path)
    for i, row in enumerate(rows):
        row["split"] = ["train", "val", "test"][i % 3]
        row["score"] = str(0.5 * i)
        row["count"] = str(i)
    return _write_rows(path, rows)


def test_detect_modalities_by_extension_and_strings(tmp_path):
    m = read_manifest(_manifest_with_extra_columns(tmp_path))
    found = detect_modalities(m, DataConfig())
    assert found == {
        "photo": ModalityConfig("photo", "image"),
        "sound": ModalityConfig("sound", "audio"),
        "caption": ModalityConfig("caption", "text"),
        # numeric columns together make one tabular modality
        "tabular": ModalityConfig(kind="tabular", columns=["score", "count"]),
    }


def test_detect_modalities_follows_the_configured_reserved_columns(tmp_path):
    m = read_manifest(_manifest_with_extra_columns(tmp_path))
    found = detect_modalities(m, DataConfig(label="caption"))
    assert "caption" not in found
    assert found["label"] == ModalityConfig("label", "text")  # no longer reserved: a string column


def test_detect_modalities_nothing_found(tmp_path):
    path = _write_rows(tmp_path / "m.csv", [{"id": "1", "split": "train", "label": "a"}])
    with pytest.raises(DataError, match="no image, video, audio, text or numeric column"):
        detect_modalities(read_manifest(path), DataConfig())


def test_declared_modalities_are_used_as_given(tmp_path):
    m = read_manifest(write_own_manifest(tmp_path / "own", 4))
    declared = {"pic": ModalityConfig("photo", "image"), "words": ModalityConfig("caption", "text")}
    assert detect_modalities(m, DataConfig(modalities=declared)) == declared


def test_declared_modality_with_missing_column(tmp_path):
    m = read_manifest(write_own_manifest(tmp_path / "own", 4))
    declared = {"pic": ModalityConfig("photo", "image"), "voice": ModalityConfig("recording", "audio")}
    with pytest.raises(DataError) as info:
        detect_modalities(m, DataConfig(modalities=declared))
    assert [r.column for r in info.value.rows] == ["recording"]
    assert "recording" in str(info.value) and "voice" in str(info.value)


# --------------------------------------------------------------------------- splits

LABELS = [c for c in ("a", "b", "c") for _ in range(20)] + ["d"] * 10


def test_stratified_split_per_class():
    splits = assign_splits(LABELS, None, seed=1, val_fraction=0.1, test_fraction=0.2)
    assert len(splits) == len(LABELS)
    assert set(splits) <= {"train", "val", "test"}
    for label, size in Counter(LABELS).items():
        mine = [s for s, lab in zip(splits, LABELS) if lab == label]
        counts = Counter(mine)
        assert counts["train"] >= 1, label
        assert abs(counts["test"] - 0.2 * size) <= 1, (label, counts)
        assert abs(counts["val"] - 0.1 * size) <= 1, (label, counts)


def test_every_class_keeps_a_training_example():
    labels = ["a", "a", "b", "c", "c", "c"]
    splits = assign_splits(labels, None, seed=0, val_fraction=0.4, test_fraction=0.4)
    for label in set(labels):
        assert "train" in [s for s, lab in zip(splits, labels) if lab == label], label


def test_split_is_deterministic_per_seed():
    first = assign_splits(LABELS, None, seed=7, val_fraction=0.1, test_fraction=0.2)
    again = assign_splits(list(LABELS), None, seed=7, val_fraction=0.1, test_fraction=0.2)
    other = assign_splits(LABELS, None, seed=8, val_fraction=0.1, test_fraction=0.2)
    assert first == again
    assert first != other
    assert Counter(first) == Counter(other)  # same shares, different examples


def test_given_split_column_is_respected():
    given = ["train", "val", "test"] * 4
    labels = ["a", "b"] * 6
    assert assign_splits(labels, given, seed=0, val_fraction=0.1, test_fraction=0.2) == given


def test_given_split_without_val_takes_val_from_train():
    labels = ["a", "b"] * 10
    given = ["test"] * 4 + ["train"] * 16
    splits = assign_splits(labels, given, seed=0, val_fraction=0.25, test_fraction=0.2)
    assert splits[:4] == ["test"] * 4  # test rows are never moved
    assert Counter(splits[4:]) == {"train": 12, "val": 4}
    assert assign_splits(labels, given, seed=0, val_fraction=0.0, test_fraction=0.2) == given


def test_empty_given_split_column_means_a_seeded_split():
    given = [""] * len(LABELS)
    assert assign_splits(LABELS, given, 3, 0.1, 0.2) == assign_splits(LABELS, None, 3, 0.1, 0.2)


def test_bad_split_value_is_reported_with_its_row():
    given = ["train", "Train", "test", "dev", "val"]
    with pytest.raises(DataError) as info:
        assign_splits(["a"] * 5, given, seed=0, val_fraction=0.1, test_fraction=0.2, source="m.csv")
    assert [(r.row, r.column) for r in info.value.rows] == [(2, "split"), (4, "split")]
    assert "Train" in str(info.value) and "dev" in str(info.value)


# --------------------------------------------------------------------------- preprocess


def test_preprocess_builds_a_table(tmp_path):
    path = write_own_manifest(tmp_path / "own", 6)
    table = preprocess(path, _small(), cache_dir=tmp_path / "cache")
    assert len(table) == 6
    assert table.ids == [f"ex{i}" for i in range(6)]
    assert table.labels == ["cat", "dog", "bird"] * 2
    assert table.kinds() == {"photo": "image", "sound": "audio", "caption": "text"}
    photo = table.tensors["photo"]
    assert photo.dtype == torch.uint8 and photo.shape == (6, 3, 16, 16)
    # the pictures are red, green, blue by label: the decoded pixels keep that
    assert photo[0, 0].float().mean() > photo[0, 2].float().mean() + 50
    assert photo[2, 2].float().mean() > photo[2, 0].float().mean() + 50
    frames = audio_frames(_small())
    assert table.tensors["sound"].shape == (6, 16, frames)
    lengths = table.tensors["sound.lengths"]
    assert lengths.shape == (6,)
    assert (lengths > 0).all() and (lengths <= frames).all()  # 0.5 s clips fill at most max_seconds
    assert table.texts["caption"][0] == "my cat in the garden"
    assert all(p.dtype == torch.bool and p.all() for p in table.present.values())
    assert table.bad_rows == []
    assert (tmp_path / "cache" / "tensors" / table.key / "table.json").is_file()


def test_second_call_hits_the_cache(tmp_path, monkeypatch):
    path = write_own_manifest(tmp_path / "own", 6)
    first = preprocess(path, _small(), cache_dir=tmp_path / "cache")

    def fail(*args, **kwargs):
        raise AssertionError("build_table was called although the cache holds the table")

    monkeypatch.setattr(preprocess_module, "build_table", fail)
    second = preprocess(path, _small(), cache_dir=tmp_path / "cache")
    assert second.key == first.key
    assert second.ids == first.ids and second.labels == first.labels and second.texts == first.texts
    for name, tensor in first.tensors.items():
        assert torch.equal(second.tensors[name], tensor), name
    # settings that are not preprocessing (vocab, text length) share the entry
    preprocess(path, _small(vocab_size=50, text_max_len=8), cache_dir=tmp_path / "cache")
    # and the monkeypatch is live: another cache folder would have to build
    with pytest.raises(AssertionError, match="build_table"):
        preprocess(path, _small(), cache_dir=tmp_path / "other-cache")


def test_cache_folder_itself_can_be_loaded(tmp_path):
    path = write_own_manifest(tmp_path / "own", 4)
    table = preprocess(path, _small(), cache_dir=tmp_path / "cache")
    again = preprocess(tmp_path / "cache" / "tensors" / table.key, _small(), cache_dir=tmp_path / "elsewhere")
    assert again.ids == table.ids and torch.equal(again.tensors["photo"], table.tensors["photo"])


def test_touching_a_file_or_changing_a_setting_changes_the_key(tmp_path, monkeypatch):
    path = write_own_manifest(tmp_path / "own", 6)
    cache_dir = tmp_path / "cache"
    first = preprocess(path, _small(), cache_dir=cache_dir)

    calls = []
    real = preprocess_module.build_table
    monkeypatch.setattr(preprocess_module, "build_table", lambda *a, **k: calls.append(1) or real(*a, **k))

    clip = tmp_path / "own" / "clips" / "c3.wav"
    stat = clip.stat()
    os.utime(clip, ns=(stat.st_atime_ns, stat.st_mtime_ns - 10_000_000_000))
    touched = preprocess(path, _small(), cache_dir=cache_dir)
    assert touched.key != first.key
    assert calls == [1]

    resized = preprocess(path, _small(image_size=8), cache_dir=cache_dir)
    assert resized.key not in (first.key, touched.key)
    assert resized.tensors["photo"].shape == (6, 3, 8, 8)
    assert calls == [1, 1]
    assert len(list((cache_dir / "tensors").iterdir())) == 3


def _bad_manifest(tmp_path: Path, n: int = 9) -> Path:
    """Rows 2..5 each hold one problem: missing file, corrupt image, empty text, empty label."""
    path = write_own_manifest(tmp_path / "own", n)
    rows = _read_rows(path)
    rows[1]["photo"] = "pics/missing.png"  # row 2: a missing file
    (tmp_path / "own" / "pics" / "p2.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage, not an image" * 3)  # row 3
    rows[3]["caption"] = ""  # row 4: empty text
    rows[4]["label"] = ""  # row 5: empty label
    return _write_rows(path, rows)


def test_row_checks_are_all_reported_at_once(tmp_path):
    path = write_own_manifest(tmp_path / "own", 9)
    outside = tmp_path / "outside.png"
    Image.new("RGB", (8, 8)).save(outside)
    rows = _read_rows(path)
    rows[1]["photo"] = "pics/missing.png"
    rows[2]["sound"] = str(tmp_path / "own" / "clips" / "c2.wav")  # absolute (and existing): fine
    rows[3]["caption"] = ""
    rows[4]["label"] = ""
    rows[5]["photo"] = "../outside.png"  # existing, outside the folder: fine, as absolute paths are
    rows[6]["photo"] = "pics/../../outside.png"
    rows[7]["id"] = "ex0"  # repeated id
    _write_rows(path, rows)
    with pytest.raises(DataError) as info:
        preprocess(path, _small(), cache_dir=tmp_path / "cache")
    got = [(r.row, r.column) for r in info.value.rows]
    assert got == [(2, "photo"), (4, "caption"), (5, "label"), (8, "id")]
    reasons = {r.row: r.reason for r in info.value.rows}
    assert "not found" in reasons[2]
    assert "empty" in reasons[4] and "empty" in reasons[5]
    assert "repeats row 1" in reasons[8]
    assert all(r.file == "data.csv" and r.line == r.row + 1 for r in info.value.rows)
    assert not (tmp_path / "cache" / "tensors").exists() or not any((tmp_path / "cache" / "tensors").iterdir())


def test_corrupt_image_is_reported_with_its_row(tmp_path):
    path = write_own_manifest(tmp_path / "own", 6)
    (tmp_path / "own" / "pics" / "p2.png").write_bytes(b"not an image at all")
    (tmp_path / "own" / "clips" / "c4.wav").write_text("this is text, not audio", encoding="utf-8")
    with pytest.raises(DataError) as info:
        preprocess(path, _small(), cache_dir=tmp_path / "cache")
    assert [(r.row, r.column) for r in info.value.rows] == [(3, "photo"), (5, "sound")]
    assert "p2.png" in info.value.rows[0].reason


def test_all_problems_are_reported_in_one_error(tmp_path):
    path = _bad_manifest(tmp_path)
    with pytest.raises(DataError) as info:
        preprocess(path, _small(), cache_dir=tmp_path / "cache")
    got = {(r.row, r.column) for r in info.value.rows}
    assert got == {(2, "photo"), (3, "photo"), (4, "caption"), (5, "label")}


def test_missing_label_column(tmp_path):
    path = write_own_manifest(tmp_path / "own", 4)
    rows = _read_rows(path)
    for row in rows:
        del row["label"]
    _write_rows(path, rows)
    with pytest.raises(DataError) as info:
        preprocess(path, _small(), cache_dir=tmp_path / "cache")
    assert "'label'" in str(info.value)
    assert [r.column for r in info.value.rows] == ["label"]
    # without a required label the same data preprocesses (prediction input)
    table = preprocess(path, _small(), cache_dir=tmp_path / "cache", require_label=False)
    assert len(table) == 4 and table.labels is None


def test_skip_leaves_bad_rows_out_and_writes_bad_rows_csv(tmp_path):
    path = _bad_manifest(tmp_path, n=9)
    table = preprocess(path, _small(on_error="skip"), cache_dir=tmp_path / "cache")
    assert table.ids == ["ex0", "ex5", "ex6", "ex7", "ex8"]
    assert table.labels == ["cat", "bird", "cat", "dog", "bird"]
    assert table.tensors["photo"].shape[0] == 5 and table.tensors["sound"].shape[0] == 5
    assert len(table.texts["caption"]) == 5
    assert {(r.row, r.column) for r in table.bad_rows} == {(2, "photo"), (3, "photo"), (4, "caption"), (5, "label")}
    report = tmp_path / "cache" / "tensors" / table.key / "bad_rows.csv"
    assert report.is_file()
    written = _read_rows(report)
    assert sorted((int(r["row"]), r["column"]) for r in written) == [(2, "photo"), (3, "photo"), (4, "caption"), (5, "label")]
    assert all(r["file"] == "data.csv" and r["reason"] for r in written)
    # the cached table remembers its bad rows
    again = preprocess(path, _small(on_error="skip"), cache_dir=tmp_path / "cache")
    assert again.ids == table.ids and len(again.bad_rows) == 4


def test_skip_with_no_usable_row_is_an_error(tmp_path):
    path = write_own_manifest(tmp_path / "own", 3)
    rows = _read_rows(path)
    for row in rows:
        row["label"] = ""
    _write_rows(path, rows)
    with pytest.raises(DataError, match="no usable rows") as info:
        preprocess(path, _small(on_error="skip"), cache_dir=tmp_path / "cache")
    assert len(info.value.rows) == 3


# --------------------------------------------------------------------------- decoding


def _check_image(tensor: torch.Tensor, size: int = 16) -> None:
    assert tensor.dtype == torch.uint8
    assert tensor.shape == (3, size, size)


def test_rgba_png_composites_on_white(tmp_path):
    pixels = np.zeros((20, 20, 4), dtype=np.uint8)
    pixels[:, :10] = (200, 0, 0, 255)  # opaque red on the left
    pixels[:, 10:] = (0, 0, 0, 0)  # transparent black on the right
    Image.fromarray(pixels, mode="RGBA").save(tmp_path / "rgba.png")
    out = decode_image(tmp_path / "rgba.png", _small())
    _check_image(out)
    assert out[:, :, :6].float().mean(dim=(1, 2)).tolist() == pytest.approx([200, 0, 0], abs=3)
    assert (out[:, :, -6:] >= 250).all()  # transparent -> white, not black


def test_palette_png(tmp_path):
    img = Image.new("P", (24, 24))
    img.putpalette([0, 0, 0, 0, 200, 0] + [0] * (256 * 3 - 6))
    img.paste(1, (0, 0, 24, 24))
    img.save(tmp_path / "pal.png")
    assert Image.open(tmp_path / "pal.png").mode == "P"
    out = decode_image(tmp_path / "pal.png", _small())
    _check_image(out)
    assert out.float().mean(dim=(1, 2)).tolist() == pytest.approx([0, 200, 0], abs=2)


def test_palette_png_with_transparency(tmp_path):
    img = Image.new("P", (16, 16))
    img.putpalette([0, 0, 0, 10, 20, 30] + [0] * (256 * 3 - 6))
    img.paste(0, (0, 0, 16, 16))
    img.info["transparency"] = 0
    img.save(tmp_path / "palt.png", transparency=0)
    out = decode_image(tmp_path / "palt.png", _small())
    _check_image(out)
    assert (out >= 250).all()


def test_16_bit_greyscale_png_is_scaled_not_clipped(tmp_path):
    grey = (np.arange(32 * 32, dtype=np.uint32).reshape(32, 32) * 64).astype(np.uint16)  # 0 .. 65472
    Image.fromarray(grey).save(tmp_path / "grey16.png")
    assert Image.open(tmp_path / "grey16.png").mode.startswith("I")
    out = decode_image(tmp_path / "grey16.png", _small())
    _check_image(out)
    assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])  # grey
    assert 80 < out.float().mean() < 180  # clipping at 255 would make it nearly all white
    assert out[:, 0].float().mean() < 40 and out[:, -1].float().mean() > 215  # dark top, bright bottom


def test_images_are_resized_to_the_bytes_torchvision_gives(tmp_path):
    """decode_image resizes with torch's kernel and does not import torchvision (2 s of CPU
    in every preprocessing process): the cached pixels stay those of torchvision's resize."""
    import subprocess
    import sys

    from torchvision.transforms.v2 import functional as F

    from mmcli.data.decode import resize_square

    rng = np.random.default_rng(5)
    for h, w, size in [(1, 1, 32), (7, 300, 64), (299, 13, 224), (64, 64, 64), (120, 90, 33), (40, 48, 128)]:
        pixels = torch.from_numpy(rng.integers(0, 256, size=(3, h, w), dtype=np.uint8))
        assert torch.equal(resize_square(pixels, size), F.resize(pixels, [size, size], antialias=True))
    Image.fromarray(rng.integers(0, 256, size=(50, 70, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    out = decode_image(tmp_path / "a.png", _small())
    expected = F.resize(F.pil_to_tensor(Image.open(tmp_path / "a.png")), [out.shape[1]] * 2, antialias=True)
    assert torch.equal(out, expected) and out.is_contiguous()
    script = (f"from mmcli.data.decode import decode_image; from mmcli.config import DataConfig; import sys; "
              f"decode_image(__import__('pathlib').Path({str(tmp_path / 'a.png')!r}), DataConfig()); "
              f"print('torchvision' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_cmyk_jpeg(tmp_path):
    Image.new("CMYK", (20, 20), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    assert Image.open(tmp_path / "cmyk.jpg").mode == "CMYK"
    out = decode_image(tmp_path / "cmyk.jpg", _small())
    _check_image(out)
    r, g, b = out.float().mean(dim=(1, 2)).tolist()
    assert r > 200 and g < 60 and b < 60  # cyan 0, magenta and yellow full: red


def test_image_is_resized_to_a_square(tmp_path):
    Image.new("L", (50, 10), 77).save(tmp_path / "wide.bmp")
    out = decode_image(tmp_path / "wide.bmp", _small(image_size=12))
    _check_image(out, 12)
    assert (out == 77).all()


@pytest.mark.parametrize("content", [b"", b"not an image", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40])
def test_broken_images_raise_decode_error(tmp_path, content):
    path = tmp_path / "broken.png"
    path.write_bytes(content)
    with pytest.raises(DecodeError):
        decode_image(path, _small())


def _tone(rate: int, seconds: float, freq: float) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.4 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_stereo_44k_wav_is_resampled(tmp_path):
    config = _small(sample_rate=16000, hop_length=256)
    stereo = np.stack([_tone(44100, 0.25, 1000.0)] * 2, axis=1)
    sf.write(tmp_path / "stereo.wav", stereo, 44100)
    sf.write(tmp_path / "mono.wav", _tone(16000, 0.25, 1000.0), 16000)
    spec, length = decode_audio(tmp_path / "stereo.wav", config)
    ref, ref_length = decode_audio(tmp_path / "mono.wav", config)
    assert spec.dtype == torch.float16
    assert spec.shape == (16, audio_frames(config))
    assert length == ref_length == 1 + 4000 // 256  # 0.25 s at 16 kHz, centred frames
    assert (spec[:, length:] == -100).all()  # padding is silence
    # resampled, not re-labelled: the tone lands in the same mel band as at 16 kHz
    peak = spec[:, :length].float().mean(dim=1).argmax()
    assert peak == ref[:, :ref_length].float().mean(dim=1).argmax()
    level = spec[peak, 2:length - 2].float().mean()
    assert abs(level - ref[peak, 2:ref_length - 2].float().mean()) < 3.0  # same loudness, in dB
    assert level > -40  # a real tone, not silence


def test_stereo_channels_are_averaged(tmp_path):
    left = _tone(16000, 0.25, 1000.0)
    sf.write(tmp_path / "one_side.wav", np.stack([left, np.zeros_like(left)], axis=1), 16000)
    sf.write(tmp_path / "half.wav", left / 2, 16000)
    spec, length = decode_audio(tmp_path / "one_side.wav", _small())
    ref, _ = decode_audio(tmp_path / "half.wav", _small())
    loud = ref.float() > -60  # quiet cells are quantisation noise of the 16-bit files
    assert loud.sum() > 10
    assert torch.allclose(spec.float()[loud], ref.float()[loud], atol=0.5)
    assert spec[:, length:].eq(-100).all()


def test_long_audio_is_cut_to_max_seconds(tmp_path):
    config = _small(max_seconds=0.25)
    sf.write(tmp_path / "long.flac", _tone(16000, 1.0, 440.0), 16000)
    spec, length = decode_audio(tmp_path / "long.flac", config)
    assert spec.shape == (16, audio_frames(config))
    assert length == 1 + 4000 // 256  # cut to 0.25 s: the frames of 4000 samples, not of 16000
    assert (spec[:, :length] > -100).all()


def test_empty_wav_raises_decode_error(tmp_path):
    sf.write(tmp_path / "empty.wav", np.zeros(0, dtype=np.float32), 16000)
    assert sf.info(str(tmp_path / "empty.wav")).frames == 0
    with pytest.raises(DecodeError, match="no samples"):
        decode_audio(tmp_path / "empty.wav", _small())


def test_text_file_named_wav_raises_decode_error(tmp_path):
    path = tmp_path / "fake.wav"
    path.write_text("RIFF? no, just some words\n", encoding="utf-8")
    with pytest.raises(DecodeError):
        decode_audio(path, _small())
