"""Video decoding with PyAV: every container written and read back, frames told apart by
their colour, the sound track, the errors, a real GRID clip, flat memory, Moving MNIST."""

from __future__ import annotations

import csv
import random
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from conftest import SHARED_DATA

pytest.importorskip("av", reason="PyAV is not installed")

from mmcli.data import video as V  # noqa: E402
from mmcli.data.decode import DecodeError  # noqa: E402

FPS, N_FRAMES, RATE = 10, 40, 16000
GRID = SHARED_DATA / "grid-s1" / "video"
needs_grid = pytest.mark.skipif(not GRID.is_dir(), reason="../shared/data/grid-s1 is absent")
needs_mnist = pytest.mark.skipif(not (SHARED_DATA / "mnist").is_dir(), reason="../shared/data/mnist is absent")
needs_fsdd = pytest.mark.skipif(not (SHARED_DATA / "fsdd" / "recordings").is_dir(), reason="../shared/data/fsdd is absent")


def colour(i: int) -> np.ndarray:
    """Frame i's flat colour: red and green each carry 3 bits of i, far apart enough to
    survive 4:2:0 compression and GIF's 3-3-2 palette."""
    return np.array([32 * (i % 8) + 16, 32 * (i // 8 % 8) + 16, 128], dtype=np.uint8)


def numbers(clip, n: int) -> list[int]:
    """The frame numbers that the first n decoded frames [T, 3, H, W] show."""
    means = clip[:n, :2].float().mean(dim=(2, 3)).numpy()
    return [int(round((r - 16) / 32)) + 8 * int(round((g - 16) / 32)) for r, g in means]


def coded_frames(n: int, height: int = 48, width: int = 64) -> np.ndarray:
    return np.stack([np.broadcast_to(colour(i), (height, width, 3)) for i in range(n)])


def sine(seconds: float, freq: float = 440.0, rate: int = RATE) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * freq * np.arange(int(seconds * rate)) / rate)).astype(np.float32)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    """40 colour-coded frames at 10 fps in every container, with a 440 Hz sound track where
    the container holds one (GIF does not)."""
    from mmcli.data import video_write

    folder = tmp_path_factory.mktemp("videos")
    out = {}
    for ext in ("mp4", "avi", "mkv", "webm", "gif"):
        out[ext] = folder / f"clip.{ext}"
        V.write_video(out[ext], coded_frames(N_FRAMES), FPS, None if ext == "gif" else sine(N_FRAMES / FPS), RATE)
    h264 = video_write.CONTAINERS[".mp4"]
    try:  # MP4 with MPEG-4 part 2 video, the encoder used where FFmpeg lacks libx264
        video_write.CONTAINERS[".mp4"] = (("mpeg4",), h264[1])
        out["mp4-mpeg4"] = folder / "clip-mpeg4.mp4"
        V.write_video(out["mp4-mpeg4"], coded_frames(N_FRAMES), FPS, sine(N_FRAMES / FPS), RATE)
    finally:
        video_write.CONTAINERS[".mp4"] = h264
    return out


@pytest.mark.parametrize("ext", ["mp4", "mp4-mpeg4", "avi", "mkv", "webm", "gif"])
def test_containers_round_trip_with_uniform_sampling(clips, ext):
    info = V.probe(clips[ext])
    assert (info.width, info.height, info.fps) == (64, 48, FPS)
    assert abs(info.frames - N_FRAMES) <= 1  # Matroska states no count: duration x rate
    assert info.has_audio == (ext != "gif")
    pixels, n = V.decode_video(clips[ext], frames=8, size=32)
    assert pixels.shape == (8, 3, 32, 32) and str(pixels.dtype) == "torch.uint8" and n == 8
    assert numbers(pixels, n) == [2, 7, 12, 17, 22, 27, 32, 37] == V.sample_indices(N_FRAMES, 8, "uniform")


def test_sample_indices():
    assert V.sample_indices(75, 16, "uniform") == [int(75 / 16 / 2 + 75 / 16 * i) for i in range(16)]
    assert V.sample_indices(10, 5, "segment") == [1, 3, 5, 7, 9]  # no rng: each segment's centre
    assert V.sample_indices(5, 8, "uniform") == V.sample_indices(5, 8, "segment", random.Random(0)) == [0, 1, 2, 3, 4]
    assert V.sample_indices(0, 8, "uniform") == []
    for n in (9, 17, 40, 75, 1000):
        picks = V.sample_indices(n, 8, "segment", random.Random(n))
        assert all(n * i // 8 <= p < n * (i + 1) // 8 for i, p in enumerate(picks))
    with pytest.raises(ValueError, match="sampling"):
        V.sample_indices(10, 4, "random")


def test_segment_sampling_is_seeded_and_stays_in_segments(clips):
    drawn = []
    for seed in (0, 1, 2, 3):
        first, n = V.decode_video(clips["mp4"], frames=8, size=16, sampling="segment", seed=seed)
        again, _ = V.decode_video(clips["mp4"], frames=8, size=16, sampling="segment", seed=seed)
        assert bool((first == again).all())
        got = numbers(first, n)
        assert got == V.sample_indices(N_FRAMES, 8, "segment", random.Random(seed))
        assert all(5 * i <= k < 5 * i + 5 for i, k in enumerate(got))
        drawn.append(got)
    assert len({tuple(d) for d in drawn}) > 1
    centres, n = V.decode_video(clips["mp4"], frames=8, size=16, sampling="segment")  # no seed: the centres
    assert numbers(centres, n) == [2, 7, 12, 17, 22, 27, 32, 37]


@pytest.mark.parametrize("ext", ["mp4", "mp4-mpeg4", "avi", "mkv", "webm", "gif"])
def test_start_and_end_are_respected(clips, ext):
    window, n = V.decode_video(clips[ext], frames=8, size=16, start=1.0, end=2.0)
    assert n == 8 and numbers(window, n) == [10 + k for k in V.sample_indices(10, 8, "uniform")]
    tail, n = V.decode_video(clips[ext], frames=4, size=16, start=3.0)  # a seek past keyframes
    assert numbers(tail, n) == [30 + k for k in V.sample_indices(10, 4, "uniform")]
    with pytest.raises(DecodeError, match="no frames after 9 s"):
        V.decode_video(clips[ext], frames=4, size=16, start=9.0)


def test_short_clip_is_padded(tmp_path):
    path = tmp_path / "short.mp4"
    V.write_video(path, coded_frames(5), FPS)
    pixels, n = V.decode_video(path, frames=8, size=16)
    assert n == 5 and numbers(pixels, n) == [0, 1, 2, 3, 4]
    assert int(pixels[5:].abs().sum()) == 0


@pytest.mark.parametrize("ext", ["mp4", "avi", "mkv", "webm"])
def test_audio_track_round_trip(clips, ext):
    samples = V.decode_audio_track(clips[ext], sample_rate=8000, max_seconds=10.0)
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert abs(len(samples) - 4.0 * 8000) < 0.02 * 4.0 * 8000  # 4 s, less codec padding
    spectrum = np.abs(np.fft.rfft(samples))
    assert abs(np.fft.rfftfreq(len(samples), 1 / 8000)[np.argmax(spectrum)] - 440.0) < 5.0
    assert len(V.decode_audio_track(clips[ext], sample_rate=8000, max_seconds=1.5)) == 12000
    late = V.decode_audio_track(clips[ext], sample_rate=8000, max_seconds=10.0, start=3.0)
    assert abs(len(late) - 8000) < 0.1 * 8000


def test_audio_track_is_aligned_after_a_seek(tmp_path):
    track = np.zeros(3 * RATE, dtype=np.float32)
    track[RATE:2 * RATE] = sine(1.0)  # sound from 1 s to 2 s
    path = tmp_path / "onset.mp4"
    V.write_video(path, coded_frames(30, 32, 32), FPS, track, RATE)
    samples = V.decode_audio_track(path, sample_rate=8000, max_seconds=5.0, start=0.5)
    loud = np.flatnonzero(np.abs(samples) > 0.1)
    assert abs(loud[0] / 8000 - 0.5) < 0.01 and abs(loud[-1] / 8000 - 1.5) < 0.01


def test_decode_errors(tmp_path, clips):
    import soundfile

    text = tmp_path / "notes.mp4"
    text.write_text("these are my notes, not a video\n" * 20, encoding="utf-8")
    with pytest.raises(DecodeError, match="not a video or audio file"):
        V.decode_video(text, frames=4, size=16)
    with pytest.raises(DecodeError, match="not a video or audio file"):
        V.probe(text)
    (tmp_path / "empty.mp4").touch()
    with pytest.raises(DecodeError, match="empty file"):
        V.decode_video(tmp_path / "empty.mp4", frames=4, size=16)
    soundfile.write(tmp_path / "speech.wav", sine(0.5), RATE)
    with pytest.raises(DecodeError, match="no video stream"):
        V.decode_video(tmp_path / "speech.wav", frames=4, size=16)
    with pytest.raises(DecodeError, match="no audio stream"):
        V.decode_audio_track(clips["gif"], sample_rate=8000, max_seconds=1.0)
    with pytest.raises(DecodeError, match="file not found"):
        V.decode_video(tmp_path / "absent.mp4", frames=4, size=16)
    with pytest.raises(ValueError, match="even"):
        V.write_video(tmp_path / "odd.mp4", coded_frames(2, 33, 32), FPS)
    with pytest.raises(ValueError, match="holds no sound"):
        V.write_video(tmp_path / "loud.gif", coded_frames(2), FPS, sine(0.2), RATE)


@needs_grid
def test_real_grid_clip():
    path = sorted(GRID.glob("*.mpg"))[0]
    info = V.probe(path)
    assert (info.frames, info.fps, info.has_audio, info.width, info.height) == (75, 25.0, True, 360, 288)
    pixels, n = V.decode_video(path, frames=16, size=112)
    assert pixels.shape == (16, 3, 112, 112) and n == 16 and float(pixels.float().mean()) > 20
    window, n = V.decode_video(path, frames=16, size=56, start=1.0, end=2.0)
    assert n == 16  # 25 frames in the window
    sound = V.decode_audio_track(path, sample_rate=16000, max_seconds=5.0)
    assert abs(len(sound) / 16000 - 3.0) < 0.1 and float(np.abs(sound).max()) > 0.01


def test_decoding_memory_does_not_grow_with_the_clip(tmp_path):
    """Python-allocated peak (tracemalloc) within 1.5x, and the process's resident peak
    (in a fresh interpreter) growing by far less than the frames a whole-clip decode holds."""
    rng = np.random.default_rng(0)
    for length in (30, 300):
        V.write_video(tmp_path / f"c{length}.mp4", rng.integers(0, 256, (length, 64, 64, 3), dtype=np.uint8), 25)
    V.decode_video(tmp_path / "c30.mp4", frames=8, size=32)  # warm: imports and caches
    peaks = {}
    for length in (30, 300):
        tracemalloc.start()
        V.decode_video(tmp_path / f"c{length}.mp4", frames=8, size=32)
        peaks[length] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peaks[300] < 1.5 * peaks[30], peaks
    big = tmp_path / "big.mp4"  # 300 frames of 320x240: 69 MB as RGB, were they all kept
    V.write_video(big, np.repeat(rng.integers(0, 256, (10, 240, 320, 3), dtype=np.uint8), 30, axis=0), 25)
    script = textwrap.dedent(f"""
        import resource
        from mmcli.data.video import decode_video
        decode_video({str(tmp_path / 'c30.mp4')!r}, frames=8, size=32)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        decode_video({str(big)!r}, frames=8, size=32)
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
    """)
    grown_kib = int(subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout)
    assert grown_kib < 25_000, f"resident peak grew by {grown_kib} KiB"


@needs_mnist
def test_make_moving_mnist(tmp_path):
    from mmcli.data.recipes.moving_mnist import make_moving_mnist

    assert make_moving_mnist(tmp_path / "mm", SHARED_DATA / "mnist", n=6, seed=3) == 6
    with open(tmp_path / "mm" / "manifest.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 6 and list(rows[0]) == ["id", "video", "label", "split"]
    for row in rows:
        assert row["label"] in {str(d) for d in range(10)} and row["split"] in {"train", "val", "test"}
        info = V.probe(tmp_path / "mm" / row["video"])
        assert (info.frames, info.fps, info.width, info.has_audio) == (16, 8.0, 64, False)
        pixels, n = V.decode_video(tmp_path / "mm" / row["video"], frames=4, size=64)
        assert n == 4 and int(pixels.max()) > 128  # a white digit on black
    assert len(list((tmp_path / "mm" / "videos").glob("*.mp4"))) == 6


@needs_mnist
@needs_fsdd
def test_make_av_moving_mnist(tmp_path):
    from mmcli.data.recipes.moving_mnist import make_av_moving_mnist

    make_av_moving_mnist(tmp_path / "av", SHARED_DATA, SHARED_DATA, n=6, frames=12, fps=6, seed=1)
    with open(tmp_path / "av" / "sources.csv", newline="", encoding="utf-8") as fh:
        sources = {row["id"]: row for row in csv.DictReader(fh)}
    with open(tmp_path / "av" / "manifest.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 6
    for row in rows:
        path = tmp_path / "av" / row["video"]
        assert V.probe(path).has_audio
        sound = V.decode_audio_track(path, sample_rate=8000, max_seconds=10.0)
        assert abs(len(sound) - 2.0 * 8000) < 0.05 * 2.0 * 8000  # 12 frames at 6 fps
        assert sources[row["id"]]["fsdd_clip"].startswith(row["label"] + "_")  # the same digit is spoken
