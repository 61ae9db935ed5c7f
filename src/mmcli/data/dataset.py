"""Tensors ready for a model, and the batch dict every model reads.

A batch is `{modality: tensor, "lengths": {modality: tensor}, "mask": {modality: bool},
"label": tensor, "index": tensor}`. `mask[m][i]` is False where example i lacks modality
m; its input is then zeros and the fusion leaves it out. Text and audio are padded only to
the longest example of the batch, not to the configured maximum: the encoders mask the
padding, and short clips and captions then cost what they are, not what the cap allows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch

from mmcli.config import DataConfig, ModalityConfig
from mmcli import kinds
from mmcli.data.table import Table
from mmcli.errors import BadRow, DataError


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

    def __len__(self) -> int:
        return len(self.ids)


def encode_table(table: Table, modalities: list[str], tokenizers: dict, targets=None,
                 values: list[str] | None = None) -> Encoded:
    """`targets` turns the target strings (`values`, by default the label column) into the
    task's target tensor (None: no targets)."""
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
    return Encoded(list(table.ids), inputs, lengths, present, labels, kinds_of)


# keys of the batch a model reads beside its modalities' inputs (gather_batch)
BATCH_KEYS = ("lengths", "mask", "index", "label", "features", "feature_mask")


def check_names(source: str, modalities: dict[str, ModalityConfig]) -> None:
    """A modality a model reads, named like a key of its batch (a text column `mask`, or
    `label` when the label is another column), would overwrite that key: refused, naming
    the column and the declaration that renames it."""
    clash = [n for n in modalities if n in BATCH_KEYS]
    if clash:
        m = modalities[clash[0]]
        where = m.column or clash[0]
        raise DataError(f"{source}: a modality cannot be named '{clash[0]}' (mmcli's batches use the names "
                        f"{', '.join(BATCH_KEYS)}); give it another name in the config, e.g. data.modalities: "
                        f"{{{clash[0]}_{m.kind}: {{column: {where}, kind: {m.kind}}}}}",
                        [BadRow(Path(source).name, None, where, f"the {m.kind} modality '{clash[0]}' needs another name")])


def make_batch(data: Encoded, index: torch.Tensor, config: DataConfig) -> dict:
    """The batch of rows `index`, ready for a model (on the CPU)."""
    return finish_batch(gather_batch(data, index), data.kinds, config)


def gather_batch(data: Encoded, index: torch.Tensor) -> dict:
    """Rows `index`, still as stored (images uint8, audio float16: what a loader worker
    sends, at a quarter and a half of the float32 size); `finish_batch` completes it."""
    batch: dict = {"lengths": {}, "mask": {}, "index": index}
    if data.features:
        batch["features"] = {n: raw[index] for n, (raw, _) in data.features.items()}
        batch["feature_mask"] = {n: mask[index] for n, (_, mask) in data.features.items()}
        batch["mask"].update({n: data.present[n][index] for n in data.features})
    for name, tensor in data.inputs.items():
        x = tensor[index]
        if kinds.get(data.kinds[name]).padded_to_batch and name in data.lengths and len(index):
            x = x[..., : max(1, int(data.lengths[name][index].max()))]  # pad to the batch's longest
        batch[name] = x
        batch["mask"][name] = data.present[name][index]
        if name in data.lengths:
            batch["lengths"][name] = data.lengths[name][index]
    if data.labels is not None:
        batch["label"] = data.labels[index]
    return batch


def finish_batch(batch: dict, kinds_of: dict[str, str], config: DataConfig) -> dict:
    """Normalise images and audio (each kind its own way), and zero the inputs of missing modalities, on whatever
    device the gathered batch is (the GPU, after a loader's copy)."""
    if "features" in batch:
        batch["features"] = {n: x.float() for n, x in batch["features"].items()}
    for name, kind_name in kinds_of.items():
        if name not in batch:
            continue
        kind = kinds.get(kind_name)
        x = kind.normalize(batch[name], config)
        mask = batch["mask"][name]
        if kind.zero_missing and not bool(mask.all()):  # zeros where the modality is missing
            x = x * mask.view(-1, *([1] * (x.dim() - 1)))
        batch[name] = x
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


def iterate(data: Encoded, config: DataConfig, batch_size: int, **order) -> Iterator[dict]:
    """The batches, assembled in this process, in `batch_order(**order)`
    (mmcli.data.loader.Loader can assemble them in worker processes)."""
    for index in batch_order(len(data), batch_size, **order):
        yield make_batch(data, index, config)


def n_batches(data: Encoded, batch_size: int) -> int:
    return (len(data) + batch_size - 1) // batch_size
