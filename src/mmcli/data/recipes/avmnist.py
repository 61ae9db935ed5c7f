"""AV-MNIST (Vielzeuf et al., CentralNet, 2018; MultiBench, Liang et al., 2021): MNIST
images paired with spoken digits of the same class, both degraded so that neither
modality alone is enough.

- Images lose a share of their PCA energy: principal components are fitted on the
  training images, and each image is rebuilt from the mean plus the fewest leading
  components that keep at least (1 - share) of the variance; the rest is removed
  (share 0.75 by default: 4 components, 29 % of the variance kept on MNIST's test set).
- Audio is mixed with white Gaussian noise at a signal-to-noise ratio in dB, measured on
  each clip's own power; every example gets its own noise, drawn from the seed.
- FSDD's takes 0-4 pair only with test images and the other takes only with training
  images, so the two splits share no clip and no image. Clips are reused within a split
  (there are far fewer clips than images), each about equally often.

The published data set pairs the 70,000 MNIST images with FSDD's clips and mixes in
ESC-50 noise; this recipe uses the images and clips it is given (by default every image
of the MNIST set found, the test set when present) and white noise, so its figures are
comparable in spirit, not to the decimal.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from mmcli.data.recipes import fsdd, mnist, write_manifest, write_provenance
from mmcli.data.recipes.download import tree_digest
from mmcli.errors import UsageError

ENERGY_REMOVED = 0.75
SNR_DB = -8.0
TEST_FRACTION = 0.15


def pick_images(labels: np.ndarray, n: Optional[int], test_fraction: float,
                rng: np.random.Generator) -> dict[str, dict[str, list[int]]]:
    """split -> digit -> image indices; n images in all (all when None), stratified by digit."""
    keep = np.arange(len(labels)) if n is None or n >= len(labels) else \
        np.sort(rng.permutation(len(labels))[:n])
    out: dict[str, dict[str, list[int]]] = {"train": {}, "test": {}}
    for digit in range(10):
        members = [int(i) for i in rng.permutation(keep[labels[keep] == digit])]
        n_test = max(1, round(len(members) * test_fraction)) if members else 0
        out["test"][str(digit)] = members[:n_test]
        out["train"][str(digit)] = members[n_test:]
    return out


def remove_energy(images: np.ndarray, fit_on: list[int], share: float) -> tuple[np.ndarray, int, float]:
    """Rebuild every image from the leading principal components of the `fit_on` images
    that keep (1 - share) of their variance. Returns (images, components kept, variance kept)."""
    flat = images.reshape(len(images), -1).astype(np.float64)
    if share <= 0:
        return images, flat.shape[1], 1.0
    mean = flat[fit_on].mean(axis=0)
    _, s, vt = np.linalg.svd(flat[fit_on] - mean, full_matrices=False)
    ratio = np.cumsum(s ** 2) / np.sum(s ** 2)
    k = int(np.searchsorted(ratio, 1.0 - share) + 1)
    basis = vt[:k]
    rebuilt = mean + (flat - mean) @ basis.T @ basis
    return np.clip(np.rint(rebuilt), 0, 255).astype(np.uint8).reshape(images.shape), k, float(ratio[k - 1])


def add_noise(signal: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    if np.isinf(snr_db):
        return signal
    power = float(np.mean(signal ** 2)) or 1e-12
    noisy = signal + rng.normal(0.0, np.sqrt(power / 10 ** (snr_db / 10)), size=signal.shape)
    peak = float(np.max(np.abs(noisy)))
    return noisy * (0.99 / peak) if peak > 0.99 else noisy  # one gain for the mix keeps the SNR


def pair(images: dict[str, dict[str, list[int]]], clips: list[fsdd.Clip],
         rng: np.random.Generator) -> list[tuple[str, int, fsdd.Clip]]:
    """(split, image index, clip) for every image; clips cycle within their split and digit."""
    pool: dict[tuple[str, str], list[fsdd.Clip]] = defaultdict(list)
    for clip in clips:
        pool[(fsdd.split_of(clip, None), clip.digit)].append(clip)
    pairs = []
    for split in ("train", "test"):
        for digit, members in images[split].items():
            available = pool[(split, digit)]
            if not available and members:
                raise UsageError(f"FSDD has no {split} clip of the digit {digit}; AV-MNIST needs one")
            order: list[fsdd.Clip] = []
            for j, index in enumerate(members):
                if j % len(available) == 0:  # a fresh shuffle per pass: every clip used equally often
                    order = [available[k] for k in rng.permutation(len(available))]
                pairs.append((split, index, order[j % len(available)]))
    return pairs


def build(out: Path, mnist_folder: Path, recordings: Path, source_text: str, seed: int = 0,
          energy_removed: float = ENERGY_REMOVED, snr_db: float = SNR_DB, n: Optional[int] = None,
          test_fraction: float = TEST_FRACTION, progress: Optional[Callable[[int, int], None]] = None) -> int:
    import soundfile as sf
    from PIL import Image

    sets = mnist.load(mnist_folder)
    set_name = "test" if "test" in sets else "train"
    raw_images, labels = sets[set_name]
    clips = fsdd.clips(recordings)
    rng = np.random.default_rng(seed)
    chosen = pick_images(labels, n, test_fraction, rng)
    train_images = [i for members in chosen["train"].values() for i in members]
    images, k, kept = remove_energy(raw_images, train_images, energy_removed)
    pairs = pair(chosen, clips, rng)
    noise_seeds = rng.integers(0, 2**63 - 1, size=len(pairs), dtype=np.int64)
    (out / "images").mkdir()
    (out / "audio").mkdir()
    rows: list[dict[str, str]] = []
    for j, (split, index, clip) in enumerate(pairs):
        ex_id = f"{split}-{len(rows):05d}"
        Image.fromarray(images[index], mode="L").save(out / "images" / f"{ex_id}.png")
        signal, rate = sf.read(clip.path, dtype="float64", always_2d=False)
        noisy = add_noise(signal, snr_db, np.random.default_rng(int(noise_seeds[j])))
        sf.write(out / "audio" / f"{ex_id}.wav", noisy, rate, subtype="PCM_16")
        rows.append({"id": ex_id, "image": f"images/{ex_id}.png", "audio": f"audio/{ex_id}.wav",
                     "label": clip.digit, "split": split, "mnist_index": str(index), "fsdd_clip": clip.id})
        if progress is not None and (len(rows) % 250 == 0 or len(rows) == len(pairs)):
            progress(len(rows), len(pairs))
    write_manifest(out, ["id", "image", "audio", "label", "split"], rows)
    write_manifest(out, ["id", "mnist_index", "fsdd_clip"], rows, name="pairs.csv")
    write_provenance(out, "avmnist",
                     {"seed": seed, "energy_removed": energy_removed, "snr_db": snr_db, "n": n, "test_fraction": test_fraction},
                     {"source": source_text, "mnist_set": set_name, "mnist_sha256": mnist.digests(mnist_folder),
                      "fsdd_recordings_digest": tree_digest([c.path for c in clips], recordings.parent),
                      "pca_components_kept": k, "variance_kept": round(kept, 4),
                      "pairs": {s: sum(1 for p in pairs if p[0] == s) for s in ("train", "test")}})
    return len(rows)
