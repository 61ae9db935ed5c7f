"""Text encoders over token ids [B, L] (0 is padding)."""

from __future__ import annotations

import torch
from torch import nn

from mmcli.encoders import ENCODERS, EncoderOutput, ModalitySpec


def _masked_mean(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask.unsqueeze(-1).float()
    return (tokens * weights).sum(1) / weights.sum(1).clamp(min=1.0)


class BiGRU(nn.Module):
    """Embedding + one bidirectional GRU layer; the states are the tokens."""

    def __init__(self, spec: ModalitySpec, out_dim: int, embed_dim: int = 64, hidden: int = 64, **_: object):
        super().__init__()
        self.embed = nn.Embedding(spec.vocab_size, embed_dim, padding_idx=0)
        self.rnn = nn.GRU(embed_dim, hidden, batch_first=True, bidirectional=True)
        self.proj = nn.Linear(2 * hidden, out_dim)
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> EncoderOutput:
        mask = x != 0
        # packed, so the backward direction starts at the last real token, not at padding
        counts = mask.sum(dim=1).clamp(min=1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(self.embed(x), counts, batch_first=True, enforce_sorted=False)
        states, _ = self.rnn(packed)
        states, _ = nn.utils.rnn.pad_packed_sequence(states, batch_first=True, total_length=x.shape[1])
        tokens = self.proj(states)
        return EncoderOutput(_masked_mean(tokens, mask), tokens, mask)


class TextCNN(nn.Module):
    """Embedding + parallel 1-D convolutions of widths 2, 3, 4 (Kim, 2014), max-pooled."""

    def __init__(self, spec: ModalitySpec, out_dim: int, embed_dim: int = 64, channels: int = 64, **_: object):
        super().__init__()
        self.embed = nn.Embedding(spec.vocab_size, embed_dim, padding_idx=0)
        self.convs = nn.ModuleList(nn.Conv1d(embed_dim, channels, k, padding=k // 2) for k in (2, 3, 4))
        self.proj = nn.Linear(3 * channels, out_dim)
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> EncoderOutput:
        mask = x != 0
        emb = self.embed(x).transpose(1, 2)
        maps = [torch.relu(conv(emb))[..., : x.shape[1]] for conv in self.convs]
        tokens = self.proj(torch.cat(maps, dim=1).transpose(1, 2))
        filled = tokens.masked_fill(~mask.unsqueeze(-1), float("-inf"))
        pooled = filled.max(dim=1).values
        pooled = torch.where(torch.isfinite(pooled), pooled, torch.zeros_like(pooled))
        return EncoderOutput(pooled, tokens, mask)


ENCODERS.register("text.bigru", "embedding + bidirectional GRU", tags=("text",))(BiGRU)
ENCODERS.register("text.textcnn", "embedding + TextCNN (Kim, 2014)", tags=("text",))(TextCNN)
