"""Retrieval: two towers aligned with the symmetric contrastive (InfoNCE) loss, as in CLIP
(Radford et al., 2021), with a learnable temperature capped at `max_scale`.

Example i's two modalities are a pair; every other item of the batch is a negative. The
head projects each modality's pooled features into a shared space and L2-normalizes them.
Its output, [N, 2, D], is each unit embedding times sqrt(scale), so that the dot product
of two outputs is scale x cosine, the logit of the loss, while rankings (which only
compare cosines) are unchanged. `predict --embed` writes the unit vectors.

The metrics follow OpenCLIP's `get_clip_metrics`: `a_to_b_R@k` is the fraction of
queries of modality a whose pair is among the k nearest items of b; ranks are 1-based;
`median_rank` and `mean_rank` in both directions; `mean_recall` averages the six R@k.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from mmcli.errors import ConfigError
from mmcli.heads import TASKS, Task
from mmcli.heads.base import TaskHead

if TYPE_CHECKING:  # pragma: no cover
    from mmcli.data.dataset import Batch

RECALL_AT = (1, 5, 10)


def info_nce(logits: torch.Tensor) -> torch.Tensor:
    """Symmetric cross-entropy of a similarity matrix whose diagonal holds the pairs."""
    target = torch.arange(len(logits), device=logits.device)
    return (nn.functional.cross_entropy(logits, target) + nn.functional.cross_entropy(logits.t(), target)) / 2


def pair_logits(outputs: torch.Tensor) -> torch.Tensor:
    """[N, 2, D] head outputs -> [N, N] logits: row i scores modality a of i against every b."""
    return outputs[:, 0].float() @ outputs[:, 1].float().t()


def ranks(similarity: torch.Tensor) -> torch.Tensor:
    """1-based rank of each row's pair (the diagonal) among the row's columns, best first
    (ties keep the column order, as a stable descending sort gives them)."""
    order = torch.argsort(similarity, dim=1, descending=True, stable=True)
    return (order == torch.arange(len(similarity)).unsqueeze(1)).float().argmax(dim=1) + 1


def retrieval_scores(similarity: torch.Tensor, a: str, b: str) -> dict[str, float]:
    """R@1/5/10, median and mean rank from a's rows to b's columns and from b to a."""
    import numpy as np

    out: dict[str, float] = {}
    recalls = []
    for name, sim in ((f"{a}_to_{b}", similarity), (f"{b}_to_{a}", similarity.t())):
        r = ranks(sim).float()
        for k in RECALL_AT:
            out[f"{name}_R@{k}"] = float((r <= k).float().mean())
            recalls.append(out[f"{name}_R@{k}"])
        out[f"{name}_median_rank"] = float(np.floor(np.median(r.numpy())))  # OpenCLIP's floor(median) of the ranks
        out[f"{name}_mean_rank"] = float(r.mean())
    out["mean_recall"] = sum(recalls) / len(recalls)
    return out


def pair_loss(outputs: torch.Tensor, mask: dict[str, torch.Tensor], names: list[str]) -> torch.Tensor:
    """Mean InfoNCE over every pair of modalities ([N, M, D] outputs, `names` in that
    order), each on the examples that have both; zero (with a graph) when none has two."""
    losses = []
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            both = mask[names[i]] & mask[names[j]]
            if int(both.sum()) >= 2:
                losses.append(info_nce(outputs[both, i].float() @ outputs[both, j].float().t()))
    return torch.stack(losses).mean() if losses else outputs.sum() * 0.0


class TwoTowerHead(TaskHead):
    """Per-modality projection of the pooled features into one space, and the logit scale.
    An absent modality's embedding is zeros (evaluation leaves such pairs out)."""

    def __init__(self, in_dims: dict[str, int], embed_dim: int, temperature: float, max_scale: float):
        super().__init__()
        self.names = list(in_dims)
        self.proj = nn.ModuleDict({n: nn.Linear(d, embed_dim) for n, d in in_dims.items()})
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)))
        self.max_log_scale = math.log(max_scale)

    def scale(self) -> torch.Tensor:
        return self.logit_scale.clamp(max=self.max_log_scale).exp()

    @torch.no_grad()
    def after_step(self) -> None:
        """Clamp the parameter itself after each optimizer step (as OpenCLIP does), so it
        never sits above the cap where its gradient would be zero."""
        self.logit_scale.clamp_(0.0, self.max_log_scale)

    def embed_modalities(self, features: dict) -> dict[str, torch.Tensor]:
        return {n: nn.functional.normalize(self.proj[n](features[n].pooled).float(), dim=-1) for n in self.names}

    def forward(self, features: dict, mask: dict, batch: Batch) -> torch.Tensor:
        unit = self.embed_modalities(features)
        out = torch.stack([unit[n] * mask[n].unsqueeze(-1).to(unit[n].dtype) if n in mask else unit[n]
                           for n in self.names], dim=1)
        return out * self.scale().sqrt()


class Retrieval(Task):
    """Two modalities of each row are a pair; no label column needed."""

    name = "retrieval"
    default_metric = "mean_recall"
    metrics = ("mean_recall", "loss")
    needs_label = False
    crossmodal = True
    options = {"embed_dim": 128, "temperature": 0.07, "max_scale": 100.0}

    def adapt_config(self, config, kinds: dict[str, str]):
        pair = list(config.model.modalities or kinds)
        if len(pair) != 2:
            raise ConfigError(f"the retrieval task aligns two modalities; choose them with --modalities A,B "
                              f"(the data has: {', '.join(kinds) or 'none found'})")
        self.check_options()
        if not 0 < float(self.option("temperature")) <= 1 or float(self.option("max_scale")) < 1:
            raise ConfigError("model.task_options: temperature must be in (0, 1] and max_scale at least 1")
        config = config.copy()
        config.model.modalities = pair
        return config

    def target_values(self, table) -> list[str]:
        return [""] * len(table)

    def names(self, train_values: list[str]) -> list[str]:
        return ["pair"]

    def encode(self, values: list[str], names: list[str]) -> torch.Tensor:
        return torch.zeros(len(values), dtype=torch.long)

    def build_model_head(self, in_dims: dict[str, int], n_outputs: int, config) -> nn.Module:
        self.config = config
        return TwoTowerHead(in_dims, int(self.option("embed_dim")), float(self.option("temperature")),
                            float(self.option("max_scale")))

    def loss(self, outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        return pair_loss(outputs, batch.mask, list(self.config.model.modalities))

    def evaluate(self, outputs: torch.Tensor, labels: torch.Tensor, names: list[str]) -> dict[str, Any]:
        """Scores over the split's complete pairs; a row that lacks a side (zero embedding) is left out."""
        a, b = self.config.model.modalities if self.config is not None else ("a", "b")
        whole = (outputs.float().norm(dim=-1) > 0).all(dim=1)
        outputs = outputs[whole]
        logits = pair_logits(outputs)
        scores = retrieval_scores(logits, a, b) if len(logits) else {"mean_recall": 0.0}
        scores.update({"n_examples": len(outputs), "n_incomplete": int((~whole).sum()),
                       "loss": float(info_nce(logits)) if len(logits) else float("nan"),
                       "chance_R@1": 1.0 / max(1, len(outputs))})
        return scores

    def predict(self, outputs: torch.Tensor, names: list[str], top_k: int) -> list[dict[str, Any]]:
        raise ConfigError("a retrieval run predicts with --query-text/--query-image/--query-audio and --index DATA, "
                          "or writes embeddings with --embed")


TASKS.register("retrieval", "two modalities aligned (contrastive InfoNCE, CLIP-style); R@1/5/10 and ranks")(Retrieval)
