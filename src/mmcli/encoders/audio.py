"""Audio encoders over log-mel spectrograms [B, n_mels, frames]."""

from __future__ import annotations

import torch
from torch import nn

from mmcli.encoders import ENCODERS, EncoderOutput, ModalitySpec
from mmcli.encoders.image import conv_block


class MelCNN(nn.Module):
    """2-D conv blocks over (mel, time), the first striding 4 in frequency and 2 in time;
    frequency is pooled away, and time steps (one per 8 frames) are the tokens."""

    def __init__(self, spec: ModalitySpec, out_dim: int, width: int = 16, **_: object):
        super().__init__()
        self.body = nn.Sequential(conv_block(1, width, stride=(4, 2)), conv_block(width, width * 2), conv_block(width * 2, width * 4))
        self.proj = nn.Linear(width * 4, out_dim)
        self.out_dim = out_dim
        self.stride = 8

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> EncoderOutput:
        maps = self.body(x.unsqueeze(1))  # [B, C, F', T']
        tokens = self.proj(maps.mean(dim=2).transpose(1, 2))  # [B, T', D]
        steps = torch.arange(tokens.shape[1], device=x.device)
        if lengths is None:
            mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=x.device)
        else:
            valid = (lengths.to(x.device) + self.stride - 1) // self.stride
            mask = steps.unsqueeze(0) < valid.clamp(min=1).unsqueeze(1)
        weights = mask.unsqueeze(-1).float()
        pooled = (tokens * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        return EncoderOutput(pooled, tokens, mask)


ENCODERS.register("audio.cnn", "CNN over the log-mel spectrogram", tags=("audio",))(MelCNN)
