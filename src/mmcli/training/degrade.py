"""`train.corrupt`: training on degraded inputs, with the corruptions `evaluate --corrupt`
measures (noise augmentation).

A model trained on clean inputs learns to trust its best modality, and when that one is
degraded a fused model falls with it (on GRID's words, trained on clean sound, every fused
model lost as much in noise as the sound alone did, although the lips alone stayed
ahead: docs/results.md). `train.corrupt: [MODALITY:KIND@LEVEL, ...]` degrades, in every
training batch, the modality of a random `train.corrupt_share` of the examples, at a level
drawn uniformly between 0 and LEVEL, so the model also learns what to do when that
modality is poor. Validation and test inputs are never touched (evaluate them degraded
with `evaluate --corrupt` or `compare --corrupt`). The draws come from the run's seed.

Only kinds whose corruptions act on the stored inputs (images, sound, video) can be
degraded in training: a text's corruptions act on its words before tokenizing.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import TYPE_CHECKING

import torch

from mmcli import kinds
from mmcli.errors import ConfigError, UsageError

if TYPE_CHECKING:  # pragma: no cover
    from mmcli.config import Config
    from mmcli.data.dataset import Batch
    from mmcli.evaluation.corrupt import Corruption

SEED_OFFSET = 7919  # the draws' generator: the run's seed plus this, apart from the shuffling's


class TrainCorruption:
    """Called on each gathered training batch (inputs still as stored), before normalising."""

    def __init__(self, specs: list[Corruption], kinds_of: dict[str, str], share: float, seed: int):
        self.specs, self.kinds_of, self.share = specs, kinds_of, share
        self.generator = torch.Generator().manual_seed(seed + SEED_OFFSET)

    def __call__(self, batch: Batch) -> Batch:
        for spec in self.specs:
            x = batch.inputs.get(spec.modality)
            if x is None or not len(x):
                continue
            rows = torch.rand(len(x), generator=self.generator) < self.share
            level = float(torch.rand(1, generator=self.generator)) * spec.level
            seed = int(torch.randint(0, 2**31 - 1, (1,), generator=self.generator))
            if not bool(rows.any()) or level == 0:
                continue
            lengths = batch.lengths.get(spec.modality)
            part = SimpleNamespace(tensors={spec.modality: x[rows]} | (
                {f"{spec.modality}.lengths": lengths[rows]} if lengths is not None else {}))
            kinds.get(self.kinds_of[spec.modality]).corrupt(part, spec.modality, spec.kind, level, seed)  # type: ignore[arg-type]
            out = x.clone()
            out[rows] = part.tensors[spec.modality].to(x.dtype)
            batch.inputs[spec.modality] = out
        return batch


def check(specs: list[str], kinds_of: dict[str, str]) -> list[Corruption]:
    """train.corrupt's specs parsed against modalities (`kinds_of`); a spec that does not fit
    is exit 2 naming the key."""
    from mmcli.evaluation.corrupt import parse

    out = []
    for text in specs:
        try:
            spec = parse(str(text), kinds_of)
        except UsageError as exc:
            raise ConfigError(f"config key 'train.corrupt': {str(exc).removeprefix('--corrupt ')}") from None
        kind = kinds.get(kinds_of[spec.modality])
        if not kind.corrupts_stored:
            able = ", ".join(k for k in kinds.names() if kinds.get(k).corrupts_stored)
            raise ConfigError(f"config key 'train.corrupt': {text}: a {kind.name} modality cannot be degraded in training "
                              f"(its corruptions act on the raw {kind.plural}); kinds that can: {able}")
        out.append(spec)
    return out


def train_corruption(config: Config, kinds_of: dict[str, str], cached: frozenset[str] = frozenset()) -> TrainCorruption | None:
    """The training corruption of the run's modalities (`kinds_of`), or None. Specs of
    modalities the run does not read are left aside (a comparison's unimodal variants):
    prepare_training checked every spec against all of the data's modalities. `cached`:
    modalities whose frozen encoder reads cached features, whose inputs training never sees."""
    specs = check([t for t in config.train.corrupt if str(t).split(":", 1)[0] in kinds_of], kinds_of)
    for spec in specs:
        if spec.modality in cached:
            raise ConfigError(f"config key 'train.corrupt': {spec}: the encoder of '{spec.modality}' is frozen and training "
                              "reads its cached features, not its inputs; set train.feature_cache=false to degrade them")
    return TrainCorruption(specs, kinds_of, config.train.corrupt_share, config.train.seed) if specs else None
