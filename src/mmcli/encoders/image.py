"""Image encoders: a small convolutional network trained from scratch."""

from __future__ import annotations

import torch
from torch import nn

from mmcli.encoders import ENCODERS, EncoderOutput, ModalitySpec


def conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SmallCNN(nn.Module):
    """Four stride-2 conv blocks; the last feature map's cells are the region tokens."""

    def __init__(self, spec: ModalitySpec, out_dim: int, width: int = 16, **_: object):
        super().__init__()
        widths = [width, width * 2, width * 4, width * 4]
        layers, cin = [], spec.channels
        for w in widths:
            layers.append(conv_block(cin, w))
            cin = w
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(4))
        self.proj = nn.Linear(cin, out_dim)
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> EncoderOutput:
        maps = self.body(x)  # [B, C, 4, 4]
        tokens = self.proj(maps.flatten(2).transpose(1, 2))  # [B, 16, D]
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=x.device)
        return EncoderOutput(tokens.mean(dim=1), tokens, mask)


ENCODERS.register("image.cnn", "small CNN (4 conv blocks) trained from scratch", tags=("image",))(SmallCNN)
