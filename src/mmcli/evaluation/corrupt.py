"""Seeded, reproducible corruptions of one modality, at a level in [0, 1].

Level 0 leaves the input unchanged; level 1 is the strongest. Images and audio are
corrupted in the form the model reads (uint8 pixels after resizing; log-mel dB values),
text before tokenization.

    image  gaussian_noise  pixel noise, sigma = 0.5 * level (of the 0..1 range)
           blur            Gaussian blur, sigma = 0.1 + 3 * level pixels (torchvision)
           occlusion       a grey square covering `level` of the area, at a seeded place
           grayscale       blend towards grey by `level` (torchvision rgb_to_grayscale)
           jpeg            JPEG re-encoding, quality 100 - 95 * level (Pillow)
    text   typos           each letter replaced by a random one with probability 0.3 * level
           word_dropout    each word removed with probability `level`
           word_shuffle    `level` of the words moved to random places
    audio  white_noise     noise power added in the mel domain at SNR = 30 - 40 * level dB
           time_mask       a block of `level` * 60 % of the frames silenced
           clipping        mel energies above a ceiling cut off, the ceiling lowered by 40 * level dB
    tabular missing        each cell emptied (a missing value) with probability `level`
           gaussian_noise  numeric cells plus noise of sigma = `level` * the column's standard deviation
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import torch

from mmcli.data.decode import SILENCE_DB
from mmcli import kinds as registry
from mmcli.errors import UsageError

class _Corruptions(Mapping):
    """Each modality kind's corruptions, as its module in mmcli.kinds declares them (read
    when asked: a kind registered later has its own)."""

    def __getitem__(self, kind: str) -> tuple[str, ...]:
        return registry.get(kind).corruptions

    def __iter__(self) -> Iterator[str]:
        return iter(registry.KINDS)

    def __len__(self) -> int:
        return len(registry.KINDS)


KINDS: Mapping[str, tuple[str, ...]] = _Corruptions()


@dataclass(frozen=True)
class Corruption:
    modality: str
    kind: str
    level: float

    def __str__(self) -> str:
        return f"{self.modality}:{self.kind}@{self.level:g}"


def parse(spec: str, kinds_by_modality: dict[str, str]) -> Corruption:
    """`MODALITY:KIND@LEVEL`, checked against the run's modalities."""
    try:
        modality, rest = spec.split(":", 1)
        kind, level_text = rest.split("@", 1)
        level = float(level_text)
    except ValueError:
        raise UsageError(f"--corrupt {spec}: expected MODALITY:KIND@LEVEL, e.g. image:blur@0.5") from None
    if modality not in kinds_by_modality:
        raise UsageError(f"--corrupt {spec}: the run has no modality '{modality}' (it has: {', '.join(kinds_by_modality)})")
    allowed = KINDS[kinds_by_modality[modality]]
    if kind not in allowed:
        raise UsageError(f"--corrupt {spec}: '{kind}' is not a corruption of {kinds_by_modality[modality]} (choose from {', '.join(allowed)})")
    if not 0.0 <= level <= 1.0:
        raise UsageError(f"--corrupt {spec}: the level must be in [0, 1]")
    return Corruption(modality, kind, level)


def corrupt_images(x: torch.Tensor, kind: str, level: float, seed: int) -> torch.Tensor:
    """x: uint8 [N, 3, H, W]."""
    from torchvision.transforms.v2 import functional as F

    if level == 0:
        return x
    gen = torch.Generator().manual_seed(seed)
    if kind == "gaussian_noise":
        noisy = x.float() / 255 + torch.randn(x.shape, generator=gen) * 0.5 * level
        return (noisy.clamp(0, 1) * 255).round().to(torch.uint8)
    if kind == "blur":
        sigma = 0.1 + 3.0 * level
        size = 2 * int(3 * sigma) + 1
        return F.gaussian_blur(x, [size, size], [sigma, sigma])
    if kind == "grayscale":
        grey = F.rgb_to_grayscale(x, num_output_channels=3).float()
        return ((1 - level) * x.float() + level * grey).round().to(torch.uint8)
    if kind == "jpeg":
        return _jpeg(x, max(1, int(round(100 - 95 * level))))
    if kind == "occlusion":
        return _occlude(x, level, gen)
    raise UsageError(f"unknown image corruption '{kind}'")


def _jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    """Re-encode through Pillow's JPEG codec (torchvision's is deprecated from 0.29)."""
    import io

    from PIL import Image

    out = []
    for img in x:
        buffer = io.BytesIO()
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(buffer, format="JPEG", quality=quality)
        buffer.seek(0)
        with Image.open(buffer) as decoded:
            out.append(torch.from_numpy(np.asarray(decoded.convert("RGB")).copy()).permute(2, 0, 1))
    return torch.stack(out)


def _occlude(x: torch.Tensor, level: float, gen: torch.Generator) -> torch.Tensor:
    out = x.clone()
    h, w = x.shape[-2:]
    side_h, side_w = int(round(h * level**0.5)), int(round(w * level**0.5))
    for i in range(len(x)):
        top = int(torch.randint(0, h - side_h + 1, (1,), generator=gen))
        left = int(torch.randint(0, w - side_w + 1, (1,), generator=gen))
        out[i, :, top:top + side_h, left:left + side_w] = 128
    return out


def corrupt_texts(texts: list[str], kind: str, level: float, seed: int) -> list[str]:
    if level == 0:
        return list(texts)
    rng = random.Random(seed)
    if kind == "typos":
        letters = "abcdefghijklmnopqrstuvwxyz"
        return ["".join(rng.choice(letters) if c.isalpha() and rng.random() < 0.3 * level else c for c in t) for t in texts]
    if kind == "word_dropout":
        return [" ".join(w for w in t.split() if rng.random() >= level) for t in texts]
    if kind == "word_shuffle":
        return [_shuffle_words(t, level, rng) for t in texts]
    raise UsageError(f"unknown text corruption '{kind}'")


def _shuffle_words(text: str, level: float, rng: random.Random) -> str:
    words = text.split()
    for _ in range(int(round(level * len(words)))):
        word = words.pop(rng.randrange(len(words)))
        words.insert(rng.randrange(len(words) + 1), word)
    return " ".join(words)


def corrupt_audio(db: torch.Tensor, lengths: torch.Tensor, kind: str, level: float, seed: int) -> torch.Tensor:
    """db: log-mel in dB [N, n_mels, frames] (padding at SILENCE_DB)."""
    if level == 0:
        return db
    x = db.float()
    frames = torch.arange(x.shape[-1])
    valid = frames.unsqueeze(0) < lengths.unsqueeze(1)  # [N, T]
    if kind == "white_noise":
        power = 10 ** (x / 10) * valid.unsqueeze(1)
        mean_power = power.sum(dim=(1, 2)) / (valid.sum(dim=1) * x.shape[1]).clamp(min=1)
        snr_db = 30.0 - 40.0 * level
        gen = torch.Generator().manual_seed(seed)
        noise = (mean_power / 10 ** (snr_db / 10)).view(-1, 1, 1) * torch.empty(x.shape).exponential_(generator=gen)
        out = 10 * torch.log10(power + noise * valid.unsqueeze(1) + 1e-10)
        return torch.where(valid.unsqueeze(1), out, x).clamp(SILENCE_DB, 40.0).to(db.dtype)
    if kind == "time_mask":
        gen = torch.Generator().manual_seed(seed)
        out = x.clone()
        for i, n in enumerate(lengths.tolist()):
            width = int(round(0.6 * level * n))
            start = int(torch.randint(0, max(1, n - width + 1), (1,), generator=gen))
            out[i, :, start:start + width] = SILENCE_DB
        return out.to(db.dtype)
    if kind == "clipping":
        ceiling = x.amax(dim=(1, 2), keepdim=True) - 40.0 * level
        return torch.minimum(x, ceiling).to(db.dtype)
    raise UsageError(f"unknown audio corruption '{kind}'")


def corrupt_cells(rows: list[list[str]], numeric: int, kind: str, level: float, seed: int) -> list[list[str]]:
    """rows: a tabular modality's cells, its `numeric` numeric columns first."""
    if level == 0:
        return [list(r) for r in rows]
    rng = random.Random(seed)
    if kind == "missing":
        return [["" if rng.random() < level else v for v in r] for r in rows]
    if kind == "gaussian_noise":
        out = [list(r) for r in rows]
        for j in range(numeric):
            values = [float(r[j]) for r in rows if r[j]]
            std = float(np.std(values)) if values else 0.0
            for r in out:
                if r[j]:
                    r[j] = repr(float(r[j]) + rng.gauss(0.0, level * std))
        return out
    raise UsageError(f"unknown tabular corruption '{kind}'")


def perturb(table, drops: list[str], corruptions: list[Corruption], seed: int = 0):
    """A copy of `table` with modalities dropped (absent through the mask) and corrupted."""
    out = dataclasses.replace(table, tensors=dict(table.tensors), present=dict(table.present), texts=dict(table.texts))
    for name in drops:
        out.present[name] = torch.zeros(len(table), dtype=torch.bool)
    for i, c in enumerate(corruptions):
        registry.get(table.modalities[c.modality].kind).corrupt(out, c.modality, c.kind, c.level, seed * 1000 + i)
    return out
