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


def ranks(similarity: torch.Tensor, relevant: torch.Tensor | None = None) -> torch.Tensor:
    """1-based rank of each row's first relevant column (`relevant` [N, M] bool; by default
    the diagonal: row i's pair is column i) among the row's columns, best first (ties keep
    the column order, as a stable descending sort gives them)."""
    if relevant is None:
        relevant = torch.eye(len(similarity), dtype=torch.bool)
    order = torch.argsort(similarity, dim=1, descending=True, stable=True)
    return relevant.gather(1, order).float().argmax(dim=1) + 1


def retrieval_scores(similarity: torch.Tensor, a: str, b: str, relevant: torch.Tensor | None = None) -> dict[str, float]:
    """R@1/5/10, median and mean rank from a's rows to b's columns and from b to a; a
    query's hit is any relevant item within K (`relevant`: by default the diagonal)."""
    import numpy as np

    out: dict[str, float] = {}
    recalls = []
    relevant = torch.eye(len(similarity), dtype=torch.bool) if relevant is None else relevant
    for name, sim, rel in ((f"{a}_to_{b}", similarity, relevant), (f"{b}_to_{a}", similarity.t(), relevant.t())):
        r = ranks(sim, rel).float()
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


def _items(groups: list[int]) -> tuple[list[int], torch.Tensor]:
    """The rows that stand for each distinct item (its first row), and [rows, items] bool:
    which item each row holds."""
    first: dict[int, int] = {}
    for i, g in enumerate(groups):
        first.setdefault(g, i)
    column = {g: k for k, g in enumerate(first)}
    holds = torch.zeros(len(groups), len(first), dtype=torch.bool)
    for i, g in enumerate(groups):
        holds[i, column[g]] = True
    return list(first.values()), holds


class TwoTowerHead(TaskHead):
    """Per-modality projection of the pooled features into one space, and the logit scale.
    An absent modality's embedding is zeros (evaluation leaves such pairs out).
    `projection: none` keeps the towers' own space (towers that share one: OpenCLIP's)."""

    def __init__(self, in_dims: dict[str, int], embed_dim: int, temperature: float, max_scale: float,
                 projection: str = "linear"):
        super().__init__()
        self.names = list(in_dims)
        self.proj = nn.ModuleDict({n: nn.Linear(d, embed_dim) if projection == "linear" else nn.Identity()
                                   for n, d in in_dims.items()})
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
    options = {"embed_dim": 128, "temperature": 0.07, "max_scale": 100.0, "projection": "linear"}
    projections = ("linear", "none")  # none: the towers' outputs as they are (docs/crossmodal.md#zero-shot-baselines)

    def adapt_config(self, config, kinds: dict[str, str]):
        pair = list(config.model.modalities or kinds)
        if len(pair) != 2:
            raise ConfigError(f"the retrieval task aligns two modalities; choose them with --modalities A,B "
                              f"(the data has: {', '.join(kinds) or 'none found'})")
        self.check_options()
        if not 0 < float(self.option("temperature")) <= 1 or float(self.option("max_scale")) < 1:
            raise ConfigError("model.task_options: temperature must be in (0, 1] and max_scale at least 1")
        if self.option("projection") not in self.projections:
            raise ConfigError(f"config key 'model.task_options.projection': {' or '.join(self.projections)}, "
                              f"not {self.option('projection')!r}")
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
        projection = str(self.option("projection"))
        if projection == "none" and len(set(in_dims.values())) > 1:
            raise ConfigError("model.task_options.projection=none compares the towers' outputs as they are, so they "
                              f"must have one size; they have {', '.join(f'{n} {d}' for n, d in in_dims.items())} "
                              "(towers of one OpenCLIP model share their embed_dim)")
        return TwoTowerHead(in_dims, int(self.option("embed_dim")), float(self.option("temperature")),
                            float(self.option("max_scale")), projection)

    def loss(self, outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        return pair_loss(outputs, batch.mask, list(self.config.model.modalities))

    def score(self, outputs, data, names: list[str]) -> dict[str, Any]:
        a, b = self.config.model.modalities
        return self.evaluate(outputs, data.labels, names, (data.sources.get(a), data.sources.get(b)))

    def galleries(self, outputs: torch.Tensor, groups) -> tuple[list[int], list[int], list[int], torch.Tensor, torch.Tensor]:
        """The split's complete pairs (`keep`: their rows) and, per side, the row of each
        distinct item; [items of a, items of b] similarity and relevance (paired in some row)."""
        whole = (outputs.float().norm(dim=-1) > 0).all(dim=1)
        keep = [i for i, w in enumerate(whole.tolist()) if w]
        rows = pair_logits(outputs[whole])
        ga, gb = groups if groups is not None else (None, None)
        items_a, rel_a = _items([ga[i] for i in keep] if ga is not None else list(range(len(keep))))
        items_b, rel_b = _items([gb[i] for i in keep] if gb is not None else list(range(len(keep))))
        relevant = (rel_a.t().float() @ rel_b.float()) > 0
        return keep, items_a, items_b, rows[items_a][:, items_b], relevant

    def evaluate(self, outputs: torch.Tensor, labels: torch.Tensor, names: list[str],
                 groups: tuple[list[int] | None, list[int] | None] | None = None) -> dict[str, Any]:
        """Scores over the split's complete pairs; a row that lacks a side (zero embedding)
        is left out. `groups`: per side, each row's first row with the same input. Each
        side's gallery holds its distinct items (a photo once, not once per caption), and a
        query's hits are every item it is paired with in some row (a photo's five captions),
        as OpenCLIP and CLIP_benchmark score COCO and Flickr."""
        a, b = self.config.model.modalities if self.config is not None else ("a", "b")
        keep, items_a, items_b, similarity, relevant = self.galleries(outputs, groups)
        scores = retrieval_scores(similarity, a, b, relevant) if len(keep) else {"mean_recall": 0.0}
        rows = pair_logits(outputs[keep]) if keep else None
        scores.update({"n_examples": len(keep), "n_incomplete": len(outputs) - len(keep), f"n_{a}": len(items_a),
                       f"n_{b}": len(items_b), "loss": float(info_nce(rows)) if rows is not None else float("nan"),
                       "chance_R@1": 1.0 / max(1, len(keep))})
        for x, y, rel in ((a, b, relevant), (b, a, relevant.t())):
            if len(keep):  # a random ranking's R@1: the share of the gallery that is relevant, per query
                scores[f"{x}_to_{y}_chance_R@1"] = float(rel.float().mean(dim=1).mean())
        return scores

    def showcase(self, outputs, data, names: list[str], n: int) -> list[dict[str, Any]]:
        """Per direction, the first `n` distinct queries and their 5 nearest items, as rows of
        `data` with whether each is a hit (evaluate --plots draws them)."""
        a, b = self.config.model.modalities
        keep, items_a, items_b, similarity, relevant = self.galleries(outputs, (data.sources.get(a), data.sources.get(b)))
        shown = []
        for x, y, sim, rel, qs, gs in ((a, b, similarity, relevant, items_a, items_b),
                                       (b, a, similarity.t(), relevant.t(), items_b, items_a)):
            top = sim[:n].topk(min(5, sim.shape[1]), dim=1).indices.tolist()
            shown.append({"query": x, "gallery": y, "rows": [
                {"row": keep[qs[q]], "found": [(keep[gs[j]], bool(rel[q, j])) for j in found]} for q, found in enumerate(top)]})
        return shown

    def predict(self, outputs: torch.Tensor, names: list[str], top_k: int) -> list[dict[str, Any]]:
        raise ConfigError("a retrieval run predicts with --query-text/--query-image/--query-audio and --index DATA, "
                          "or writes embeddings with --embed")


TASKS.register("retrieval", "two modalities aligned (contrastive InfoNCE, CLIP-style); R@1/5/10 and ranks")(Retrieval)
