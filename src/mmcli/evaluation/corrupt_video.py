"""Corruptions of cached video clips, uint8 [N, T, 3, H, W] with each clip's real frame
count, for `evaluate --corrupt VIDEO:KIND@LEVEL` and `--robustness`. LEVEL in [0, 1] is
the fraction of each clip's real frames touched (noise: the pixel noise's strength, as the
image kind's gaussian_noise):

- dropped_frames: frames lost, shown black (a stream that drops packets);
- frozen_frames: frames replaced by the frame before them (a stalled decoder);
- noise: Gaussian pixel noise on every frame;
- temporal_shuffle: that fraction of the frames put in a random order among themselves.
"""

from __future__ import annotations

import torch

from mmcli.errors import UsageError


def _chosen(n: int, level: float, gen: torch.Generator) -> torch.Tensor:
    """round(level * n) of the indices 0..n-1, at random."""
    k = int(round(level * n))
    return torch.randperm(n, generator=gen)[:k].sort().values


def corrupt_video(x: torch.Tensor, lengths: torch.Tensor, kind: str, level: float, seed: int) -> torch.Tensor:
    if level == 0:
        return x
    gen = torch.Generator().manual_seed(seed)
    if kind == "noise":
        from mmcli.evaluation.corrupt import corrupt_images

        return corrupt_images(x.flatten(0, 1), "gaussian_noise", level, seed).view(x.shape)
    if kind not in ("dropped_frames", "frozen_frames", "temporal_shuffle"):
        raise UsageError(f"unknown video corruption '{kind}'")
    out = x.clone()
    for i in range(x.shape[0]):
        n = max(1, min(int(lengths[i]), x.shape[1]))
        frames = _chosen(n, level, gen)
        if kind == "dropped_frames":
            out[i, frames] = 0
        elif kind == "frozen_frames":
            for t in frames.tolist():
                out[i, t] = out[i, t - 1] if t > 0 else out[i, t]
        elif len(frames) > 1:
            out[i, frames] = x[i, frames[torch.randperm(len(frames), generator=gen)]]
    return out
