"""Moving MNIST (Srivastava, Mansimov and Salakhutdinov, 2015) as labelled video clips, and
an audio-visual version whose clips also speak their digit.

- Motion as in the original generator: each 28x28 digit starts at a random place and moves
  in a random direction, a tenth of its free range (size - 28 pixels) per frame, bouncing
  off the edges; several digits in a clip are drawn with the brighter pixel winning.
- Label: the digit's class, "0" to "9" as the mnist recipe names it; with several digits,
  their distinct classes in ascending order joined by "|" (a multilabel target).
- Split: 80 % train, 10 % val, 10 % test, drawn from the seed. Every clip has its own
  MNIST image(s) while the set lasts (the test set when present, as the avmnist recipe).
- Files: `videos/{id}.mp4` (H.264, grey digits on black), `manifest.csv` (id, video,
  label, split), `sources.csv` (the MNIST indices and FSDD recording of each clip) and
  `recipe.json` (options and input digests).

The audio-visual version (make_av_moving_mnist) puts in each clip's sound track an FSDD
recording of the same digit (of each digit, one after another), at FSDD's 8 kHz, placed
at a random offset and padded with silence (or cut) to the clip's duration. As AV-MNIST
(see the avmnist recipe) it degrades both modalities so that neither alone is enough:

- `snr_db`: white Gaussian noise mixed into the whole track at this signal-to-noise
  ratio, the signal's power measured on the spoken digit alone (default -8 dB, as the
  avmnist recipe; `math.inf` for none);
- `energy_removed`: each digit image is rebuilt from the leading principal components
  that keep (1 - energy_removed) of the variance, fitted on MNIST images that no val or
  test clip uses (default 0.75, as AV-MNIST; 0 keeps the digits intact). The degradation
  is the image's, not the frame's: watching more frames does not undo it;
- `pixel_noise`: the standard deviation, in grey levels, of Gaussian noise added to every
  pixel of every frame independently (default 0).

FSDD's takes 0-4 go with test clips, 5-9 with val clips and the rest with train clips, so
no recording is heard in two splits; recordings are reused within a split and digit,
each about equally often.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from mmcli.data.recipes import avmnist, fsdd, mnist, write_manifest, write_provenance
from mmcli.data.recipes.download import tree_digest
from mmcli.errors import UsageError

DIGIT = 28
SPLITS = (("train", 0.8), ("val", 0.1), ("test", 0.1))
FSDD_TAKES = {"test": range(0, 5), "val": range(5, 10)}  # every other take: train
SNR_DB = avmnist.SNR_DB
ENERGY_REMOVED = avmnist.ENERGY_REMOVED
PCA_FIT_MAX = 2000  # images the principal components are fitted on, at most
Progress = Optional[Callable[[int, int], None]]


def trajectory(frames: int, room: int, rng: np.random.Generator) -> np.ndarray:
    """Top-left corners [frames, 2] (y, x) of a digit bouncing in [0, room] on both axes."""
    pos = rng.uniform(0, room, size=2)
    theta = rng.uniform(0, 2 * math.pi)
    step = 0.1 * room * np.array([math.sin(theta), math.cos(theta)])
    out = np.empty((frames, 2), dtype=np.int64)
    for t in range(frames):
        out[t] = np.rint(pos)
        pos = pos + step
        for axis in (0, 1):
            if pos[axis] < 0 or pos[axis] > room:
                pos[axis] = -pos[axis] if pos[axis] < 0 else 2 * room - pos[axis]
                step[axis] = -step[axis]
    return out


def render(digits: list[np.ndarray], frames: int, size: int, rng: np.random.Generator,
           pixel_noise: float = 0.0) -> np.ndarray:
    """uint8 RGB frames [frames, size, size, 3] of the 28x28 grey `digits` moving."""
    canvas = np.zeros((frames, size, size), dtype=np.uint8)
    for image in digits:
        for t, (y, x) in enumerate(trajectory(frames, size - DIGIT, rng)):
            patch = canvas[t, y:y + DIGIT, x:x + DIGIT]
            np.maximum(patch, image, out=patch)
    if pixel_noise > 0:
        noisy = canvas + rng.normal(0.0, pixel_noise, size=canvas.shape)
        canvas = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    return np.repeat(canvas[..., None], 3, axis=3)


def assign_splits(n: int, rng: np.random.Generator) -> list[str]:
    order = rng.permutation(n)
    splits = [""] * n
    start = 0
    for i, (name, share) in enumerate(SPLITS):
        stop = n if i == len(SPLITS) - 1 else min(n, start + round(share * n))
        for j in order[start:stop]:
            splits[int(j)] = name
        start = stop
    return splits


def speech_track(recordings: list[np.ndarray], samples: int, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """The recordings one after another at a random offset in `samples` of silence (cut
    to fit), mixed with white noise at `snr_db` relative to the speech's power."""
    speech = np.concatenate(recordings)[:samples]
    track = np.zeros(samples, dtype=np.float64)
    offset = int(rng.integers(0, samples - len(speech) + 1))
    track[offset:offset + len(speech)] = speech
    if not math.isinf(snr_db):
        power = float(np.mean(speech ** 2)) or 1e-12
        track += rng.normal(0.0, math.sqrt(power / 10 ** (snr_db / 10)), size=samples)
    peak = float(np.max(np.abs(track)))
    return (track * (0.99 / peak) if peak > 0.99 else track).astype(np.float32)  # one gain: the SNR stays


class _Recordings:
    """FSDD recordings by (split, digit), handed out in a fresh shuffle on every pass."""

    def __init__(self, clips: list[fsdd.Clip], rng: np.random.Generator) -> None:
        self.pool: dict[tuple[str, str], list[fsdd.Clip]] = {}
        for clip in clips:
            split = next((s for s, takes in FSDD_TAKES.items() if clip.take in takes), "train")
            self.pool.setdefault((split, clip.digit), []).append(clip)
        self.queue: dict[tuple[str, str], list[fsdd.Clip]] = {}
        self.rng = rng

    def take(self, split: str, digit: str) -> fsdd.Clip:
        key = (split, digit)
        if key not in self.pool:
            raise UsageError(f"FSDD has no recording of the digit {digit} for the {split} split "
                             f"(takes {FSDD_TAKES.get(split, 'from 10 on')})")
        if not self.queue.get(key):
            members = self.pool[key]
            self.queue[key] = [members[int(k)] for k in self.rng.permutation(len(members))]
        return self.queue[key].pop()


def _digit_images(raw: np.ndarray, used: np.ndarray, held_out: set[int], energy_removed: float,
                  rng: np.random.Generator) -> tuple[np.ndarray, dict[str, object]]:
    """The used images, with `energy_removed` of the PCA energy taken out (fitted on images
    outside `held_out`), and what was done."""
    if energy_removed <= 0:
        return raw[used], {}
    allowed = np.array([i for i in range(len(raw)) if i not in held_out])
    fit = rng.choice(allowed, size=min(PCA_FIT_MAX, len(allowed)), replace=False)
    both = np.concatenate([raw[used], raw[fit]])
    rebuilt, k, kept = avmnist.remove_energy(both, list(range(len(used), len(both))), energy_removed)
    return rebuilt[:len(used)], {"pca_components_kept": k, "variance_kept": round(kept, 4), "pca_fitted_on": len(fit)}


def _check(n: int, frames: int, size: int, fps: int, digits_per_clip: int) -> None:
    if n < 1 or frames < 1 or fps < 1 or digits_per_clip < 1:
        raise UsageError(f"n, frames, fps and digits per clip must be at least 1 (got {n}, {frames}, {fps}, {digits_per_clip})")
    if size < DIGIT or size % 2:
        raise UsageError(f"size must be even and at least {DIGIT} (the digits' size), not {size}")


def _make(out: Path, mnist_dir: Path, fsdd_dir: Optional[Path], n: int, frames: int, size: int, fps: int, seed: int,
          digits_per_clip: int, snr_db: float, energy_removed: float, pixel_noise: float, progress: Progress) -> int:
    import soundfile as sf

    from mmcli.data.video import write_video

    _check(n, frames, size, fps, digits_per_clip)
    out = Path(out)
    mnist_folder = mnist.find(Path(mnist_dir))
    sets = mnist.load(mnist_folder)
    set_name = "test" if "test" in sets else "train"
    raw, labels = sets[set_name]
    rng = np.random.default_rng(seed)
    splits = assign_splits(n, rng)
    wanted = n * digits_per_clip
    used = rng.choice(len(raw), size=wanted, replace=wanted > len(raw)).reshape(n, digits_per_clip)
    held_out = {int(i) for row, split in zip(used, splits) if split != "train" for i in row}
    images, pca = _digit_images(raw, used.reshape(-1), held_out, energy_removed, rng)
    images = images.reshape(n, digits_per_clip, DIGIT, DIGIT)
    recordings = None
    inputs: dict[str, object] = {"mnist_set": set_name, "mnist_sha256": mnist.digests(mnist_folder), **pca}
    if fsdd_dir is not None:
        folder = fsdd.find(Path(fsdd_dir))
        clips = fsdd.clips(folder)
        recordings = _Recordings(clips, rng)
        inputs["fsdd_recordings_digest"] = tree_digest([c.path for c in clips], folder.parent)
    clip_seeds = rng.integers(0, 2**63 - 1, size=n, dtype=np.int64)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, str]] = []
    for i in range(n):
        clip_rng = np.random.default_rng(int(clip_seeds[i]))
        ex_id = f"{splits[i]}-{i:05d}"
        classes = [str(int(labels[j])) for j in used[i]]
        row = {"id": ex_id, "video": f"videos/{ex_id}.mp4", "label": "|".join(sorted(set(classes))), "split": splits[i],
               "mnist_index": "|".join(str(int(j)) for j in used[i]), "fsdd_clip": ""}
        pixels = render(list(images[i]), frames, size, clip_rng, pixel_noise)
        audio, rate = None, 16000
        if recordings is not None:
            spoken = [recordings.take(splits[i], digit) for digit in classes]
            waves = []
            for clip in spoken:
                wave, rate = sf.read(clip.path, dtype="float64", always_2d=False)
                waves.append(wave if wave.ndim == 1 else wave.mean(axis=1))
            audio = speech_track(waves, round(frames / fps * rate), snr_db, clip_rng)
            row["fsdd_clip"] = "|".join(c.id for c in spoken)
        write_video(out / row["video"], pixels, fps, audio, rate)
        rows.append(row)
        if progress is not None and ((i + 1) % 100 == 0 or i + 1 == n):
            progress(i + 1, n)
    write_manifest(out, ["id", "video", "label", "split"], rows)
    write_manifest(out, ["id", "mnist_index"] + (["fsdd_clip"] if recordings is not None else []), rows, name="sources.csv")
    options = {"n": n, "frames": frames, "size": size, "fps": fps, "seed": seed, "digits_per_clip": digits_per_clip,
               "energy_removed": energy_removed, "pixel_noise": pixel_noise}
    if recordings is not None:
        options["snr_db"] = snr_db
    write_provenance(out, "av-moving-mnist" if recordings is not None else "moving-mnist", options, inputs)
    return n


def make_moving_mnist(out: Path, mnist_dir: Path, n: int = 1000, frames: int = 16, size: int = 64, fps: int = 8,
                      seed: int = 0, digits_per_clip: int = 1, energy_removed: float = 0.0, pixel_noise: float = 0.0,
                      progress: Progress = None) -> int:
    """`n` silent clips of moving MNIST digits into `out` (empty or absent); returns n.
    `mnist_dir`: a folder with t10k-images-idx3-ubyte[.gz] (or train-...), or one above it."""
    return _make(out, mnist_dir, None, n, frames, size, fps, seed, digits_per_clip, math.inf, energy_removed,
                 pixel_noise, progress)


def make_av_moving_mnist(out: Path, mnist_dir: Path, fsdd_dir: Path, n: int = 1000, frames: int = 16, size: int = 64,
                         fps: int = 8, seed: int = 0, digits_per_clip: int = 1, snr_db: float = SNR_DB,
                         energy_removed: float = ENERGY_REMOVED, pixel_noise: float = 0.0, progress: Progress = None) -> int:
    """As make_moving_mnist, each clip also speaking its digit(s) in its sound track
    (8 kHz AAC), both modalities degraded (see the module's notes); returns n.
    `fsdd_dir`: FSDD's recordings folder, or a folder above it."""
    return _make(out, mnist_dir, fsdd_dir, n, frames, size, fps, seed, digits_per_clip, snr_db, energy_removed,
                 pixel_noise, progress)
