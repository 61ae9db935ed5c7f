"""Image augmentation in training: a random resized crop and, where the data allows it, a
horizontal flip, drawn per example and applied to the whole batch at once.

One affine resampling (`torch.nn.functional.affine_grid` + `grid_sample`) does both, on
whatever device the batch is on, so it costs one interpolation per batch instead of a
Python loop over examples. The crop takes a fraction of the image's area between
`crop_scale` and 1 with an aspect ratio between 3/4 and 4/3 (as torchvision's
RandomResizedCrop), at a random place inside the image, and scales it back to the input
size. In evaluation the module returns its input unchanged: evaluation never augments.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class ImageAugment(nn.Module):
    """Random resized crop (area fraction in [crop_scale, 1]) and optional horizontal flip."""

    def __init__(self, crop_scale: float = 0.6, hflip: bool = False):
        super().__init__()
        if not 0 < crop_scale <= 1:
            raise ValueError(f"crop_scale must be in (0, 1], got {crop_scale!r}")
        self.crop_scale, self.hflip = float(crop_scale), bool(hflip)

    def extra_repr(self) -> str:
        return f"crop_scale={self.crop_scale}, hflip={self.hflip}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or (self.crop_scale >= 1 and not self.hflip):
            return x
        b = x.shape[0]
        area = torch.empty(b, device=x.device).uniform_(self.crop_scale, 1.0)
        log_ratio = torch.empty(b, device=x.device).uniform_(math.log(3 / 4), math.log(4 / 3))
        ratio = log_ratio.exp() if self.crop_scale < 1 else torch.ones(b, device=x.device)  # 1: flips only
        w = (area * ratio).sqrt().clamp(max=1.0)  # the crop's width and height, as fractions of the image's
        h = (area / ratio).sqrt().clamp(max=1.0)
        cx = (torch.rand(b, device=x.device) * 2 - 1) * (1 - w)  # its centre, in [-1, 1] coordinates
        cy = (torch.rand(b, device=x.device) * 2 - 1) * (1 - h)
        flip = torch.ones(b, device=x.device)
        if self.hflip:
            flip = torch.where(torch.rand(b, device=x.device) < 0.5, -flip, flip)
        theta = torch.zeros(b, 2, 3, device=x.device, dtype=x.dtype)
        theta[:, 0, 0], theta[:, 0, 2] = w * flip, cx
        theta[:, 1, 1], theta[:, 1, 2] = h, cy
        grid = nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
        return nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
