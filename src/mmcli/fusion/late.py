"""Late fusion: one task head per modality, their outputs averaged over the present
modalities, or weighted by learned softmax weights (`weights: learned`).

Unlike the other fusions it produces the task's outputs itself, so `build` gives it a
head factory and puts no head after it.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from mmcli.fusion import FUSIONS
from mmcli.fusion.basic import _mask_matrix
from mmcli.fusion.base import Fusion


class Late(Fusion):
    produces_outputs = True

    def __init__(self, in_dims: dict[str, int], out_dim: int, make_head: Callable[[int], nn.Module] | None = None,
                 weights: str = "mean", **_: object):
        super().__init__()
        if make_head is None:
            raise ValueError("late fusion needs the task's head factory (it is built by mmcli.models.build)")
        if weights not in ("mean", "learned"):
            raise ValueError(f"late fusion weights must be 'mean' or 'learned', not {weights!r}")
        self.names = list(in_dims)
        self.heads = nn.ModuleDict({n: make_head(d) for n, d in in_dims.items()})
        self.logits = nn.Parameter(torch.zeros(len(self.names))) if weights == "learned" else None
        self.out_dim = out_dim
        self.last_weights: torch.Tensor | None = None

    def forward(self, features: dict, mask: dict[str, torch.Tensor]) -> torch.Tensor:
        outputs = torch.stack([self.heads[n](features[n].pooled) for n in self.names], dim=1)  # [B, M, C]
        present = _mask_matrix(mask, self.names).to(outputs.dtype)
        raw = torch.softmax(self.logits, dim=0) if self.logits is not None else torch.ones(len(self.names), device=outputs.device)
        w = raw.unsqueeze(0) * present
        w = w / w.sum(dim=1, keepdim=True).clamp(min=1e-12)
        self.last_weights = w.detach()
        return (outputs * w.unsqueeze(-1)).sum(dim=1)


FUSIONS.register("late", "one head per modality; outputs averaged, or weighted by learned weights")(Late)
