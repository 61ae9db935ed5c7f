"""`model.crossmodal: translate`: predict from one modality that has learned to translate
itself into the others (MCTN-style; Pham et al., 2019, "Found in Translation").

The source is the first of `model.modalities`. For every other modality t, a translator
maps the source's pooled features to t's; the head reads the source's features and its
translations, never t itself, so the model predicts with every other modality missing.
Training adds, per target t, the translation loss (1 - cosine to t's features, which
are held fixed for this loss, as MCTN's targets are) and the task's loss on t's own
features through an auxiliary head, which is what teaches t's encoder features worth
translating into. Examples without t skip t's losses. An example without the source is
answered by the auxiliary heads of the targets it has, so the presence mask means what it
means for every other model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn
from mmcli.heads.base import TaskHead

if TYPE_CHECKING:  # pragma: no cover
    from mmcli.data.dataset import Batch


class TranslationHead(TaskHead):
    adds_losses = True
    def __init__(self, source: str, in_dims: dict[str, int], make_head, hidden: int, weight: float = 1.0):
        super().__init__()
        self.source, self.weight = source, weight
        self.targets = [n for n in in_dims if n != source]
        dim = in_dims[source]
        self.translate = nn.ModuleDict({t: nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, in_dims[t]))
                                        for t in self.targets})
        self.head = make_head(dim + sum(in_dims[t] for t in self.targets))
        self.aux = nn.ModuleDict({t: make_head(in_dims[t]) for t in self.targets})

    def forward(self, features: dict, mask: dict, batch: Batch) -> torch.Tensor:
        z = features[self.source].pooled
        out = self.head(torch.cat([z, *(self.translate[t](z) for t in self.targets)], dim=1))
        have = mask[self.source]
        if bool(have.all()):
            return out
        # without the source there is nothing to translate: the targets' own auxiliary
        # heads (trained on their features) answer, averaged over the targets present;
        # an example with nothing present gets zeros (the uniform answer)
        fallback, count = torch.zeros_like(out), torch.zeros_like(out[:, :1])
        for t in self.targets:
            present = mask[t].to(out.dtype).unsqueeze(1)
            fallback = fallback + present * self.aux[t](features[t].pooled)
            count = count + present
        return torch.where(have.unsqueeze(1), out, fallback / count.clamp_min(1))

    def extra_losses(self, features: dict, batch: Batch, task) -> dict[str, torch.Tensor]:
        z = features[self.source].pooled
        out = {}
        for t in self.targets:
            have = batch.mask[t]
            if not bool(have.any()):
                continue
            guess, goal = self.translate[t](z[have]), features[t].pooled[have].detach()
            out[f"translate:{t}"] = self.weight * (1 - nn.functional.cosine_similarity(guess, goal, dim=-1)).mean()
            sub = batch.with_label(batch.label[have] if batch.label is not None else None)
            out[f"target:{t}"] = task.loss(self.aux[t](features[t].pooled[have]), sub)
        return out
