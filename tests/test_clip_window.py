"""Part of a recording as an example (issue 21): `start`/`end` columns, or a `#t=` fragment
after the path, choose the seconds of a video or sound file that a row reads. Files are
made here: a video whose grey level counts its frames (so a cached frame says which second
it came from) and a WAV whose pitch changes after one second."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("av")

FPS, SECONDS, RATE = 8, 4, 16000


def _grey_clip(path: Path) -> None:
    from mmcli.data.video import write_video

    frames = np.zeros((FPS * SECONDS, 32, 32, 3), dtype=np.uint8)
    for t in range(len(frames)):
        frames[t] = 8 * t  # 0 .. 248: the grey level says the frame
    write_video(path, frames, FPS)


def _two_tones(path: Path) -> None:
    t = np.arange(2 * RATE) / RATE
    wave = np.where(t < 1.0, np.sin(2 * np.pi * 300 * t), np.sin(2 * np.pi * 3000 * t))
    sf.write(path, (0.3 * wave).astype(np.float32), RATE)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("windows")
    _grey_clip(folder / "count.mp4")
    _two_tones(folder / "tones.wav")
    rows = ["clip,start,end,label"] + [f"count.mp4,{s},{s + 1},{'late' if s >= 2 else 'early'}" for s in (0, 1, 2, 3)] * 3
    (folder / "manifest.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder


@pytest.mark.parametrize("cell, expected", [
    ("a.mp4", ("a.mp4", None)),
    ("a.mp4#t=1.5,2", ("a.mp4", (1.5, 2.0))),
    ("a.mp4#t=1.5", ("a.mp4", (1.5, None))),
    ("a.mp4#t=,2", ("a.mp4", (None, 2.0))),
    ("a.mp4#t=npt:1:02.5,0:01:03", ("a.mp4", (62.5, 63.0))),
    ("dir#1/a.mp4#t=3,4", ("dir#1/a.mp4", (3.0, 4.0))),
])
def test_a_cell_splits_into_its_file_and_its_window(cell, expected):
    from mmcli.data.window import split

    assert split(cell) == expected


@pytest.mark.parametrize("cell, reason", [
    ("a.mp4#t=soon", "not a time"), ("a.mp4#t=-1,2", "not a time"), ("a.mp4#t=3,2", "ends (2 s) before it starts (3 s)"),
    ("a.mp4#t=1:75:00", "not a time"), ("a.mp4#t=nan", "not a time"),
])
def test_a_fragment_that_is_not_a_window_says_why(cell, reason):
    from mmcli.data.window import split

    with pytest.raises(ValueError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        split(cell)


def test_start_and_end_columns_are_detected_as_the_window_not_as_features(data):
    from mmcli.config import DataConfig
    from mmcli.data.manifest import detect_modalities, read_manifest

    found = detect_modalities(read_manifest(data / "manifest.csv"), DataConfig())
    assert set(found) == {"clip"}  # no tabular modality of start and end
    assert (found["clip"].start, found["clip"].end) == ("start", "end")


def test_each_row_caches_the_frames_of_its_own_second(data, tmp_path):
    from mmcli.config import DataConfig
    from mmcli.data.preprocess import preprocess

    table = preprocess(data, DataConfig(video_frames=4, image_size=16), tmp_path / "cache")
    grey = table.tensors["clip"].float().mean(dim=(2, 3, 4))  # [rows, frames]
    lengths = table.tensors["clip.lengths"]
    for row, second in enumerate([0, 1, 2, 3] * 3):
        seen = grey[row, : int(lengths[row])]
        low, high = 8 * FPS * second, 8 * (FPS * (second + 1) - 1)  # the grey levels of that second's frames
        assert int(lengths[row]) == 4 and bool(((seen >= low - 6) & (seen <= high + 6)).all()), (row, seen.tolist())


def test_another_window_is_another_cache_entry(data, tmp_path):
    from mmcli.config import DataConfig
    from mmcli.data.preprocess import preprocess

    first = preprocess(data, DataConfig(video_frames=2, image_size=8), tmp_path / "cache")
    moved = tmp_path / "moved"
    moved.mkdir()
    (moved / "count.mp4").symlink_to(data / "count.mp4")
    text = (data / "manifest.csv").read_text(encoding="utf-8").replace("count.mp4,0,1,", "count.mp4,0.5,1,")
    (moved / "manifest.csv").write_text(text, encoding="utf-8")
    second = preprocess(moved, DataConfig(video_frames=2, image_size=8), tmp_path / "cache")
    assert first.key != second.key


def test_a_sound_file_window_reads_only_those_seconds(data):
    from mmcli.config import DataConfig
    from mmcli.data.decode import audio_frames, decode_audio

    config = DataConfig(max_seconds=1.0, n_mels=32)
    early, n_early = decode_audio(data / "tones.wav", config, (0.0, 0.5))
    late, n_late = decode_audio(data / "tones.wav", config, (1.0, 1.5))
    whole, n_whole = decode_audio(data / "tones.wav", config)
    assert n_early == n_late == 0.5 * RATE // config.hop_length + 1 < n_whole == audio_frames(config)
    band = lambda spec, n: int(spec[:, : n - 1].float().mean(dim=1).argmax())  # noqa: E731 (the loudest mel band)
    assert band(late, n_late) > band(early, n_early) + 10  # 3 kHz after the first second, 300 Hz before


def test_a_window_past_the_end_of_a_sound_file_is_a_bad_row(data):
    from mmcli.config import DataConfig
    from mmcli.data.decode import DecodeError, decode_audio

    with pytest.raises(DecodeError, match="after the recording's end"):
        decode_audio(data / "tones.wav", DataConfig(max_seconds=1.0), (5.0, 6.0))


def test_a_start_that_is_not_a_time_names_the_file_row_and_column(data, tmp_path, cli):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "count.mp4").symlink_to(data / "count.mp4")
    lines = (data / "manifest.csv").read_text(encoding="utf-8").splitlines()
    lines[3] = "count.mp4,two,3,late"
    (bad / "manifest.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = cli("preprocess", str(bad), "--set", "data.video_frames=2", "--set", "data.image_size=8")
    assert "manifest.csv, row 3" in result.output and "column 'start'" in result.output
    assert "'two' is not a time" in result.output


def test_a_window_declared_on_an_image_is_refused_naming_the_key(tmp_path, cli):
    from PIL import Image

    for i in range(4):
        Image.new("RGB", (8, 8), (i * 60, 0, 0)).save(tmp_path / f"{i}.png")
    rows = ["photo,start,label"] + [f"{i}.png,{i},{i % 2}" for i in range(4)]
    (tmp_path / "manifest.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    config = tmp_path / "config.yaml"
    config.write_text("data:\n  modalities:\n    photo: {column: photo, kind: image, start: start}\n", encoding="utf-8")
    result = cli("preprocess", str(tmp_path), "--config", str(config))
    assert result.exit_code == 2, result.output
    assert "data.modalities.photo.start" in result.output and "no clip window" in result.output


def test_predict_reads_the_part_of_a_file_its_fragment_names(data, tmp_path, cli):
    """A model told late from early seconds by the grey level answers for the window that
    `--video FILE#t=` names, and for a JSON line with the start and end fields."""
    run = tmp_path / "run"
    result = cli("train", str(data), "--out", str(run), "--set", "data.video_frames=2", "--set", "data.image_size=8",
                 "--set", "train.epochs=30", "--set", "data.val_fraction=0", "--set", "data.test_fraction=0.25",
                 "--workers", "1")
    assert result.exit_code == 0, result.output
    answers = {}
    for window in ("0,1", "3,4"):
        out = cli("predict", str(run), "--video", f"{data / 'count.mp4'}#t={window}", "--format", "jsonl")
        assert out.exit_code == 0, out.output
        answers[window] = json.loads(out.output.strip().splitlines()[-1])["label"]
    assert answers == {"0,1": "early", "3,4": "late"}
    line = json.dumps({"clip": str(data / "count.mp4"), "start": 3, "end": 4})
    out = cli("predict", str(run), "-", "--format", "jsonl", input=line + "\n")
    assert out.exit_code == 0 and json.loads(out.output.strip().splitlines()[-1])["label"] == "late", out.output


GRID = Path(__file__).resolve().parents[2] / "shared" / "data" / "grid-s1"


def _align(path: Path, words: list[str]) -> None:
    lines, t = ["0 10000 sil"], 10000
    for w in words:
        lines.append(f"{t} {t + 5000} {w}")
        t += 5000
        if w == "at":
            lines.append(f"{t} {t + 500} sp")
            t += 500
    path.write_text("\n".join(lines + [f"{t} {t + 10000} sil"]) + "\n", encoding="utf-8")


def test_import_grid_writes_a_row_per_word_of_the_chosen_slots(tmp_path, cli):
    """Alignments in 1/1000 frames at 25 fps become seconds; pauses (sil, sp) are left out;
    the rows name the videos relative to the manifest, and carry no slot column."""
    corpus = tmp_path / "corpus"
    (corpus / "s1").mkdir(parents=True)
    (corpus / "align").mkdir()
    for stem, words in (("bbaf2n", "bin blue at f two now"), ("lgaz5s", "lay green at z five soon")):
        (corpus / "s1" / f"{stem}.mpg").write_bytes(b"\0")
        _align(corpus / "align" / f"{stem}.align", words.split())
    out = tmp_path / "words" / "manifest.csv"
    result = cli("datasets", "import", "grid", str(corpus), "--out", str(out), "--slots", "colour,digit")
    assert result.exit_code == 0, result.output
    rows = out.read_text(encoding="utf-8").splitlines()
    assert rows[0] == "video,start,end,label"
    assert rows[1:] == ["../corpus/s1/bbaf2n.mpg,0.6,0.8,blue", "../corpus/s1/bbaf2n.mpg,1.22,1.42,two",
                        "../corpus/s1/lgaz5s.mpg,0.6,0.8,green", "../corpus/s1/lgaz5s.mpg,1.22,1.42,five"]
    again = cli("datasets", "import", "grid", str(corpus), "--out", str(out))
    assert again.exit_code == 2 and "never overwrites" in again.output
    wrong = cli("datasets", "import", "grid", str(corpus), "--out", str(tmp_path / "x.csv"), "--slots", "colour,verb")
    assert wrong.exit_code == 2 and "unknown slot(s) verb" in wrong.output


@pytest.mark.skipif(not GRID.is_dir(), reason=f"{GRID} is absent (the shared GRID speaker s1 clips)")
def test_grid_words_decode_as_short_clips_with_their_sound(tmp_path, cli):
    """Each word of a real GRID clip: a few frames of the lips and its sound, cut to the word."""
    from mmcli.config import DataConfig
    from mmcli.data.preprocess import preprocess

    out = tmp_path / "manifest.csv"
    assert cli("datasets", "import", "grid", str(GRID), "--out", str(out), "--slots", "colour").exit_code == 0
    lines = out.read_text(encoding="utf-8").splitlines()
    out.write_text("\n".join(lines[:9]) + "\n", encoding="utf-8")  # 8 words
    table = preprocess(out, config := DataConfig(video_frames=16, image_size=16), tmp_path / "cache")
    assert set(table.modalities) == {"video", "video_audio"} and not table.bad_rows
    frames = table.tensors["video.lengths"]
    assert bool(((frames >= 3) & (frames <= 12)).all()), frames  # a word: 0.1 to 0.5 s at 25 fps, not the 3 s clip
    assert config.max_seconds is not None and config.max_seconds <= 0.6  # derived from the words' windows


def test_rate_sampling_takes_frames_at_a_fixed_rate_from_the_window(data):
    """data.video_sampling=rate: video_fps frames a second from the clip's start (8 fps
    files at 2 a second: every fourth frame), however long the clip."""
    from mmcli.data.video import decode_video

    for start, first in ((None, 0), (1.0, 8)):
        pixels, n = decode_video(data / "count.mp4", frames=4, size=8, sampling="rate", fps=2, start=start)
        grey = pixels.float().mean(dim=(1, 2, 3)).tolist()
        assert n == 4 and all(abs(g - 8 * (first + 4 * k)) <= 6 for k, g in enumerate(grey)), grey


def test_rate_sampling_needs_its_rate(data, cli):
    result = cli("preprocess", str(data), "--set", "data.video_sampling=rate")
    assert result.exit_code == 2 and "data.video_fps" in result.output, result.output


def test_cells_with_a_fragment_are_detected_as_video_and_read_their_window(data, tmp_path):
    from mmcli.config import DataConfig
    from mmcli.data.preprocess import preprocess

    folder = tmp_path / "fragments"
    folder.mkdir()
    (folder / "count.mp4").symlink_to(data / "count.mp4")
    rows = ["clip,label"] + [f'"count.mp4#t={s},{s + 1}",{"late" if s >= 2 else "early"}' for s in (0, 3)] * 2  # CSV quotes
    (folder / "manifest.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    table = preprocess(folder, DataConfig(video_frames=2, image_size=8), tmp_path / "cache")
    assert table.modalities["clip"].kind == "video" and not table.bad_rows
    grey = table.tensors["clip"].float().mean(dim=(1, 2, 3, 4)).tolist()
    assert grey[0] < 64 < 8 * FPS * 3 - 8 < grey[1], grey  # second 0, then second 3
