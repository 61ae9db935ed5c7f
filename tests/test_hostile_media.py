"""Hostile media, paths and manifests (issue 23, items 9, 12, 13 and 14): each case is one
input and its expected outcome from `preprocess`, run in-process. A file no decoder can
read, a path that names no regular file, a decoder that raises anything at all: each is a
bad row naming file, row and column (exit 2, or skipped with --on-error skip), never an
internal error or a hang. Absolute, `~` and `../` paths and symbolic links are accepted
wherever they lead to a readable file. Below the table: full disks, one-class training,
the decoders' warnings, training on absolute paths, and `datasets import` of awkward names."""

from __future__ import annotations

import csv
import errno
import json
import os
import struct
import warnings
import zlib
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
ROW = 3  # the row the cases spoil: data row 4 of the manifest
WHERE = ["data.csv", f"row {ROW + 1}"]
PHOTO, SOUND = WHERE + ["column 'photo'"], WHERE + ["column 'sound'"]


def photo(folder: Path) -> Path:
    return folder / "pics" / f"p{ROW}.png"


def clip(folder: Path) -> Path:
    return folder / "clips" / f"c{ROW}.wav"


def set_cell(column: str, value: str | Callable[[Path], str]) -> Callable:
    def change(folder: Path, manifest: Path):
        with open(manifest, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        rows[ROW][column] = value(folder) if callable(value) else value
        with open(manifest, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return change


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims width x height pixels and holds almost none: a bomb costs 60 bytes."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + png_chunk(b"IEND", b""))


def with_bad_apng_chunk(path: Path) -> bytes:
    """A valid PNG with an APNG acTL chunk claiming 0 frames: Pillow warns, then reads it."""
    data = path.read_bytes()
    end_of_ihdr = 8 + 8 + 13 + 4
    return data[:end_of_ihdr] + png_chunk(b"acTL", struct.pack(">II", 0, 0)) + data[end_of_ihdr:]


def wav_header(data_bytes: int, rate: int = 8000) -> bytes:
    """A 16-bit mono PCM WAV header whose data chunk claims `data_bytes` bytes."""
    return (b"RIFF" + struct.pack("<I", min(36 + data_bytes, 0xFFFFFFFF)) + b"WAVEfmt "
            + struct.pack("<IHHIIHH", 16, 1, 1, rate, 2 * rate, 2, 16) + b"data" + struct.pack("<I", data_bytes))


def sparse_4gb_wav(folder: Path, manifest: Path) -> None:
    # the header claims 4 GB and the file is that long, sparse: reading it whole would take 8 GB of memory
    size = 0xFFFFFF00
    with open(clip(folder), "wb") as handle:
        handle.write(wav_header(size))
        handle.truncate(44 + size)


def write(which: Callable[[Path], Path], data: Callable[[Path], bytes]) -> Callable:
    def change(folder: Path, manifest: Path):
        which(folder).write_bytes(data(which(folder)))
    return change


def float_wav(values: Callable[[], np.ndarray], subtype: str = "FLOAT") -> Callable:
    def change(folder: Path, manifest: Path):
        soundfile.write(clip(folder), values(), 8000, subtype=subtype)
    return change


def with_nan() -> np.ndarray:
    x = np.full(4000, 0.1, np.float32)
    x[100] = np.nan
    return x


def with_inf() -> np.ndarray:
    x = np.full(4000, 0.1, np.float32)
    x[100] = -np.inf
    return x


def replace(which: Callable[[Path], Path], make: Callable[[Path], None]) -> Callable:
    """Put something other than the file (a link, a FIFO, a folder) where the file was."""
    def change(folder: Path, manifest: Path):
        which(folder).unlink()
        make(which(folder))
    return change


def elsewhere(folder: Path, name: str = "far away.png") -> Path:
    """A photo outside the data folder."""
    target = folder.parent / "elsewhere" / name
    target.parent.mkdir(exist_ok=True)
    target.write_bytes(photo(folder).read_bytes())
    return target


def long_text(folder: Path, manifest: Path) -> None:
    set_cell("caption", "a very long caption " * 10_000)(folder, manifest)  # 200,000 characters in one cell


def to_format(fmt: str, then: Callable | None = None) -> Callable:
    """The same rows as a JSONL or TSV manifest, which the case returns to be preprocessed."""
    def change(folder: Path, manifest: Path) -> Path:
        if then is not None:
            then(folder, manifest)
        with open(manifest, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        manifest.unlink()
        if fmt == "jsonl":
            out = manifest.with_suffix(".jsonl")
            out.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
            return out
        out = manifest.with_suffix(".tsv")
        with open(out, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter="\t")
            writer.writeheader()
            writer.writerows(rows)
        return out
    return change


def manifest_replaced(make: Callable[[Path], None]) -> Callable:
    def change(folder: Path, manifest: Path) -> Path:
        manifest.unlink()
        make(manifest)
        return manifest
    return change


def renamed_photo(name: str) -> Callable:
    def change(folder: Path, manifest: Path):
        photo(folder).rename(folder / "pics" / name)
        set_cell("photo", f"pics/{name}")(folder, manifest)
    return change


def float_tiff(folder: Path, manifest: Path) -> None:
    """32-bit float pixels (scientific images), far above 255."""
    Image.fromarray(np.random.default_rng(0).random((40, 48), dtype=np.float32) * 1e6).save(folder / "pics" / "f.tiff")
    set_cell("photo", "pics/f.tiff")(folder, manifest)


def home(folder: Path) -> Path:
    return folder.parent / "home"  # $HOME in these tests


def in_home(folder: Path, manifest: Path) -> None:
    (home(folder) / "photos").mkdir(parents=True)
    photo(folder).rename(home(folder) / "photos" / "p.png")
    set_cell("photo", "~/photos/p.png")(folder, manifest)


NOT_A_FILE = "not a regular file"
CASES = [
    # --- item 9: media that crashed the run; each is now a bad row, or accepted
    ("image_decompression_bomb", write(photo, lambda p: png_header(20000, 20000)), 2, PHOTO + ["too large to decode safely", "400000000 pixels"]),
    ("image_bomb_skipped", write(photo, lambda p: png_header(20000, 20000)), 0, ["skipped 1 bad rows"]),
    ("image_header_claims_100_megapixels", write(photo, lambda p: png_header(10000, 10000)), 2, PHOTO + ["cannot decode image"]),
    ("image_apng_chunk_pillow_warns", write(photo, with_bad_apng_chunk), 0, PHOTO + ["Invalid APNG"]),
    ("image_one_pixel", lambda f, m: Image.new("RGB", (1, 1), (9, 9, 9)).save(photo(f)), 0, []),
    ("image_1_by_20000_pixels", lambda f, m: Image.new("RGB", (1, 20000), (9, 9, 9)).save(photo(f)), 0, []),
    ("image_float_tiff", float_tiff, 0, []),
    ("image_animated_gif", lambda f, m: (Image.new("P", (30, 20)).save(f / "pics" / "a.gif", save_all=True,
                                         append_images=[Image.new("P", (30, 20), 3)]), set_cell("photo", "pics/a.gif")(f, m)), 0, []),
    ("audio_float_nan", float_wav(with_nan), 2, SOUND + ["NaN or infinite"]),
    ("audio_float_inf", float_wav(with_inf), 2, SOUND + ["NaN or infinite"]),
    ("audio_double_nan", float_wav(with_nan, "DOUBLE"), 2, SOUND + ["NaN or infinite"]),
    ("audio_nan_skipped", float_wav(with_nan), 0, ["skipped 1 bad rows"]),
    ("audio_samples_of_1e30", float_wav(lambda: np.full(4000, 1e30, np.float32)), 2, SOUND + ["too loud"]),
    ("audio_header_claims_4gb_sparse", sparse_4gb_wav, 0, []),
    ("audio_header_claims_4gb_file_short", write(clip, lambda p: wav_header(0xFFFFFF00) + b"\x10\x00" * 4000), 0, []),
    ("audio_of_a_minute", lambda f, m: soundfile.write(clip(f), np.zeros(60 * 8000, np.float32), 8000), 0, []),
    ("audio_one_sample_librosa_warns", lambda f, m: soundfile.write(clip(f), np.zeros(1, np.float32), 8000), 0, SOUND + ["n_fft"]),
    ("audio_six_channels", lambda f, m: soundfile.write(clip(f), np.zeros((4000, 6), np.float32), 8000), 0, []),
    ("audio_8_bit_unsigned", lambda f, m: soundfile.write(clip(f), np.zeros(4000), 8000, subtype="PCM_U8"), 0, []),
    ("audio_1_hz_rate", lambda f, m: soundfile.write(clip(f), np.zeros(10), 1), 0, []),
    ("csv_cell_over_131072_characters", long_text, 0, []),
    ("jsonl_cell_over_131072_characters", to_format("jsonl", long_text), 0, []),
    ("tsv_cell_over_131072_characters", to_format("tsv", long_text), 0, []),
    ("csv_quote_never_closed", lambda f, m: m.write_text(m.read_text(encoding="utf-8") + 'x1,pics/p0.png,clips/c0.wav,"no end\n',
                                                         encoding="utf-8"), 2, ["data.csv", "row 13", "fields"]),
    ("csv_old_mac_line_ends", lambda f, m: m.write_bytes(m.read_bytes().replace(b"\r\n", b"\r")), 0, []),
    # --- item 12: paths that lead anywhere readable are accepted
    ("absolute_path_elsewhere", set_cell("photo", lambda f: str(elsewhere(f))), 0, []),
    ("dotdot_path_elsewhere", set_cell("photo", lambda f: f"pics/../../elsewhere/{elsewhere(f).name}"), 0, []),
    ("tilde_path", in_home, 0, []),
    ("tilde_user_who_does_not_exist", set_cell("photo", "~nobody-like-this/p.png"), 2, PHOTO + ["file not found: ~nobody-like-this/p.png"]),
    ("symlink_to_a_file_elsewhere", lambda f, m: replace(photo, lambda p, far=elsewhere(f): p.symlink_to(far))(f, m), 0, []),
    ("symlinked_folder", lambda f, m: (elsewhere(f), (f / "linked").symlink_to(f.parent / "elsewhere"),
                                       set_cell("photo", "linked/far away.png")(f, m)), 0, []),
    ("path_with_spaces_commas_quotes", renamed_photo('my "best", photo.png'), 0, []),
    ("path_in_unicode", renamed_photo("ünïcödé 猫 🐱.png"), 0, []),
    ("absolute_path_missing", set_cell("photo", lambda f: str(f.parent / "nowhere" / "x.png")), 2, PHOTO + ["file not found"]),
    # --- item 13: what is not a regular file says what it is; nothing hangs
    ("symlink_to_dev_zero", replace(photo, lambda p: p.symlink_to("/dev/zero")), 2, PHOTO + ["a character device", NOT_A_FILE]),
    ("fifo_named_png", replace(photo, os.mkfifo), 2, PHOTO + ["a named pipe (FIFO)", NOT_A_FILE]),
    ("fifo_named_wav", replace(clip, os.mkfifo), 2, SOUND + ["a named pipe (FIFO)", NOT_A_FILE]),
    ("folder_named_png", replace(photo, os.mkdir), 2, PHOTO + ["a folder, not a file"]),
    ("broken_symlink", replace(photo, lambda p: p.symlink_to(p.parent / "gone.png")), 2, PHOTO + ["broken symbolic link"]),
    ("symlink_loop", replace(photo, lambda p: p.symlink_to(p)), 2, PHOTO + ["cannot read"]),
    ("path_through_a_file", set_cell("photo", "pics/p0.png/p3.png"), 2, PHOTO + ["file not found"]),
    ("file_name_too_long", set_cell("photo", "pics/" + "x" * 5000 + ".png"), 2, PHOTO + ["cannot read (File name too long)"]),
    ("path_with_nul_character", set_cell("photo", "pics/p\x003.png"), 2, PHOTO + ["NUL character"]),
    ("manifest_is_a_fifo", manifest_replaced(os.mkfifo), 2, ["data.csv", NOT_A_FILE]),
    ("manifest_is_dev_null_link", manifest_replaced(lambda p: p.symlink_to("/dev/null")), 2, ["data.csv", NOT_A_FILE]),
]
EXTRA_ARGS = {"image_bomb_skipped": ["--on-error", "skip"], "audio_nan_skipped": ["--on-error", "skip"]}


def test_the_table_has_unique_cases():
    assert len(CASES) >= 40 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("name, change, code, needles", CASES, ids=[c[0] for c in CASES])
def test_hostile_media(tmp_path, monkeypatch, name, change, code, needles):
    folder = tmp_path / "own"
    manifest = write_own_manifest(folder, n=12)
    monkeypatch.setenv("HOME", str(home(folder)))
    new = change(folder, manifest)  # a case that writes another manifest returns it
    manifest = new if isinstance(new, Path) else manifest
    result = RUNNER.invoke(app, ["preprocess", str(manifest), *EXTRA_ARGS.get(name, [])])
    assert result.exit_code == code, f"{name}: exit {result.exit_code}\n{result.output}\n{result.exception!r}"
    for bad in ("Traceback", "internal error", "site-packages"):
        assert bad not in result.output, result.output
    for needle in needles:
        assert needle in result.output, f"{name}: {needle!r} not in\n{result.output}"


@pytest.mark.parametrize("error", [ZeroDivisionError("division by zero"), IndexError("list index out of range"),
                                   struct.error("unpack requires a buffer"), MemoryError()],
                         ids=["zero_division", "index_error", "struct_error", "memory_error"])
def test_any_exception_of_a_decoder_is_the_rows_problem(tmp_path, monkeypatch, error):
    """Pillow's and libsndfile's plugins raise whatever they raise: the row is bad, the run goes on."""
    import mmcli.data.decode as decode

    folder = tmp_path / "own"
    manifest = write_own_manifest(folder, n=12)
    real = decode.decode_image

    def flaky(path, config):
        if path.name == photo(folder).name:
            raise error
        return real(path, config)

    monkeypatch.setattr(decode, "decode_image", flaky)
    result = RUNNER.invoke(app, ["preprocess", str(manifest)])
    assert result.exit_code == 2, result.output
    assert "internal error" not in result.output
    for needle in PHOTO + [type(error).__name__]:
        assert needle in result.output
    skipped = RUNNER.invoke(app, ["preprocess", str(manifest), "--on-error", "skip"])
    assert skipped.exit_code == 0 and "skipped 1 bad rows" in skipped.output, skipped.output


def test_a_4gb_wav_is_read_only_as_far_as_it_is_used(tmp_path):
    """Only max_seconds (and a margin for resampling) are read, whatever the header claims."""
    from mmcli.config import DataConfig
    from mmcli.data import decode

    path = tmp_path / "big.wav"
    with open(path, "wb") as handle:
        handle.write(wav_header(0xFFFFFF00))
        handle.truncate(44 + 0xFFFFFF00)
    reads = []
    real = soundfile.SoundFile.read

    def spy(self, frames=-1, *args, **kwargs):
        reads.append(frames)
        return real(self, frames, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(soundfile.SoundFile, "read", spy)
        _, length, _ = decode.decode_file("audio", path, DataConfig(max_seconds=2.0))
    assert reads and 0 < max(reads) <= 3 * 8000, reads
    assert length == decode.audio_frames(DataConfig(max_seconds=2.0))


def test_reading_a_cut_gives_the_spectrogram_of_the_whole_file(tmp_path):
    """Reading max_seconds and a margin, then resampling, equals resampling the whole file."""
    from mmcli.config import DataConfig
    from mmcli.data import decode

    config = DataConfig(max_seconds=2.0)  # a cut: the file holds 4 s
    x = (0.3 * np.random.default_rng(1).standard_normal(44100 * 4)).astype(np.float32)
    soundfile.write(tmp_path / "long.wav", x, 44100, subtype="FLOAT")
    cut, n = decode.decode_audio(tmp_path / "long.wav", config)
    whole, m = decode.log_mel(x, 44100, config)
    assert n == m and bool((cut == whole).all())


def test_the_cache_key_works_for_a_file_on_another_drive(tmp_path, monkeypatch):
    """On Windows a file on another drive has no path relative to the manifest (relpath raises)."""
    from mmcli.config import DataConfig, ModalityConfig
    from mmcli.data import cache

    manifest = write_own_manifest(tmp_path / "own", n=3)
    files = [tmp_path / "own" / "pics" / "p0.png"]
    modalities = {"photo": ModalityConfig(column="photo", kind="image")}
    before = cache.data_key(manifest, files, modalities, DataConfig(), True)

    def other_drive(path, start=None):
        raise ValueError("path is on mount 'D:', start on mount 'C:'")

    monkeypatch.setattr(os.path, "relpath", other_drive)
    after = cache.data_key(manifest, files, modalities, DataConfig(), True)
    assert len(after) == len(before) == 20


# --- item 13: full disks name the path ------------------------------------------------------


def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as write() raises it: no file name


def test_a_full_disk_while_caching_names_the_cache_entry(tmp_path, monkeypatch):
    from mmcli.data import stream

    manifest = write_own_manifest(tmp_path / "own", n=12)
    cache = tmp_path / "cache"
    monkeypatch.setattr(stream, "write_array", no_space)  # the presence masks, written when the entry is published
    result = RUNNER.invoke(app, ["preprocess", str(manifest), "--cache-dir", str(cache)])
    assert result.exit_code == 2, result.output
    assert "No space left on device" in result.output and str(cache / "tensors") in result.output, result.output
    assert "internal error" not in result.output


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="finds the file of a descriptor in /proc")
def test_a_full_disk_while_writing_the_run_folder_names_the_file(tmp_path, monkeypatch):
    import io

    manifest = write_own_manifest(tmp_path / "own", n=12)
    real = os.fdopen

    class Full(io.BytesIO):
        def write(self, data):
            no_space()

    def fdopen(fd, mode="r", *args, **kwargs):  # the weights are written through os.fdopen: the disk fills there
        if "w" in mode and ".safetensors-" in os.readlink(f"/proc/self/fd/{fd}"):
            os.close(fd)
            return Full()
        return real(fd, mode, *args, **kwargs)

    monkeypatch.setattr(os, "fdopen", fdopen)
    out = tmp_path / "run"
    result = RUNNER.invoke(app, ["train", str(manifest), "--epochs", "1", "--modalities", "sound", "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert "No space left on device" in result.output and "best.safetensors" in result.output, result.output
    assert str(tmp_path) in result.output and "internal error" not in result.output and not out.exists()


# --- item 13: one class, and the libraries' warnings -------------------------------------------


def test_training_on_one_class_warns_that_the_metric_means_nothing(tmp_path):
    manifest = write_own_manifest(tmp_path / "own", n=12)
    text = manifest.read_text(encoding="utf-8")
    manifest.write_text(text.replace(",dog\n", ",cat\n").replace(",bird\n", ",cat\n"), encoding="utf-8")
    result = RUNNER.invoke(app, ["train", str(manifest), "--epochs", "1", "--modalities", "sound", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "only one class ('cat')" in result.output and "mean nothing" in result.output, result.output


def test_two_classes_give_no_such_warning(tmp_path):
    manifest = write_own_manifest(tmp_path / "own", n=12)
    text = manifest.read_text(encoding="utf-8")
    manifest.write_text(text.replace(",bird\n", ",cat\n"), encoding="utf-8")
    result = RUNNER.invoke(app, ["train", str(manifest), "--epochs", "1", "--modalities", "sound", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "only one class" not in result.output


def test_pillow_warnings_become_log_lines_with_the_row(tmp_path, monkeypatch):
    """Pillow's DecompressionBombWarning (lowered limit here) is logged with file, row, column."""
    from PIL import Image as PILImage

    from mmcli.data import stream

    manifest = write_own_manifest(tmp_path / "own", n=12)
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 1000)  # 48 x 40 = 1920 pixels: warns, below twice the limit
    monkeypatch.setattr(stream, "MAX_WARNINGS", 5)
    with warnings.catch_warnings(record=True) as raw:
        warnings.simplefilter("always")
        result = RUNNER.invoke(app, ["preprocess", str(manifest)])
    assert result.exit_code == 0, result.output
    assert "data.csv, row 1 (line 2), column 'photo': pics/p0.png: Image size (1920 pixels)" in result.output, result.output
    assert "column 'photo': pics/p4.png" in result.output and "pics/p5.png" not in result.output
    assert "7 more warnings of the decoders not shown" in result.output  # 12 rows: the first 5, then a count
    assert not [w for w in raw if "Image size" in str(w.message)]  # none escaped as a raw warning


def test_matplotlib_warnings_are_silenced_when_plotting(tmp_path):
    from mmcli.reporting import plots

    with warnings.catch_warnings(record=True) as raw:
        warnings.simplefilter("always")
        plots.confusion_matrix(["🐶 dog", "猫 cat"], [[1, 0], [0, 1]], tmp_path / "c.png", "glyphs the font lacks 🐶")
    assert (tmp_path / "c.png").is_file()
    assert [str(w.message) for w in raw] == []


# --- item 12: training on absolute paths keeps the run folder free of them ----------------------


def test_training_on_absolute_paths_leaves_no_absolute_path_in_the_run_folder(tmp_path):
    folder = tmp_path / "own"
    manifest = write_own_manifest(folder, n=12)
    text = manifest.read_text(encoding="utf-8").replace("clips/", f"{folder}/clips/")
    manifest.write_text(text, encoding="utf-8")
    out = tmp_path / "run"
    result = RUNNER.invoke(app, ["train", str(manifest), "--epochs", "1", "--modalities", "sound", "--out", str(out)])
    assert result.exit_code == 0, result.output
    for path in out.iterdir():
        if path.suffix in (".json", ".yaml", ".jsonl") and path.name != "provenance.json":  # it records the command line
            assert str(tmp_path) not in path.read_text(encoding="utf-8"), path.name
    predicted = RUNNER.invoke(app, ["predict", str(out), "--audio", str(clip(folder))])
    assert predicted.exit_code == 0, predicted.output


def test_predict_says_what_a_path_is(tmp_path):
    """predict reads files as preprocess does: a FIFO is not opened, a folder is named as one."""
    folder = tmp_path / "own"
    manifest = write_own_manifest(folder, n=12)
    out = tmp_path / "run"
    assert RUNNER.invoke(app, ["train", str(manifest), "--epochs", "1", "--modalities", "sound", "--out", str(out)]).exit_code == 0
    os.mkfifo(tmp_path / "pipe.wav")
    (tmp_path / "dir.wav").mkdir()
    for name, needle in (("pipe.wav", "a named pipe (FIFO), not a regular file"), ("dir.wav", "a folder, not a file")):
        result = RUNNER.invoke(app, ["predict", str(out), "--audio", str(tmp_path / name)])
        assert result.exit_code == 2 and needle in result.output, result.output


# --- item 14: datasets import writes manifests that read back ------------------------------------


NAMES = [
    ("leading_space", " cat"),
    ("trailing_space", "cat "),
    ("spaces_both_sides", "  big cat  "),
    ("comma", "cat, black"),
    ("quotes", 'the "cat"'),
    ("newline", "cat\nblack"),
    ("unicode", "ünïcödé 猫"),
    ("emoji", "🐱 cat"),
    ("hash_and_semicolon", "#1; cat"),
]


@pytest.mark.parametrize("where", ["class_folder", "file_name"])
@pytest.mark.parametrize("name", [n for _, n in NAMES], ids=[i for i, _ in NAMES])
def test_imagefolder_names_read_back(tmp_path, cli, where, name):
    root = tmp_path / "imgs"
    for label in (name if where == "class_folder" else "cat", "dog"):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(4):
            stem = f"{name}{i}" if where == "file_name" and label == "cat" else str(i)
            Image.new("RGB", (8, 8), (40 * i, 9, 9)).save(root / label / f"{stem}.png")
    result = cli("datasets", "import", "imagefolder", root)
    assert result.exit_code == 0, result.output
    result = cli("preprocess", root / "manifest.csv")
    assert result.exit_code == 0, result.output
    from mmcli.config import DataConfig
    from mmcli.data.preprocess import preprocess

    table = preprocess(root / "manifest.csv", DataConfig())
    expected = (name.strip() if where == "class_folder" else "cat")
    assert len(table) == 8 and sorted(set(table.labels)) == sorted({expected, "dog"})


def test_imagefolder_refuses_names_a_manifest_cannot_hold(tmp_path, cli):
    root = tmp_path / "imgs"
    (root / "cat").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(root / "cat" / "ok.png")
    bad = os.fsencode(root / "cat") + b"/caf\xe9.png"  # Latin-1 bytes, not UTF-8
    with open(bad, "wb") as handle:
        handle.write((root / "cat" / "ok.png").read_bytes())
    (root / "   ").mkdir()
    Image.new("RGB", (8, 8)).save(root / "   " / "a.png")
    result = cli("datasets", "import", "imagefolder", root)
    assert result.exit_code == 2 and "not UTF-8" in result.output and "caf" in result.output, result.output
    os.unlink(bad)
    result = cli("datasets", "import", "imagefolder", root)
    assert result.exit_code == 2 and "only with spaces" in result.output, result.output
    assert not (root / "manifest.csv").exists()
