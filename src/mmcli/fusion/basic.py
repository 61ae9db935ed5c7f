"""Vector-level fusions: identity, concatenation, sum, weighted sum, attention.

- `concat`: [F_1; ...; F_M] then an MLP (early fusion as in most baselines).
- `sum`: projection of each modality to a shared size, then the sum.
- `weighted`: F = sum_m a_m P_m(F_m), a = softmax(w) learned, or fixed weights.
- `attention`: a_m = softmax_m(v^T tanh(W P_m(F_m))) per example,
  F = M' * sum_m a_m P_m(F_m) with M' the number of present modalities (additive
  attention over modalities, Bahdanau et al., 2015).
Absent modalities are zeroed before concatenation, and left out of sums and softmaxes.
"""

from __future__ import annotations

import torch
from torch import nn

from mmcli.fusion import FUSIONS
from mmcli.fusion.base import Fusion


def _mask_matrix(mask: dict[str, torch.Tensor], names: list[str]) -> torch.Tensor:
    return torch.stack([mask[n] for n in names], dim=1)  # [B, M] bool


def zero_absent(x: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Rows of x [B, D] zeroed where `present` [B] is False."""
    return x * present.unsqueeze(1).to(x.dtype)


def _projections(in_dims: dict[str, int], out_dim: int) -> nn.ModuleDict:
    return nn.ModuleDict({n: nn.Sequential(nn.Linear(d, out_dim), nn.GELU()) for n, d in in_dims.items()})


class Identity(Fusion):
    """One modality: its pooled features, zeroed where it is absent."""

    def __init__(self, in_dims: dict[str, int], out_dim: int | None = None, **_: object):
        super().__init__()
        if len(in_dims) != 1:
            raise ValueError("identity fusion takes exactly one modality")
        self.name, self.out_dim = next(iter(in_dims.items()))

    def forward(self, features: dict, mask: dict[str, torch.Tensor]) -> torch.Tensor:
        return zero_absent(features[self.name].pooled, mask[self.name])


class Concat(Fusion):
    """Concatenation of the pooled features, then an MLP."""

    def __init__(self, in_dims: dict[str, int], out_dim: int, dropout: float = 0.1, **_: object):
        super().__init__()
        self.names = list(in_dims)
        self.mlp = nn.Sequential(nn.Linear(sum(in_dims.values()), out_dim), nn.GELU(), nn.Dropout(dropout))
        self.out_dim = out_dim

    def forward(self, features: dict, mask: dict[str, torch.Tensor]) -> torch.Tensor:
        parts = [zero_absent(features[n].pooled, mask[n]) for n in self.names]
        return self.mlp(torch.cat(parts, dim=1))


class Sum(Fusion):
    """Projection to a shared size, then the sum over present modalities."""

    def __init__(self, in_dims: dict[str, int], out_dim: int, **_: object):
        super().__init__()
        self.names = list(in_dims)
        self.proj = _projections(in_dims, out_dim)
        self.out_dim = out_dim

    def projected(self, features: dict) -> torch.Tensor:
        return torch.stack([self.proj[n](features[n].pooled) for n in self.names], dim=1)  # [B, M, D]

    def forward(self, features: dict, mask: dict[str, torch.Tensor]) -> torch.Tensor:
        present = _mask_matrix(mask, self.names).unsqueeze(-1)
        return (self.projected(features) * present).sum(dim=1)


class Weighted(Sum):
    """Weighted sum a*F_x + b*F_y + ...; weights learned (softmax) or fixed in the config."""

    fixed: torch.Tensor  # a buffer: the fixed weights, empty when they are learned

    def __init__(self, in_dims: dict[str, int], out_dim: int, weights: list[float] | dict | None = None, **_: object):
        super().__init__(in_dims, out_dim)
        if weights is None:
            self.logits: nn.Parameter | None = nn.Parameter(torch.zeros(len(self.names)))
            self.register_buffer("fixed", torch.empty(0), persistent=False)
        else:
            if isinstance(weights, dict) and set(weights) != set(self.names):
                raise ValueError(f"weighted fusion needs one weight per modality {self.names}, got keys {sorted(weights)}")
            values = [weights[n] for n in self.names] if isinstance(weights, dict) else list(weights)
            if len(values) != len(self.names) or any(v < 0 for v in values) or sum(values) <= 0:
                raise ValueError(f"weighted fusion needs {len(self.names)} non-negative weights with a positive sum, got {weights}")
            self.logits = None
            self.register_buffer("fixed", torch.tensor(values, dtype=torch.float), persistent=False)
        self.last_weights: torch.Tensor | None = None

    def modality_weights(self, present: torch.Tensor) -> torch.Tensor:
        """Weights [B, M] renormalised over the modalities each example has."""
        if self.logits is not None:
            raw = torch.softmax(self.logits, dim=0)
        else:
            raw = self.fixed / self.fixed.sum().clamp(min=1e-12)
        w = raw.unsqueeze(0) * present.float()
        return w / w.sum(dim=1, keepdim=True).clamp(min=1e-12)

    def forward(self, features: dict, mask: dict[str, torch.Tensor]) -> torch.Tensor:
        w = self.modality_weights(_mask_matrix(mask, self.names))
        self.last_weights = w.detach()
        return (self.projected(features) * w.unsqueeze(-1)).sum(dim=1)


class Attention(Sum):
    """Learned, per-example attention weights over the modality features."""

    def __init__(self, in_dims: dict[str, int], out_dim: int, attn_dim: int = 64, **_: object):
        super().__init__(in_dims, out_dim)
        self.score = nn.Sequential(nn.Linear(out_dim, attn_dim), nn.Tanh(), nn.Linear(attn_dim, 1, bias=False))
        self.last_weights: torch.Tensor | None = None

    def forward(self, features: dict, mask: dict[str, torch.Tensor]) -> torch.Tensor:
        projected = self.projected(features)
        present = _mask_matrix(mask, self.names)
        scores = self.score(projected).squeeze(-1).masked_fill(~present, float("-inf"))
        weights = torch.softmax(scores, dim=1)
        weights = torch.nan_to_num(weights, nan=0.0)  # an example with no modality at all
        self.last_weights = weights.detach()
        # scaled by the number of present modalities, so the result keeps the magnitude
        # of a sum: a plain convex average shrinks the features, and on the toy set
        # training then stalled near the best single modality (50 % against 98 %)
        count = present.sum(dim=1, keepdim=True).to(projected.dtype)
        return (projected * weights.unsqueeze(-1)).sum(dim=1) * count


FUSIONS.register("identity", "one modality's features as they are (unimodal models)")(Identity)
FUSIONS.register("concat", "concatenation, then an MLP")(Concat)
FUSIONS.register("sum", "projection to a shared size, then the sum")(Sum)
FUSIONS.register("weighted", "weighted sum a*F_x + b*F_y, weights learned (softmax) or fixed")(Weighted)
FUSIONS.register("attention", "learned attention weights over the modality features")(Attention)
