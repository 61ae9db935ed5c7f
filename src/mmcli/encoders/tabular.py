"""Tabular encoder: numeric columns (standardised with the training split's statistics)
and categorical columns (one learned embedding per value) through an MLP.

The input is one float tensor [B, numeric + categorical]: the standardised numbers
first, then each categorical column's value index (0: unseen or empty). Each column is
one token, so token-level fusions can attend to columns.
"""

from __future__ import annotations

import typing

import torch
from torch import nn

from mmcli.encoders import ENCODERS, Encoder, ModalitySpec


class TabularMLP(Encoder):
    """Numbers and category embeddings -> a two-layer MLP; the tokens are the columns'
    own embeddings (a number times a learned vector, or a category's vector)."""

    def __init__(self, spec: ModalitySpec, out_dim: int, embed_dim: int = 16, hidden: int = 64, **_: object):
        super().__init__()
        self.numeric = spec.numeric
        if spec.numeric + len(spec.categories) == 0:
            raise ValueError("a tabular modality needs at least one column")
        self.number_vectors = nn.Parameter(torch.randn(max(1, spec.numeric), embed_dim) * 0.1)
        self.number_bias = nn.Parameter(torch.zeros(max(1, spec.numeric), embed_dim))
        self.embeds = nn.ModuleList(nn.Embedding(n + 1, embed_dim) for n in spec.categories)
        self.mlp = nn.Sequential(nn.Linear(embed_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, hidden), nn.ReLU(inplace=True))
        self.proj = nn.Linear(hidden, out_dim)
        self.out_dim = out_dim

    def blocks(self) -> list[nn.Module]:
        return [self.mlp]

    def features(self, x: torch.Tensor, lengths: torch.Tensor | None = None):
        columns = []
        if self.numeric:
            numbers = x[:, : self.numeric].float().unsqueeze(-1)  # [B, n, 1]
            columns.append(numbers * self.number_vectors[: self.numeric] + self.number_bias[: self.numeric])
        for j, module in enumerate(self.embeds):
            embed = typing.cast(nn.Embedding, module)
            index = x[:, self.numeric + j].long().clamp(0, embed.num_embeddings - 1)
            columns.append(embed(index).unsqueeze(1))
        tokens = self.mlp(torch.cat(columns, dim=1))  # [B, columns, hidden]
        return tokens, torch.ones(tokens.shape[:2], dtype=torch.bool, device=x.device)


ENCODERS.register("tabular.mlp", "numeric and categorical columns through an MLP", tags=("tabular",))(TabularMLP)
