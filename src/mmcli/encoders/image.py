"""Image encoders: a small convolutional network trained from scratch.

Pretrained torchvision backbones are in `backbones.py`."""

from __future__ import annotations

import torch
from torch import nn

from mmcli.encoders import ENCODERS, Encoder, ModalitySpec


def conv_block(cin: int, cout: int, stride: int | tuple[int, int] = 2) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SmallCNN(Encoder):
    """A patchify stem (4x4 patches, as in ConvNeXt) and three conv blocks; the last feature
    map, pooled to 4x4, gives the 16 region tokens. At 64x64 and width 32 it costs about 5 M
    multiply-adds per image, so it trains in seconds on a laptop's CPU (width 16, 1.4 M, left
    mdi-icons' image model 8 points lower: docs/results.md)."""

    def __init__(self, spec: ModalitySpec, out_dim: int, width: int = 32, **_: object):
        super().__init__()
        stem = nn.Sequential(nn.Conv2d(spec.channels, width, 4, stride=4, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        self.body = nn.Sequential(stem, conv_block(width, width * 2), conv_block(width * 2, width * 4),
                                  conv_block(width * 4, width * 4, stride=1), nn.AdaptiveAvgPool2d(4))
        self.proj = nn.Linear(width * 4, out_dim)
        self.out_dim = out_dim

    def blocks(self) -> list[nn.Module]:
        return list(self.body)[:4]

    def features(self, x: torch.Tensor, lengths: torch.Tensor | None = None):
        maps = self.body(x)  # [B, C, 4, 4]
        raw = maps.flatten(2).transpose(1, 2)  # [B, 16, C]
        return raw, torch.ones(raw.shape[:2], dtype=torch.bool, device=x.device)


ENCODERS.register("image.cnn", "small CNN (patchify stem + 3 conv blocks) trained from scratch", tags=("image",))(SmallCNN)
