"""The bad-input table: each case is one messy input and its expected outcome. Unusual but
valid inputs are converted (exit 0); broken ones exit 2 with a message that names the
file, row, column or key at fault; none prints a traceback."""

from __future__ import annotations

import csv
import json
import struct
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import soundfile
from PIL import Image
from typer.testing import CliRunner

from conftest import write_own_manifest
from mmcli.cli import app

RUNNER = CliRunner()
ROW = 3  # the row the file cases spoil: data row 4 of the manifest


def rows_of(manifest: Path) -> list[dict]:
    with open(manifest, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def write_rows(manifest: Path, rows: list[dict], delimiter: str = ",", encoding: str = "utf-8") -> None:
    with open(manifest, "w", newline="", encoding=encoding) as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)


def set_cell(column: str, value: str) -> Callable:
    def change(folder: Path, manifest: Path):
        rows = rows_of(manifest)
        rows[ROW][column] = value
        write_rows(manifest, rows)
    return change


def photo(folder: Path) -> Path:
    return folder / "pics" / f"p{ROW}.png"


def clip(folder: Path) -> Path:
    return folder / "clips" / f"c{ROW}.wav"


def save_image(make: Callable[[], Image.Image], suffix: str = ".png") -> Callable:
    def change(folder: Path, manifest: Path):
        path = photo(folder).with_suffix(suffix)
        make().save(path)
        if suffix != ".png":
            set_cell("photo", f"pics/{path.name}")(folder, manifest)
    return change


def write_bytes(which: Callable[[Path], Path], data: Callable[[Path], bytes]) -> Callable:
    def change(folder: Path, manifest: Path):
        path = which(folder)
        path.write_bytes(data(path))
    return change


def save_audio(samples: Callable[[], np.ndarray], rate: int) -> Callable:
    def change(folder: Path, manifest: Path):
        soundfile.write(clip(folder), samples(), rate)
    return change


def tone(n: int, channels: int = 1) -> np.ndarray:
    wave = 0.3 * np.sin(np.arange(n) / 5.0).astype(np.float32)
    return np.stack([wave] * channels, axis=1) if channels > 1 else wave


def whole_file(change_text: Callable[[str], str] | None = None, raw: Callable[[str], bytes] | None = None) -> Callable:
    def change(folder: Path, manifest: Path):
        text = manifest.read_text(encoding="utf-8")
        if raw is not None:
            manifest.write_bytes(raw(text))
        else:
            manifest.write_text(change_text(text), encoding="utf-8")
    return change


def drop_column(column: str) -> Callable:
    def change(folder: Path, manifest: Path):
        write_rows(manifest, [{k: v for k, v in r.items() if k != column} for r in rows_of(manifest)])
    return change


def nothing(folder: Path, manifest: Path) -> None:
    return None


def config_file(text: str) -> Callable:
    def change(folder: Path, manifest: Path):
        (folder / "config.yaml").write_text(text)
    return change


def wav_header_only(path: Path) -> bytes:
    # a RIFF/WAVE header that promises a data chunk which is not there
    return b"RIFF" + struct.pack("<I", 36) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, 8000, 16000, 2, 16)


A = "data.csv"
CASES = [
    # --- unusual but valid: converted, exit 0
    ("png_16_bit_grey", save_image(lambda: Image.fromarray((np.arange(40 * 48).reshape(40, 48) * 20).astype(np.uint16))), 0, []),
    ("cmyk_jpeg", save_image(lambda: Image.new("CMYK", (48, 40), (0, 200, 200, 0)), ".jpg"), 0, []),
    ("palette_png", save_image(lambda: Image.new("RGB", (48, 40), (200, 30, 30)).convert("P")), 0, []),
    ("alpha_png", save_image(lambda: Image.new("RGBA", (48, 40), (200, 30, 30, 90))), 0, []),
    ("large_photo", save_image(lambda: Image.new("RGB", (3000, 2000), (20, 200, 20)), ".jpg"), 0, []),
    ("stereo_audio", save_audio(lambda: tone(4000, channels=2), 8000), 0, []),
    ("audio_at_44100_hz", save_audio(lambda: tone(22050), 44100), 0, []),
    ("audio_float_subtype", lambda f, m: soundfile.write(clip(f), tone(4000), 8000, subtype="FLOAT"), 0, []),
    ("emoji_text", set_cell("caption", "my dog 🐶🐕 in the garden ✨"), 0, []),
    ("very_long_text", set_cell("caption", "a very long caption " * 2000), 0, []),
    ("control_characters", set_cell("caption", "my\x07 dog\x0b in the\x1b garden"), 0, []),
    ("byte_order_mark", whole_file(raw=lambda t: "\ufeff".encode() + t.encode("utf-8")), 0, []),
    # --- broken manifests: exit 2, file / row / column named
    ("missing_label_column", drop_column("label"), 2, [A, "no label column 'label'"]),
    ("wrong_delimiter", lambda f, m: write_rows(m, rows_of(m), delimiter=";"), 2, [A, "is the delimiter a comma?"]),
    ("tabs_in_a_csv", lambda f, m: write_rows(m, rows_of(m), delimiter="\t"), 2, [A, "is the delimiter a comma?"]),
    ("caption_with_line_separators", set_cell("caption", "my dog\u2028in the\x1egarden"), 0, []),
    ("duplicate_ids", set_cell("id", "ex0"), 2, [A, f"row {ROW + 1}", "column 'id'"]),
    ("absolute_path", lambda f, m: set_cell("photo", str(photo(f).resolve()))(f, m), 0, []),
    ("path_escaping_the_folder", lambda f, m: (photo(f).rename(f.parent / "outside.png"), set_cell("photo", "../outside.png")(f, m)), 0, []),
    ("non_utf8_bytes", whole_file(raw=lambda t: t.encode("utf-8").replace(b"garden", b"gard\xe9n")), 2, [A, "UTF-8"]),
    ("no_rows", whole_file(lambda t: t.splitlines()[0] + "\n"), 2, [A, "no rows"]),
    ("empty_label", set_cell("label", ""), 2, [A, f"row {ROW + 1}", "column 'label'"]),
    ("missing_file", lambda f, m: photo(f).unlink(), 2, [A, f"row {ROW + 1}", "column 'photo'", "file not found"]),
    ("empty_text", set_cell("caption", "   "), 2, [A, f"row {ROW + 1}", "column 'caption'", "text is empty"]),
    # --- broken media: exit 2 with the row and column
    ("truncated_image", write_bytes(photo, lambda p: p.read_bytes()[:60]), 2, [f"row {ROW + 1}", "column 'photo'"]),
    ("not_an_image", write_bytes(photo, lambda p: b"just some text, not a picture"), 2, [f"row {ROW + 1}", "column 'photo'"]),
    ("empty_audio", save_audio(lambda: np.zeros(0, dtype=np.float32), 8000), 2, [f"row {ROW + 1}", "column 'sound'"]),
    ("broken_wav_header", write_bytes(clip, wav_header_only), 2, [f"row {ROW + 1}", "column 'sound'"]),
    ("not_audio", write_bytes(clip, lambda p: b"this is a text file named .wav"), 2, [f"row {ROW + 1}", "column 'sound'"]),
    # --- configs: exit 2 with the key
    ("config_unknown_key", config_file("train:\n  epoch: 3\n"), 2, ["train.epoch"]),
    ("config_wrong_type", config_file("train:\n  epochs: many\n"), 2, ["train.epochs"]),
    ("config_not_a_mapping", config_file("- just\n- a list\n"), 2, ["config.yaml"]),
    ("set_without_equals", nothing, 2, ["section.key"]),
    ("set_unknown_key", nothing, 2, ["model.fusionn"]),
    ("set_wrong_type", nothing, 2, ["train.batch_size"]),
]
EXTRA_ARGS = {
    "config_unknown_key": ["--config", "{folder}/config.yaml"],
    "config_wrong_type": ["--config", "{folder}/config.yaml"],
    "config_not_a_mapping": ["--config", "{folder}/config.yaml"],
    "set_without_equals": ["--set", "train.epochs"],
    "set_unknown_key": ["--set", "model.fusionn=concat"],
    "set_wrong_type": ["--set", "train.batch_size=[1, 2]"],
}


def test_the_table_has_at_least_30_cases():
    assert len(CASES) >= 30 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("name, change, code, needles", CASES, ids=[c[0] for c in CASES])
def test_bad_input(tmp_path, name, change, code, needles):
    folder = tmp_path / "own"
    manifest = write_own_manifest(folder, n=12)
    change(folder, manifest)
    args = [a.format(folder=folder) for a in EXTRA_ARGS.get(name, [])]
    result = RUNNER.invoke(app, ["preprocess", str(manifest), *args])
    assert result.exit_code == code, f"{name}: exit {result.exit_code}\n{result.output}\n{result.exception!r}"
    assert "Traceback" not in result.output and "internal error" not in result.output, result.output
    for needle in needles:
        assert needle in result.output, f"{name}: {needle!r} not in\n{result.output}"


def test_skip_writes_bad_rows_csv_says_how_many_and_goes_on(tmp_path):
    folder = tmp_path / "own"
    manifest = write_own_manifest(folder, n=12)
    write_bytes(photo, lambda p: b"not a picture")(folder, manifest)
    set_cell("caption", "")(folder, manifest)  # the same row, two problems: one bad row
    result = RUNNER.invoke(app, ["preprocess", str(manifest), "--on-error", "skip"])
    assert result.exit_code == 0, result.output
    assert "skipped 1 bad rows" in result.output
    assert "bad_rows.csv" in result.output  # it lives in the cache entry; the message says so


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("unseen") / "own"
    manifest = write_own_manifest(folder, n=36)
    out = folder.parent / "run"
    result = RUNNER.invoke(app, ["train", str(manifest), "--epochs", "1", "--modalities", "sound", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_a_label_unseen_in_training_at_evaluation_names_the_row(small_run, tmp_path):
    folder = tmp_path / "other"
    manifest = write_own_manifest(folder, n=12)
    set_cell("label", "hamster")(folder, manifest)
    result = RUNNER.invoke(app, ["evaluate", str(small_run), "--data", str(manifest)])
    assert result.exit_code == 2, result.output
    for needle in ("data.csv", f"row {ROW + 1}", "column 'label'", "hamster"):
        assert needle in result.output


def test_an_interrupted_preprocess_leaves_no_cache_entry(tmp_path, monkeypatch):
    """Ctrl-C half-way through decoding: the cache holds no entry of it (a reader never
    sees half a table; what was decoded waits in a hidden partial entry), and the next run
    completes it (tests/test_stream.py checks that it resumes where it stopped)."""
    import mmcli.data.decode as decode

    folder = tmp_path / "own"
    manifest = write_own_manifest(folder, n=12)
    cache = tmp_path / "cache"
    real, calls = decode.decode_audio, []

    def stop_half_way(path, config):
        calls.append(path)
        if len(calls) == 6:
            raise KeyboardInterrupt
        return real(path, config)

    monkeypatch.setattr(decode, "decode_audio", stop_half_way)
    result = RUNNER.invoke(app, ["preprocess", str(manifest), "--cache-dir", str(cache)])
    assert result.exit_code == 130, result.output
    left = [p for p in cache.rglob("*") if p.is_file()] if cache.exists() else []
    assert not [p for p in left if p.name in ("tensors.safetensors", "table.json")], left
    monkeypatch.setattr(decode, "decode_audio", real)
    again = RUNNER.invoke(app, ["preprocess", str(manifest), "--cache-dir", str(cache)])
    assert again.exit_code == 0, again.output


def test_labels_joined_like_a_multilabel_target_suggest_the_multilabel_task(tmp_path):
    """Rows whose labels are sets ('cat|small'): trained as one class each, a test row with a
    new combination fails; the error and, where training goes on, a warning say --task multilabel."""
    folder = tmp_path / "own"
    manifest = write_own_manifest(folder, n=36)
    rows = rows_of(manifest)
    for i, row in enumerate(rows):
        row["label"] = f"{row['label']}|{'small' if i % 2 else 'large'}"
        row["split"] = "test" if i >= 30 else "train"
    rows[-1]["label"] = "cat|large|striped"  # a combination no training row has
    write_rows(manifest, rows)
    train = ["--modalities", "caption", "--epochs", "1", "--out"]
    failed = RUNNER.invoke(app, ["train", str(manifest), *train, str(tmp_path / "failed")])
    assert failed.exit_code == 2, failed.output
    assert "labels unseen in training" in failed.output and "use --task multilabel" in failed.output, failed.output
    assert "row 36, column 'label'" in failed.output, failed.output
    assert failed.output.count("use --task multilabel") == 1, failed.output  # in the error, not also in a warning
    rows[-1]["label"] = "cat|large"
    write_rows(manifest, rows)
    warned = RUNNER.invoke(app, ["train", str(manifest), *train, str(tmp_path / "warned")])
    assert warned.exit_code == 0, warned.output
    assert "6 of the 6 distinct training labels hold '|'" in warned.output, warned.output
    other = write_own_manifest(tmp_path / "other", n=12)
    set_cell("label", "dog|striped")(other.parent, other)  # evaluated on other data: the same hint
    later = RUNNER.invoke(app, ["evaluate", str(tmp_path / "warned"), "--data", str(other)])
    assert later.exit_code == 2 and "use --task multilabel" in later.output, later.output
    single = RUNNER.invoke(app, ["train", str(write_own_manifest(tmp_path / "plain", n=12)), *train, str(tmp_path / "single")])
    assert single.exit_code == 0 and "--task multilabel" not in single.output, single.output
