"""Per-modality decoding into fixed-size tensors, with maintained libraries.

Images: Pillow decodes (any mode: palette, alpha, CMYK, 16-bit are converted to RGB),
torchvision resizes; stored as uint8. Audio: soundfile decodes, librosa resamples and
computes the log-mel spectrogram; stored as float16 dB values, padded to a fixed number
of frames with the true length kept beside. Text stays a string until a tokenizer, which
is fitted on the training split, turns it into ids.
"""

from __future__ import annotations

import math
import os
import stat
import warnings
from pathlib import Path

import numpy as np
import torch

from mmcli import kinds
from mmcli.config import DataConfig

SILENCE_DB = -100.0


class DecodeError(Exception):
    """A file cannot be turned into a tensor; the message says why."""


_FILE_TYPES = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
               (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def file_problem(path: Path) -> str | None:
    """Why `path` is not a file to decode, or None. Asked of `stat` before anything opens
    it: opening a FIFO would wait for a writer forever, and a device such as /dev/zero
    never ends. Symbolic links are followed wherever they point, as absolute paths may."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return f"broken symbolic link (to {os.readlink(path)})" if os.path.islink(path) else "file not found"
    except OSError as exc:
        return f"cannot read ({exc.strerror or exc})"
    except ValueError:  # a NUL character, which no file name can hold
        return "not a file name (it holds a NUL character)"
    if stat.S_ISREG(mode):
        return None
    what = next((name for test, name in _FILE_TYPES if test(mode)), "something else")
    return f"{what}, not a file" if what == "a folder" else f"{what}, not a regular file"


def decode_file(kind: str, path: Path, config: DataConfig, window=None) -> tuple[torch.Tensor, int, list[str]]:
    """One file of a kind read from files: (tensor, its length or 0, the decoders' warnings).

    Every failure is the file's, whatever the library raises (Pillow, libsndfile and
    librosa each have their own exceptions, and new ones with new versions), so one bad
    file is one bad row, never a crash of the whole run. The decoders' warnings are
    returned, not printed, for the caller to report with the row they belong to. `window`:
    the part of the file, (start, end) in seconds (mmcli.data.window), or None."""
    problem = file_problem(path)
    if problem is not None:
        raise DecodeError(problem)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            reader = kinds.get(kind)
            value, length = reader.decode(path, config, window=window) if window else reader.decode(path, config)
        except DecodeError:
            raise
        except Exception as exc:  # noqa: BLE001 (see above)
            raise DecodeError(f"cannot decode {kind} ({type(exc).__name__}: {exc})") from None
    notes = list(dict.fromkeys(str(w.message).strip() for w in caught))
    return value, length, notes


def resize_square(pixels: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 [3, H, W] to [3, size, size], bilinear with antialiasing: torch's own kernel,
    the one torchvision's `resize(pixels, [size, size], antialias=True)` calls on uint8 (the
    same bytes, checked on 300 random shapes), without importing torchvision, which costs
    every preprocessing process about 2 s of CPU (it loads torch._dynamo)."""
    out = torch.nn.functional.interpolate(pixels[None], size=(size, size), mode="bilinear", antialias=True,
                                          align_corners=False)
    return out[0].contiguous()


def decode_image(path: Path, config: DataConfig) -> torch.Tensor:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            img = _to_rgb(img)
    except UnidentifiedImageError:
        raise DecodeError("not an image that Pillow can read") from None
    except Image.DecompressionBombError as exc:  # read from the header, before any pixel is decoded
        raise DecodeError(f"image too large to decode safely: {exc.args[0].split(', could be')[0]}") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise DecodeError(f"cannot decode image ({exc})") from None
    return resize_square(torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1), config.image_size)


def _to_rgb(img):
    from PIL import Image

    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16- and 32-bit greys: scale to 8 bits instead of clipping at 255
        arr = np.asarray(img, dtype=np.float64)
        top = max(float(arr.max()), 1.0)
        img = Image.fromarray((arr * (255.0 / top)).astype(np.uint8), mode="L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    return img.convert("RGB")


def max_seconds(config: DataConfig) -> float:
    """data.max_seconds, which preprocessing derives from the data where the config leaves it
    unset (mmcli.data.lengths): decoding never guesses one."""
    if config.max_seconds is None:
        raise ValueError("data.max_seconds is not set: preprocessing derives it before decoding (mmcli.data.lengths)")
    return config.max_seconds


def audio_frames(config: DataConfig) -> int:
    # librosa's centred STFT gives 1 + samples // hop frames
    return int(max_seconds(config) * config.sample_rate) // config.hop_length + 1


def decode_audio(path: Path, config: DataConfig, window=None) -> tuple[torch.Tensor, int]:
    """Log-mel spectrogram [n_mels, frames] in dB (padded), and the true frame count;
    `window`: (start, end) in seconds of the file (either None), or None for all of it."""
    import soundfile

    start, end = window or (None, None)
    try:
        with soundfile.SoundFile(str(path)) as handle:
            rate = handle.samplerate
            first = int(round((start or 0.0) * rate))
            if first >= handle.frames > 0:
                raise DecodeError(f"the clip starts at {start:g} s, after the recording's end ({handle.frames / rate:.2f} s)")
            if first:
                handle.seek(first)
            wanted = _frames_used(rate, config)
            if end is not None:
                wanted = min(wanted, max(1, int(round(end * rate)) - first))
            samples = handle.read(frames=wanted, dtype="float32", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError, ValueError) as exc:
        raise DecodeError(f"cannot decode audio ({exc})") from None
    if samples.shape[0] == 0:
        raise DecodeError("audio has no samples")
    if not np.isfinite(samples).all():  # float WAVs can hold them; the spectrogram of one is all NaN
        raise DecodeError("audio holds NaN or infinite samples")
    return log_mel(samples.mean(axis=1), rate, config)


def decode_sound_track(path: Path, config: DataConfig, window=None) -> tuple[torch.Tensor, int]:
    """The sound of any container FFmpeg reads (a video's track, M4A, AAC) through PyAV,
    as `decode_audio`'s spectrogram: only max_seconds (of the window) are decoded."""
    from mmcli.data.video import decode_audio_track

    start, end = window or (None, None)
    samples = decode_audio_track(path, sample_rate=config.sample_rate, max_seconds=max_seconds(config), start=start,
                                 end=end)
    if not np.isfinite(samples).all():
        raise DecodeError("audio holds NaN or infinite samples")
    return log_mel(samples, config.sample_rate, config)


def _frames_used(rate: int, config: DataConfig) -> int:
    """The frames of a file at `rate` that make `max_seconds`, and a tenth of a second
    more so that resampling sees what follows the cut: only these are read, so a file of
    hours (or a header that claims 4 GB) costs what a short one does."""
    return math.ceil(max_seconds(config) * rate) + rate // 10 + 1


def log_mel(samples: np.ndarray, rate: int, config: DataConfig) -> tuple[torch.Tensor, int]:
    import librosa

    if rate != config.sample_rate:
        samples = librosa.resample(samples, orig_sr=rate, target_sr=config.sample_rate)
    samples = samples[: int(max_seconds(config) * config.sample_rate)]
    power = librosa.feature.melspectrogram(
        y=samples, sr=config.sample_rate, n_fft=config.n_fft, hop_length=config.hop_length,
        win_length=config.win_length, window=config.window, n_mels=config.n_mels, center=True,
    )
    db = librosa.power_to_db(power, ref=1.0, amin=1e-10, top_db=None)
    if not np.isfinite(db).all():  # float samples far outside [-1, 1] overflow the power to inf, then NaN
        peak = float(np.abs(samples).max())
        raise DecodeError(f"audio too loud to analyse: samples reach {peak:.3g} (float audio lies within [-1, 1])")
    db = np.clip(db, SILENCE_DB, 40.0)
    frames = audio_frames(config)
    out = np.full((config.n_mels, frames), SILENCE_DB, dtype=np.float32)
    length = min(db.shape[1], frames)
    out[:, :length] = db[:, :length]
    return torch.from_numpy(out).to(torch.float16), length


def warm_up(names: set[str], config: DataConfig) -> None:
    """Decode a blank image, a short silence...: the libraries the decoders import on
    first use (librosa's, about 1 s of imports) are then loaded in this
    process, which the forked preprocessing workers inherit instead of each loading them."""
    for name in kinds.names():
        if name in names:
            kinds.get(name).warm_up(config)


def normalize_audio(db: torch.Tensor) -> torch.Tensor:
    """dB values to roughly unit scale; silence (-100 dB) maps to -1.5."""
    return db.float().add_(40.0).div_(40.0)  # in place on the new float copy: one pass each


def normalize_image(pixels: torch.Tensor, config: DataConfig) -> torch.Tensor:
    """uint8 [N, 3, H, W] to (x / 255 - mean) / std, as one multiply and one add per pixel."""
    std = torch.tensor(config.image_std, device=pixels.device)
    scale = (1.0 / (255.0 * std)).view(1, -1, 1, 1)
    shift = (-torch.tensor(config.image_mean, device=pixels.device) / std).view(1, -1, 1, 1)
    return pixels.float().mul_(scale).add_(shift)
