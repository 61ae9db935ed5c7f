"""Writing video files with PyAV: the encoder and container follow the file's suffix.

Used to make data sets (Moving MNIST) and test clips that mmcli.data.video then decodes.
PyAV is imported inside the functions.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

PathLike = Union[str, "os.PathLike[str]"]
# suffix -> (video encoders, audio encoders), each in order of preference
CONTAINERS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    ".mp4": (("libx264", "mpeg4"), ("aac",)),
    ".m4v": (("libx264", "mpeg4"), ("aac",)),
    ".mov": (("libx264", "mpeg4"), ("aac",)),
    ".mkv": (("libx264", "mpeg4"), ("aac", "libopus", "libmp3lame")),
    ".avi": (("mpeg4",), ("pcm_s16le",)),  # MP3's encoder delay shifts AVI's frames by one
    ".webm": (("libvpx", "libvpx-vp9"), ("libopus", "opus")),
    ".gif": (("gif",), ()),
}


def _encoder(names: tuple[str, ...]) -> str:
    import av

    for name in names:
        try:
            av.Codec(name, "w")
            return name
        except (av.error.FFmpegError, ValueError):  # not in this build of FFmpeg
            continue
    raise ValueError(f"this FFmpeg has none of the encoders {', '.join(names)}")


def _rate_for(encoder: str, sample_rate: int) -> int:
    import av

    rates = av.Codec(encoder, "w").audio_rates
    if not rates or sample_rate in rates:
        return sample_rate
    return min((r for r in rates if r >= sample_rate), default=max(rates))


def write_video(path: PathLike, frames: np.ndarray, fps: int, audio: Optional[np.ndarray] = None,
                sample_rate: int = 16000) -> None:
    """Encode uint8 RGB frames [T, H, W, 3] (and float32 mono sound in [-1, 1]) by the
    suffix: .mp4/.m4v/.mov/.mkv H.264 (MPEG-4 part 2 without libx264) + AAC, .avi MPEG-4
    part 2 + PCM, .webm VP8 + Opus, .gif (no sound; delays in hundredths of a second, so an
    fps that does not divide 100 drifts). H and W even, except for GIF. Written beside
    `path` and renamed into place when complete."""
    import av

    path = Path(path)
    pixels = np.asarray(frames)
    if pixels.dtype != np.uint8 or pixels.ndim != 4 or pixels.shape[3] != 3 or len(pixels) == 0:
        raise ValueError(f"frames must be uint8 [T, H, W, 3] with T >= 1, not {pixels.dtype} {list(pixels.shape)}")
    suffix = path.suffix.lower()
    if suffix not in CONTAINERS:
        raise ValueError(f"{path}: cannot write {suffix or 'a file without suffix'}; one of {', '.join(CONTAINERS)}")
    video_codecs, audio_codecs = CONTAINERS[suffix]
    height, width = pixels.shape[1:3]
    if suffix != ".gif" and (height % 2 or width % 2):
        raise ValueError(f"height and width must be even for {suffix} (4:2:0 colour), not {height}x{width}")
    if audio is not None and not audio_codecs:
        raise ValueError(f"{suffix} holds no sound")
    tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
    try:
        with av.open(str(tmp), "w") as container:
            _encode(container, pixels, fps, video_codecs, audio_codecs, audio, sample_rate)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _encode(container: Any, pixels: np.ndarray, fps: int, video_codecs: tuple[str, ...], audio_codecs: tuple[str, ...],
            audio: Optional[np.ndarray], sample_rate: int) -> None:
    import av

    video = container.add_stream(_encoder(video_codecs), rate=fps)
    video.height, video.width = pixels.shape[1:3]
    video.pix_fmt = "rgb8" if video.codec_context.name == "gif" else "yuv420p"
    if video.codec_context.name == "libx264":
        video.options = {"crf": "18", "preset": "veryfast"}
    elif video.codec_context.name != "gif":
        video.bit_rate = int(max(1_000_000, video.width * video.height * fps))  # about 1 bit a pixel
    sound = None
    if audio is not None:
        name = _encoder(audio_codecs)
        sound = container.add_stream(name, rate=_rate_for(name, sample_rate))
        sound.layout = "mono"
        audio = np.clip(np.asarray(audio, dtype=np.float32).reshape(-1), -1.0, 1.0)
    done = 0
    for i, rgb in enumerate(pixels):
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame.pts, frame.time_base = i, Fraction(1, fps)
        container.mux(video.encode(frame))
        if sound is not None and audio is not None:  # interleaved: the sound up to this frame's end
            upto = len(audio) if i == len(pixels) - 1 else min(len(audio), round((i + 1) * sample_rate / fps))
            if upto > done:
                chunk = av.AudioFrame.from_ndarray(audio[None, done:upto], format="flt", layout="mono")
                chunk.sample_rate, chunk.pts, chunk.time_base = sample_rate, done, Fraction(1, sample_rate)
                container.mux(sound.encode(chunk))
                done = upto
    container.mux(video.encode(None))
    if sound is not None:
        container.mux(sound.encode(None))
