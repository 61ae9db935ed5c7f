"""Identity verification (issue 22): an embedding per example, trained on an identity column
with a metric-learning loss, scored on same/different trials of identities never trained on.

The head maps the fused features (or one modality's) to a unit embedding and holds one
centre per training identity. Its output is [N, D + C]: the embedding, then its cosine to
each centre, which is what the margin losses read:

- `cosface` (default; Wang et al., CVPR 2018): the target's cosine gets `margin` taken
  away, then every cosine is multiplied by `scale`; on ORL faces (3 seeds, 8 people held
  out) its test EER was 7.9 % against ArcFace's 10.2 % and batch-hard triplets' 14.7 %
  (docs/verification.md);
- `arcface` (Deng et al., CVPR 2019): the target's angle gets `margin` added, cos(theta + m);
- `triplet`: batch-hard triplets on the embeddings (Hermans et al., 2017), a margin on the
  cosine distance; the centres are unused.

An unset `scale` follows the number of training identities C: AdaCos's fixed scale
sqrt(2) x ln(C - 1) (Zhang et al., CVPR 2019), at least 8, where a constant scale sized for
thousands of identities saturates the softmax of a few dozen.

Scores: the cosine of two embeddings. Evaluation draws trials from the split's identities
(`trials`, `trial_seed`: the same trials for every variant and seed) and reports EER,
minDCF, TAR@FAR, ROC AUC (mmcli.evaluation.verification) and rank-1 identification with one
enrolled example per identity. The decision threshold is the EER threshold of the
validation trials, chosen after training and kept in target.json.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from mmcli.errors import ConfigError
from mmcli.heads import TASKS, Task

if TYPE_CHECKING:  # pragma: no cover
    from mmcli.data.dataset import Batch

LOSSES = {"cosface": 0.35, "arcface": 0.5, "triplet": 0.2}  # the loss and its default margin


class VerificationHead(nn.Module):
    def __init__(self, in_dim: int, n_identities: int, embed_dim: int, hidden_dim: int = 128, dropout: float = 0.1):
        super().__init__()
        self.embed_dim = embed_dim
        self.net = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden_dim, embed_dim))
        self.centres = nn.Parameter(torch.randn(n_identities, embed_dim) / math.sqrt(embed_dim))

    def forward(self, fused: torch.Tensor) -> torch.Tensor:
        unit = nn.functional.normalize(self.net(fused).float(), dim=-1)
        cosine = unit @ nn.functional.normalize(self.centres.float(), dim=-1).t()
        return torch.cat([unit, cosine], dim=1)


def margin_logits(cosine: torch.Tensor, target: torch.Tensor, loss: str, margin: float, scale: float) -> torch.Tensor:
    """The scaled logits with the target identity's margin applied (ArcFace or CosFace)."""
    one_hot = nn.functional.one_hot(target, cosine.shape[1]).bool()
    if loss == "cosface":
        adjusted = cosine - margin
    else:  # arcface: cos(theta + m); past theta = pi - m, where that stops falling, the CosFace-like fallback
        sine = (1.0 - cosine.pow(2)).clamp(min=1e-7).sqrt()
        adjusted = torch.where(cosine > math.cos(math.pi - margin), cosine * math.cos(margin) - sine * math.sin(margin),
                               cosine - math.sin(math.pi - margin) * margin)
    return scale * torch.where(one_hot, adjusted, cosine)


def batch_hard_triplet(unit: torch.Tensor, target: torch.Tensor, margin: float) -> torch.Tensor:
    """Mean over anchors with a positive and a negative in the batch of
    max(0, hardest positive distance - hardest negative distance + margin), cosine distances."""
    distance = 1.0 - unit @ unit.t()
    same = target.unsqueeze(0) == target.unsqueeze(1)
    eye = torch.eye(len(target), dtype=torch.bool, device=unit.device)
    positive = (distance * (same & ~eye)).max(dim=1).values
    negative = distance.masked_fill(same, float("inf")).min(dim=1).values
    usable = (same & ~eye).any(dim=1) & (~same).any(dim=1)
    if not bool(usable.any()):
        return unit.sum() * 0.0
    return (positive - negative + margin).clamp(min=0)[usable].mean()


def pair_cosines(unit: torch.Tensor, a, b):
    """The trials' scores: the cosine of rows a[k] and b[k] of unit embeddings, as numpy."""
    return (unit[torch.from_numpy(a)] * unit[torch.from_numpy(b)]).sum(dim=1).numpy()


class Verification(Task):
    """Is this the same identity? One embedding per example; the label column is the identity."""

    name = "verification"
    default_metric = "eer"
    metrics = ("eer", "min_dcf", "tar_at_far_1e-2", "tar_at_far_1e-3", "roc_auc", "rank1", "loss")
    lower_is_better = ("eer", "min_dcf", "min_dcf_raw", "loss")
    disjoint_labels = True
    robustness_metric = "roc_auc"  # a rate where higher is better, as the robustness curves want (EER is not)
    options = {"loss": "cosface", "margin": None, "scale": None, "embed_dim": 128, "trials": 10000, "trial_seed": 0}

    def adapt_config(self, config, kinds: dict[str, str]):
        config = config.copy()
        self.config = config
        self.check_options()
        loss, margin, scale = self.option("loss"), self.option("margin"), self.option("scale")
        if loss not in LOSSES:
            raise ConfigError(f"model.task_options.loss: one of {', '.join(LOSSES)}, not {loss!r}")
        for key, value, low in (("margin", margin, 0.0), ("scale", scale, 1e-9)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < low):
                raise ConfigError(f"model.task_options.{key}: a number of at least {low:g} (or unset), not {value!r}")
        for key in ("embed_dim", "trials"):
            value = self.option(key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 2:
                raise ConfigError(f"model.task_options.{key}: a whole number of at least 2, not {value!r}")
        config.model.task_options = {**self.options, **config.model.task_options}
        return config

    # targets: training identities are classes; any other identity is a distinct negative number
    def names(self, train_values: list[str]) -> list[str]:
        return sorted(set(train_values))

    def encode(self, values: list[str], names: list[str]) -> torch.Tensor:
        index = {v: i for i, v in enumerate(names)}
        unseen = {v: -(k + 1) for k, v in enumerate(sorted(set(values) - set(index)))}
        return torch.tensor([index[v] if v in index else unseen[v] for v in values], dtype=torch.long)

    def n_outputs(self, names: list[str]) -> int:
        return int(self.option("embed_dim")) + len(names)

    def build_head(self, in_dim: int, n_outputs: int, hidden_dim: int, dropout: float) -> nn.Module:
        embed_dim = int(self.option("embed_dim"))
        return VerificationHead(in_dim, n_outputs - embed_dim, embed_dim, hidden_dim, dropout)

    def margin_and_scale(self, n_identities: int) -> tuple[float, float]:
        loss, margin, scale = self.option("loss"), self.option("margin"), self.option("scale")
        margin = LOSSES[loss] if margin is None else float(margin)
        scale = max(8.0, math.sqrt(2.0) * math.log(max(2, n_identities - 1))) if scale is None else float(scale)
        return margin, scale

    def loss(self, outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        embed_dim = int(self.option("embed_dim"))
        unit, cosine, target = outputs[:, :embed_dim], outputs[:, embed_dim:], batch["label"]
        known = target >= 0
        margin, scale = self.margin_and_scale(cosine.shape[1])
        if self.option("loss") == "triplet":
            return batch_hard_triplet(unit[known], target[known], margin)
        if not bool(known.any()):
            return outputs.sum() * 0.0
        logits = margin_logits(cosine[known], target[known], self.option("loss"), margin, scale)
        return nn.functional.cross_entropy(logits, target[known])

    def embeddings(self, outputs: torch.Tensor, names: list[str]) -> torch.Tensor:
        """The embedding part of outputs (an ensemble's is wider: its members' side by side)."""
        return outputs[:, :outputs.shape[1] - len(names)].float()

    def scores(self, outputs: torch.Tensor, targets: torch.Tensor, names: list[str]):
        """The split's trials: (scores, truths) as numpy arrays."""
        from mmcli.evaluation.verification import draw_trials

        emb = self.embeddings(outputs, names)
        a, b, same = draw_trials(targets.tolist(), int(self.option("trials")), int(self.option("trial_seed")))
        return pair_cosines(emb, a, b), same

    def evaluate(self, outputs: torch.Tensor, targets: torch.Tensor, names: list[str]) -> dict[str, Any]:
        from mmcli.evaluation.verification import gallery_split, rank1, roc_points, verification_scores

        ids = targets.tolist()
        n_ids = len(set(ids))
        out: dict[str, Any] = {"n_examples": len(ids), "n_identities": n_ids}
        if n_ids < 2 or n_ids == len(ids):
            return {**out, "eer": float("nan"), "note": "needs two or more identities, one with two or more examples"}
        scores, same = self.scores(outputs, targets, names)
        out.update(verification_scores(scores, same, self.state.get("threshold")))
        out["roc_curve"] = roc_points(scores, same)
        gallery, probes = gallery_split(ids, int(self.option("trial_seed")))
        emb = self.embeddings(outputs, names)
        similarity = (emb[probes] @ emb[gallery].t()).numpy()
        out["rank1"] = rank1(similarity, [ids[i] for i in probes], [ids[i] for i in gallery])
        known = targets >= 0  # training identities (evaluation on the training split): the loss is defined
        if bool(known.any()):
            logits = outputs[known, emb.shape[1]:].float() * self.margin_and_scale(len(names))[1]
            out["loss"] = float(nn.functional.cross_entropy(logits, targets[known]))
        return out

    def evaluate_trials(self, outputs: torch.Tensor, ids: list[str], names: list[str], path) -> dict[str, Any]:
        """The metrics of the user's own trials (evaluate --trials FILE), pairs of example ids."""
        from mmcli.evaluation.verification import read_trials, roc_points, trial_indices, verification_scores

        a, b, same = trial_indices(path, read_trials(path), ids)
        if same.all() or not same.any():
            from mmcli.errors import DataError

            raise DataError(f"{path}: every trial is {'same' if same.all() else 'different'}-identity; the metrics "
                            f"need both kinds")
        emb = self.embeddings(outputs, names)
        scores = pair_cosines(emb, a, b)
        out: dict[str, Any] = {"n_examples": len(ids), "trials_file": str(path)}
        out.update(verification_scores(scores, same, self.state.get("threshold")))
        out["roc_curve"] = roc_points(scores, same)
        return out

    def after_fit(self, outputs: torch.Tensor, targets: torch.Tensor, names: list[str]) -> dict[str, Any]:
        """The decision threshold: where the validation trials' false accepts equal their false rejects."""
        from mmcli.evaluation.verification import eer

        if len(set(targets.tolist())) < 2:
            return {}
        scores, same = self.scores(outputs, targets, names)
        if same.all() or not same.any():
            return {}
        rate, threshold = eer(scores, same)
        threshold = min(1.0, max(-1.0, threshold))  # float32 unit vectors' cosines can pass 1 by an ulp
        return {"threshold": threshold, "threshold_rule": "EER of the validation trials", "val_eer": rate}

    def average(self, outputs: list[torch.Tensor], weights: list[float] | None = None) -> torch.Tensor:
        """Score-level fusion of models trained apart: their embeddings side by side, each
        times the square root of its weight (1/M each by default), so that the cosine of two
        such rows is the weighted mean of the members' cosines."""
        n_names = outputs[0].shape[1] - int(self.option("embed_dim"))
        shares = weights or [1.0 / len(outputs)] * len(outputs)
        parts = [self.embeddings(o, [""] * n_names) * math.sqrt(w) for o, w in zip(outputs, shares)]
        return torch.cat([*parts, torch.zeros(len(outputs[0]), n_names)], dim=1)

    def predict(self, outputs: torch.Tensor, names: list[str], top_k: int) -> list[dict[str, Any]]:
        return [{"embedding": [round(x, 6) for x in row]} for row in self.embeddings(outputs, names).tolist()]

    def csv_table(self, predictions: list[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
        rows = [[p["id"], " ".join(f"{x:.6f}" for x in p["embedding"]), "|".join(p["modalities_used"])] for p in predictions]
        return ["id", "embedding", "modalities_used"], rows


TASKS.register("verification", "identity verification: an embedding per example (CosFace by default); "
               "EER, minDCF, TAR@FAR on identities held out")(Verification)
