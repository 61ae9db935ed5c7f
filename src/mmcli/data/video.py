"""Video: probing, frame sampling and decoding with PyAV (FFmpeg's libraries), and writing.

Decoding streams: frames are decoded one after another and only the sampled ones are kept,
converted to RGB and resized to size x size with antialiasing (FFmpeg's swscale), so
memory holds `frames` small pictures whatever the clip's length. Which frames to keep is
decided before decoding, from the frame count the container states (or its duration
times its rate), for that count and the counts a frame or two either side (durations are
rounded); a file whose count proves further off is decoded a second time with the count
the first pass saw. Either way the sample is the one an exact count would have given.

`start` and `end` are seconds from the beginning of the file (the container's start time),
one origin for picture and sound; a seek to the keyframe before `start` skips what comes
before it, where the file allows seeking (else it is decoded from the beginning).

PyAV and torch are imported inside the functions: this module imports without them.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional

import numpy as np

from mmcli.data.video_write import CONTAINERS as CONTAINERS, PathLike, write_video as write_video  # re-exported

if TYPE_CHECKING:
    import torch

    from mmcli.data.decode import DecodeError

SAMPLINGS = ("uniform", "segment", "rate")
SLACK = 2  # frames by which the headers' count may be off without a second decoding
SEEK_SKIP = 8  # packets after a seek that may fail to decode (the tail of one the seek cut) before it is an error


@dataclass(frozen=True)
class VideoInfo:
    frames: int  # as the container states it, else duration x fps (an estimate)
    fps: float
    duration: float  # seconds
    width: int
    height: int
    has_audio: bool


def _error(reason: str) -> DecodeError:
    from mmcli.data.decode import DecodeError

    return DecodeError(reason)


@contextlib.contextmanager
def _opened(path: PathLike) -> Iterator[Any]:
    """An open container; whatever FFmpeg raises, then or while reading, is a DecodeError."""
    import av

    from mmcli.data.decode import DecodeError, file_problem

    problem = file_problem(Path(path))
    if problem is not None:
        raise DecodeError(problem)
    if Path(path).stat().st_size == 0:
        raise DecodeError("empty file (0 bytes)")
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except av.error.InvalidDataError:
        raise DecodeError("not a video or audio file that FFmpeg can read (invalid data)") from None
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise DecodeError(f"cannot open as a video ({type(exc).__name__}: {_reason(exc)})") from None
    try:
        with container:
            yield container
    except DecodeError:
        raise
    except (av.error.FFmpegError, OSError, EOFError, ValueError, IndexError, MemoryError) as exc:
        raise DecodeError(f"cannot decode ({type(exc).__name__}: {_reason(exc)})") from None


def _reason(exc: Exception) -> str:
    return getattr(exc, "strerror", None) or str(exc)  # FFmpeg's words, without its error number and file name


def _video_stream(container: Any) -> Any:
    from av.stream import Disposition

    if container.format.name == "image2" or container.format.name.endswith("_pipe"):
        raise _error(f"a still image ({container.format.name.removesuffix('_pipe')}), not a video")
    streams = [s for s in container.streams.video if not s.disposition & Disposition.attached_pic]  # not cover art
    if not streams:
        raise _error("no video stream (the file holds only audio)" if container.streams.audio else "no video stream")
    return streams[0]


def _audio_stream(container: Any) -> Any:
    if not container.streams.audio:
        raise _error("no audio stream (the video has no sound track)")
    return container.streams.audio[0]


def _origin(container: Any) -> float:
    return container.start_time / 1_000_000 if container.start_time is not None else 0.0  # AV_TIME_BASE


def _info(container: Any, stream: Any) -> VideoInfo:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    fps = float(rate) if rate else 0.0
    if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    else:
        duration = container.duration / 1_000_000 if container.duration is not None else 0.0
    frames = int(stream.frames or 0)
    if fps <= 0:  # no rate stated: from the count and duration, or 25 as FFmpeg assumes
        fps = frames / duration if frames and duration > 0 else 25.0
    if frames <= 0:
        frames = max(1, int(duration * fps + 0.5)) if duration > 0 else 0
    ctx = stream.codec_context
    return VideoInfo(frames, fps, duration or frames / fps, int(ctx.width), int(ctx.height), bool(container.streams.audio))


def probe(path: PathLike) -> VideoInfo:
    """Frame count, rate, duration, size and whether there is sound, from the headers."""
    with _opened(path) as container:
        return _info(container, _video_stream(container))


def sample_indices(n_available: int, n_frames: int, sampling: str, rng: Optional[random.Random] = None,
                   step: float = 1.0) -> list[int]:
    """Which of `n_available` frames to keep, as TSN (Wang et al., 2016) samples.

    "uniform": the centres of n_frames equal spans (TSN's test-time sampling).
    "segment": one frame drawn at random in each of n_frames equal segments, segment i
    being [floor(i n / k), floor((i + 1) n / k)) (TSN's training sampling); with no `rng`,
    each segment's centre. A clip of n_frames or fewer gives every frame it has, once
    each: the caller pads. "rate": every `step`-th frame from the first (a fixed number of
    frames per second, so that time runs at one speed in every clip), at most n_frames of
    them: a longer clip is cut, a shorter one padded."""
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling must be one of {', '.join(SAMPLINGS)}, not {sampling!r}")
    if sampling == "rate":
        if not step > 0:
            raise ValueError(f"step must be positive, not {step}")
        return [i for i in (int(k * step + 1e-9) for k in range(n_frames)) if i < n_available]
    if n_available <= n_frames:
        return list(range(max(0, n_available)))
    if sampling == "uniform":
        tick = n_available / n_frames
        return [int(tick / 2 + tick * i) for i in range(n_frames)]
    bounds = [n_available * i // n_frames for i in range(n_frames + 1)]
    if rng is None:
        return [(a + b) // 2 for a, b in zip(bounds, bounds[1:])]
    return [rng.randrange(a, b) for a, b in zip(bounds, bounds[1:])]


def _bounds(start: Optional[float], end: Optional[float]) -> tuple[float, float]:
    lo = max(0.0, float(start)) if start is not None else 0.0
    hi = float(end) if end is not None else math.inf
    if not hi > lo:
        raise ValueError(f"end ({end}) must come after start ({start})")
    return lo, hi


@contextlib.contextmanager
def _reading(path: PathLike, pick: Callable[[Any], Any], target: float,
             step: Callable[[Any], float]) -> Iterator[tuple[Any, Any, Iterator[tuple[float, Any]]]]:
    """(container, stream, (seconds, frame) from about `target` on). A seek that fails,
    lands after `target` or gives frames without times is undone: the file is read again
    from its beginning, before any frame was handed out."""
    for seek in ((True, False) if target > 0 else (False,)):
        with _opened(path) as container:
            stream = pick(container)
            frames = _timed(container, stream, target if seek else 0.0, step)
            if frames is not None:
                yield container, stream, frames
                return


def _timed(container: Any, stream: Any, target: float, step: Callable[[Any], float]) -> Optional[Iterator[tuple[float, Any]]]:
    import av

    origin = _origin(container)
    if target > 0:
        try:
            container.seek(int((origin + target) / stream.time_base), stream=stream, backward=True)
        except (av.error.FFmpegError, OSError, ValueError, TypeError):
            return None
    decoded = _decoded(container, stream, after_seek=target > 0)
    first = next(decoded, None)
    if target > 0 and (first is None or first.time is None or first.time - origin > target + 1e-6):
        return None
    return _with_times(itertools.chain([first] if first is not None else [], decoded), origin, step)


def _decoded(container: Any, stream: Any, after_seek: bool) -> Iterator[Any]:
    """The stream's frames. After a seek, the packets before the first frame may be the
    tail of one the seek cut (an MPEG program stream's sound lands mid-frame): those that
    do not decode are skipped, as a player does; any later error is the file's."""
    import av

    skipped = 0
    for packet in container.demux(stream):
        try:
            frames = packet.decode()
        except av.error.InvalidDataError:
            if not after_seek or skipped >= SEEK_SKIP:
                raise
            skipped += 1
            continue
        after_seek = after_seek and not frames
        yield from frames


def _with_times(frames: Iterator[Any], origin: float, step: Callable[[Any], float]) -> Iterator[tuple[float, Any]]:
    t_next = 0.0
    for frame in frames:
        t = frame.time - origin if frame.time is not None else t_next  # no timestamp: after the last one
        t_next = t + step(frame)
        yield t, frame


def _resized(reformatter: Any, frame: Any, size: int) -> np.ndarray:
    """RGB [3, size, size] by swscale, whose bilinear filter widens as it shrinks (antialiased,
    within ~2 grey levels of torchvision's); one reformatter per clip keeps its context (a
    new one costs ~2 ms a frame); channels go first in numpy (torch copies this far slower)."""
    rgb = reformatter.reformat(frame, width=size, height=size, format="rgb24", interpolation="BILINEAR", threads=1)
    return rgb.to_ndarray().transpose(2, 0, 1)


def _pass(path: PathLike, lo: float, hi: float, size: int, choose: Callable[[int, float], list[int]],
          known: Optional[int]) -> tuple[int, dict[int, list[int]], dict[int, np.ndarray]]:
    """One decoding: (frames seen in the window, count -> the indices chosen for it, the
    kept frames). `known`: the count; else the headers' estimate and the counts within
    SLACK of it are each given their choice, so that an estimate off by a frame or two
    (rounded durations) costs no second pass."""
    from av.video.reformatter import VideoReformatter

    kept: dict[int, np.ndarray] = {}
    seen = 0
    reformatter = VideoReformatter()
    with _reading(path, _video_stream, lo, lambda f: 0.0) as (container, stream, frames):
        info = _info(container, stream)
        eps = 0.25 / info.fps  # a quarter of a frame's tolerance for rounded timestamps
        if known is None:
            first = max(0, math.ceil((lo - eps) * info.fps))
            last = info.frames if math.isinf(hi) else min(info.frames, math.ceil((hi - eps) * info.fps))
            estimate = max(0, last - first)
            choices = {n: choose(n, info.fps) for n in range(max(1, estimate - SLACK), estimate + SLACK + 1)}
        else:
            choices = {known: choose(known, info.fps)}
        wanted = set().union(*choices.values())
        for t, frame in frames:
            if frame.time is None:
                t = seen / info.fps + lo  # no timestamps at all: count from where the window starts
            if t < lo - eps:
                continue
            if t >= hi - eps:
                break
            if seen in wanted:
                kept[seen] = _resized(reformatter, frame, size)
            seen += 1
    return seen, choices, kept


def decode_video(path: PathLike, *, frames: int, size: int, sampling: str = "uniform", start: Optional[float] = None,
                 end: Optional[float] = None, seed: Optional[int] = None, fps: Optional[float] = None
                 ) -> tuple[torch.Tensor, int]:
    """uint8 [frames, 3, size, size] RGB (zeros after the last real frame) and the number
    of real frames. "segment" sampling draws from `seed` (the same seed, the same frames);
    with no seed it takes each segment's centre. "rate" sampling takes `fps` frames a
    second (of the file's own rate: every file_fps / fps-th frame)."""
    import torch

    if frames < 1 or size < 1:
        raise ValueError(f"frames and size must be at least 1, not {frames} and {size}")
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling must be one of {', '.join(SAMPLINGS)}, not {sampling!r}")
    lo, hi = _bounds(start, end)
    if sampling == "rate" and not (fps and fps > 0):
        raise ValueError(f"rate sampling needs frames per second, not {fps!r}")
    if sampling == "rate" and fps:
        hi = min(hi, lo + frames / fps)  # what follows the last frame taken is not decoded

    def choose(n: int, file_fps: float) -> list[int]:
        step = file_fps / fps if sampling == "rate" and fps else 1.0
        return sample_indices(n, frames, sampling, random.Random(seed) if seed is not None else None, step)

    seen, choices, kept = _pass(path, lo, hi, size, choose, None)
    if seen and seen not in choices:  # the headers' count was far off: choose again from the true one
        seen, choices, kept = _pass(path, lo, hi, size, choose, seen)
    if seen == 0:
        window = "" if lo == 0 and math.isinf(hi) else f" after {lo:g} s" if math.isinf(hi) else f" between {lo:g} s and {hi:g} s"
        raise _error(f"the video has no frames{window}")
    out = np.zeros((frames, 3, size, size), dtype=np.uint8)
    picks = choices[seen]
    for slot, index in enumerate(picks):
        out[slot] = kept[index]
    return torch.from_numpy(out), len(picks)


def decode_audio_track(path: PathLike, *, sample_rate: int, max_seconds: float, start: Optional[float] = None,
                       end: Optional[float] = None) -> np.ndarray:
    """The sound track as float32 mono samples at `sample_rate`, at most `max_seconds`
    from `start`: only that much is decoded."""
    import av

    if sample_rate < 1 or not max_seconds > 0:
        raise ValueError(f"sample_rate and max_seconds must be positive, not {sample_rate} and {max_seconds}")
    lo, hi = _bounds(start, end)
    length = round(min(max_seconds, hi - lo) * sample_rate)
    resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
    chunks: list[np.ndarray] = []
    have, skip = 0, -1
    with _reading(path, _audio_stream, lo, lambda f: f.samples / (f.sample_rate or 1)) as (_, _stream, frames):
        for t, frame in itertools.chain(frames, [(math.inf, None)]):  # the last item flushes the resampler
            if skip < 0:
                skip = max(0, round((lo - t) * sample_rate)) if t != math.inf else 0
            for out in resampler.resample(frame if t < hi else None):
                samples = out.to_ndarray().reshape(-1)
                dropped = min(skip, len(samples))
                skip -= dropped
                chunks.append(samples[dropped:length - have + dropped])
                have += len(chunks[-1])
            if have >= length or t >= hi:
                break
    if have == 0:
        raise _error("the audio track holds no samples" + ("" if lo == 0 else f" after {lo:g} s"))
    return np.concatenate(chunks).astype(np.float32, copy=False)

