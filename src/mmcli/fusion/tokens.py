"""Fusions built on attention between modalities.

- `transformer`: self-attention over one token per modality plus a learned [CLS] token
  (as AutoGluon's fusion transformer); F = the mean of the encoder's outputs over [CLS]
  and the present modality tokens. Absent modalities are padding keys.
- `cross_attention`: pairwise cross-modal attention over the encoders' token sequences
  (MulT, Tsai et al., 2019): for every ordered pair (i <- j), the tokens of i attend to the
  tokens of j; each result is mean-pooled over i's tokens; F = MLP of their concatenation.
  A pair with an absent side contributes zeros.
"""

from __future__ import annotations

import torch
from torch import nn

from mmcli.fusion import FUSIONS
from mmcli.fusion.basic import _mask_matrix, zero_absent
from mmcli.fusion.base import Fusion


class ModalityTransformer(Fusion):
    def __init__(self, in_dims: dict[str, int], out_dim: int, layers: int = 2, heads: int = 4, dropout: float = 0.1, **_: object):
        super().__init__()
        self.names = list(in_dims)
        self.proj = nn.ModuleDict({n: nn.Linear(d, out_dim) for n, d in in_dims.items()})
        self.modality_embed = nn.Parameter(torch.zeros(len(self.names), out_dim))
        self.cls = nn.Parameter(torch.zeros(1, 1, out_dim))
        nn.init.normal_(self.modality_embed, std=0.02)
        nn.init.normal_(self.cls, std=0.02)
        layer = nn.TransformerEncoderLayer(out_dim, heads, dim_feedforward=2 * out_dim, dropout=dropout,
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(out_dim)
        self.out_dim = out_dim

    def forward(self, features: dict, mask: dict[str, torch.Tensor]) -> torch.Tensor:
        tokens = torch.stack([self.proj[n](features[n].pooled) for n in self.names], dim=1) + self.modality_embed
        present = _mask_matrix(mask, self.names)
        tokens = tokens * present.unsqueeze(-1).to(tokens.dtype)
        batch = tokens.shape[0]
        seq = torch.cat([self.cls.expand(batch, -1, -1), tokens], dim=1)
        pad = torch.cat([torch.zeros(batch, 1, dtype=torch.bool, device=seq.device), ~present], dim=1)
        out = self.encoder(seq, src_key_padding_mask=pad)
        # the mean over [CLS] and the present modality tokens trained faster than [CLS]
        # alone (toy data, mean of 3 seeds: 60.4 % with [CLS], 70.6 % with the mean)
        keep = (~pad).unsqueeze(-1).to(out.dtype)
        return self.norm((out * keep).sum(dim=1) / keep.sum(dim=1))


class CrossAttention(Fusion):
    def __init__(self, in_dims: dict[str, int], out_dim: int, heads: int = 4, dropout: float = 0.1, **_: object):
        super().__init__()
        self.names = list(in_dims)
        self.pairs = [(i, j) for i in self.names for j in self.names if i != j]
        self.proj = nn.ModuleDict({n: nn.Linear(d, out_dim) for n, d in in_dims.items()})
        self.attn = nn.ModuleDict({f"{i}__{j}": nn.MultiheadAttention(out_dim, heads, dropout=dropout, batch_first=True)
                                   for i, j in self.pairs})
        self.norm = nn.ModuleDict({f"{i}__{j}": nn.LayerNorm(out_dim) for i, j in self.pairs})
        self.mlp = nn.Sequential(nn.Linear(len(self.pairs) * out_dim, out_dim), nn.GELU(), nn.Dropout(dropout))
        self.out_dim = out_dim

    def forward(self, features: dict, mask: dict[str, torch.Tensor]) -> torch.Tensor:
        seqs = {n: self.proj[n](features[n].tokens) for n in self.names}
        outs = []
        for i, j in self.pairs:
            key_pad = ~features[j].token_mask
            # an example without j (or with no real token of j) would make softmax NaN: let it
            # attend to everything, then zero its result below
            usable = mask[j] & mask[i] & features[j].token_mask.any(dim=1)
            key_pad = key_pad & usable.unsqueeze(1)
            attended, _ = self.attn[f"{i}__{j}"](seqs[i], seqs[j], seqs[j], key_padding_mask=key_pad, need_weights=False)
            attended = self.norm[f"{i}__{j}"](attended + seqs[i])
            q_mask = features[i].token_mask.unsqueeze(-1).to(attended.dtype)
            pooled = (attended * q_mask).sum(1) / q_mask.sum(1).clamp(min=1.0)
            outs.append(zero_absent(pooled, usable))
        return self.mlp(torch.cat(outs, dim=1))


FUSIONS.register("transformer", "self-attention over one token per modality (as AutoGluon's fusion transformer)")(ModalityTransformer)
FUSIONS.register("cross_attention", "pairwise cross-modal attention over token sequences (MulT, Tsai et al., 2019)")(CrossAttention)
