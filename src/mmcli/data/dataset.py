"""Tensors ready for a model, and the batch every model reads.

A batch (`Batch`) holds each modality's inputs (`inputs[m]`), their lengths where a kind
keeps them (`lengths[m]`), which examples have each modality (`mask[m]`), the rows'
positions (`index`), their targets (`label`, None without), and a frozen encoder's cached
features (`features[m]`, `feature_mask[m]`), each in a field of its own: a modality may be
named anything, `mask` or `label` included. `mask[m][i]` is False where example i lacks
modality m; its input is then zeros and the fusion leaves it out. Text and audio are padded only to
the longest example of the batch, not to the configured maximum: the encoders mask the
padding, and short clips and captions then cost what they are, not what the cap allows.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterable, Iterator

import torch

from mmcli.config import DataConfig
from mmcli import kinds
from mmcli.data.table import Table


@dataclass
class Encoded:
    """Model-ready inputs for some rows of a table (still uint8/float16 to save memory)."""

    ids: list[str]
    inputs: dict[str, torch.Tensor]
    lengths: dict[str, torch.Tensor]
    present: dict[str, torch.Tensor]
    labels: torch.Tensor | None = None
    kinds: dict[str, str] = field(default_factory=dict)
    features: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)  # frozen encoders' (raw, mask)
    sources: dict[str, list[int]] = field(default_factory=dict)  # per modality: each row's first row with the same input

    def __len__(self) -> int:
        return len(self.ids)


def encode_table(table: Table, modalities: list[str], tokenizers: dict, targets=None,
                 values: list[str] | None = None, sources: dict[str, list[int]] | None = None) -> Encoded:
    """`targets` turns the target strings (`values`, by default the label column) into the
    task's target tensor (None: no targets). `sources`: which rows share an input
    (`table_sources`), by default read from `table` itself; given where `table` was
    degraded (a corruption makes one photo's rows differ)."""
    inputs, lengths, present = {}, {}, {}
    for name in modalities:
        inputs[name], length = kinds.get(table.modalities[name].kind).encode(table, name, tokenizers.get(name))
        if length is not None:
            lengths[name] = length
        present[name] = table.present[name]
    labels = None
    values = table.labels if values is None else values
    if targets is not None and values is not None:
        labels = targets(list(values))
    kinds_of = {name: table.modalities[name].kind for name in modalities}
    if sources is None:
        sources = table_sources(table, list(table.modalities))
    return Encoded(list(table.ids), inputs, lengths, present, labels, kinds_of, sources=sources)


def table_sources(table: Table, modalities: list[str]) -> dict[str, list[int]]:
    """Per modality, each row's first row with the same input (the same decoded file, or
    the same text): the rows of one photo with five captions share their image's. Scoring
    reads it: a caption is scored against every caption of its photo (mmcli.heads)."""
    from mmcli.data.splits import content_groups, first_rows

    out = {}
    for name in modalities:
        if name in table.texts:
            out[name] = first_rows([repr(v) for v in table.texts[name]])
        elif name in table.tensors:
            out[name] = content_groups(table.tensors[name])
    return out


# the batch's fields beside its modalities' inputs
BATCH_KEYS = ("lengths", "mask", "index", "label", "features", "feature_mask")
_PER_MODALITY = ("inputs", "lengths", "mask", "features", "feature_mask")


@dataclass
class Batch:
    """One batch of examples for a model (see the module's docstring). `batch["mask"]`,
    `batch["label"]`... read a field by name, and `batch[m]` a modality's inputs when `m`
    names no field, as the dict batches of earlier versions were read; mmcli's own code
    reads `batch.inputs[m]`, which no modality name can shadow."""

    inputs: dict[str, torch.Tensor] = field(default_factory=dict)
    lengths: dict[str, torch.Tensor] = field(default_factory=dict)
    mask: dict[str, torch.Tensor] = field(default_factory=dict)
    index: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    label: torch.Tensor | None = None
    features: dict[str, torch.Tensor] = field(default_factory=dict)
    feature_mask: dict[str, torch.Tensor] = field(default_factory=dict)

    @classmethod
    def of(cls, batch: "Batch | dict") -> "Batch":
        """A Batch as it is; a dict batch (`{modality: inputs, "mask": {...}, ...}`) as a Batch."""
        if isinstance(batch, Batch):
            return batch
        fields = {k: batch[k] for k in BATCH_KEYS if k in batch}
        return cls(inputs={k: v for k, v in batch.items() if k not in BATCH_KEYS}, **fields)

    def __getitem__(self, key: str):
        if key in BATCH_KEYS:
            value = getattr(self, key)
            if value is None:
                raise KeyError(key)
            return value
        return self.inputs[key]

    def __contains__(self, key: str) -> bool:
        return key in self.keys() or key in self.inputs

    def get(self, key: str, default=None):
        return self[key] if key in self else default

    def keys(self) -> list[str]:
        """The keys of the dict batch this one reads as: its modalities, then its fields
        (features and feature_mask only with cached features, label only with targets)."""
        fields = ["lengths", "mask", "index"] + (["features", "feature_mask"] if self.features else [])
        return [k for k in self.inputs if k not in BATCH_KEYS] + fields + (["label"] if self.label is not None else [])

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def items(self) -> list[tuple[str, object]]:
        return [(k, self[k]) for k in self.keys()]

    def with_label(self, label: torch.Tensor | None) -> "Batch":
        return replace(self, label=label)

    def tensors(self) -> Iterator[tuple[str, str | None, torch.Tensor]]:
        """(field, modality or None, tensor) of every tensor in the batch."""
        for key in _PER_MODALITY:
            for name, tensor in getattr(self, key).items():
                yield key, name, tensor
        yield "index", None, self.index
        if self.label is not None:
            yield "label", None, self.label

    @classmethod
    def from_tensors(cls, parts: Iterable[tuple[str, str | None, torch.Tensor]]) -> "Batch":
        batch = cls()
        for key, name, tensor in parts:
            if name is None:
                setattr(batch, key, tensor)
            else:
                getattr(batch, key)[name] = tensor
        return batch

    def map(self, fn) -> "Batch":
        """The batch with `fn` applied to every tensor (moved to a device)."""
        return Batch.from_tensors((key, name, fn(t)) for key, name, t in self.tensors())


def make_batch(data: Encoded, index: torch.Tensor, config: DataConfig) -> Batch:
    """The batch of rows `index`, ready for a model (on the CPU)."""
    return finish_batch(gather_batch(data, index), data.kinds, config)


def gather_batch(data: Encoded, index: torch.Tensor) -> Batch:
    """Rows `index`, still as stored (images uint8, audio float16: what a loader worker
    sends, at a quarter and a half of the float32 size); `finish_batch` completes it."""
    batch = Batch(index=index)
    if data.features:
        batch.features = {n: raw[index] for n, (raw, _) in data.features.items()}
        batch.feature_mask = {n: mask[index] for n, (_, mask) in data.features.items()}
        batch.mask.update({n: data.present[n][index] for n in data.features})
    for name, tensor in data.inputs.items():
        x = tensor[index]
        if kinds.get(data.kinds[name]).padded_to_batch and name in data.lengths and len(index):
            x = x[..., : max(1, int(data.lengths[name][index].max()))]  # pad to the batch's longest
        batch.inputs[name] = x
        batch.mask[name] = data.present[name][index]
        if name in data.lengths:
            batch.lengths[name] = data.lengths[name][index]
    if data.labels is not None:
        batch.label = data.labels[index]
    return batch


def finish_batch(batch: Batch, kinds_of: dict[str, str], config: DataConfig) -> Batch:
    """Normalise images and audio (each kind its own way), and zero the inputs of missing modalities, on whatever
    device the gathered batch is (the GPU, after a loader's copy)."""
    batch.features = {n: x.float() for n, x in batch.features.items()}
    for name, kind_name in kinds_of.items():
        if name not in batch.inputs:
            continue
        kind = kinds.get(kind_name)
        x = kind.normalize(batch.inputs[name], config)
        mask = batch.mask[name]
        if kind.zero_missing and not bool(mask.all()):  # zeros where the modality is missing
            x = x * mask.view(-1, *([1] * (x.dim() - 1)))
        batch.inputs[name] = x
    return batch


def batch_order(n: int, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None,
                weights: torch.Tensor | None = None, shard=None) -> Iterator[torch.Tensor]:
    """The indices of each batch: in order, shuffled, or (with `weights`) drawn with
    replacement in proportion to the weights, as many as the data has (a weighted
    sampler). `shard` picks this process's part of each batch in distributed training."""
    if weights is not None:
        order = torch.multinomial(weights.double(), n, replacement=True, generator=generator)
    else:
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    for start in range(0, n, batch_size):
        index = order[start:start + batch_size]
        yield shard(index) if shard is not None else index


def iterate(data: Encoded, config: DataConfig, batch_size: int, **order) -> Iterator[Batch]:
    """The batches, assembled in this process, in `batch_order(**order)`
    (mmcli.data.loader.Loader can assemble them in worker processes)."""
    for index in batch_order(len(data), batch_size, **order):
        yield make_batch(data, index, config)


def n_batches(data: Encoded, batch_size: int) -> int:
    return (len(data) + batch_size - 1) // batch_size
