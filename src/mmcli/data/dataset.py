"""Tensors ready for a model, and the batch dict every model reads.

A batch is `{modality: tensor, "lengths": {modality: tensor}, "mask": {modality: bool},
"label": tensor, "index": tensor}`. `mask[m][i]` is False where example i lacks modality
m; its input is then zeros and the fusion leaves it out. Text and audio are padded only to
the longest example of the batch, not to the configured maximum: the encoders mask the
padding, and short clips and captions then cost what they are, not what the cap allows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import torch

from mmcli.config import DataConfig
from mmcli.data import decode, text
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

    def __len__(self) -> int:
        return len(self.ids)


def encode_table(table: Table, modalities: list[str], tokenizers: dict, targets=None,
                 values: list[str] | None = None) -> Encoded:
    """`targets` turns the target strings (`values`, by default the label column) into the
    task's target tensor (None: no targets)."""
    inputs, lengths, present = {}, {}, {}
    for name in modalities:
        kind = table.modalities[name].kind
        if kind == "text":
            ids = text.encode(tokenizers[name], table.texts[name])
            inputs[name] = ids
            lengths[name] = (ids != 0).sum(dim=1).clamp(min=1)
        elif kind == "tabular":
            inputs[name] = tokenizers[name].encode(table.texts[name])
        else:
            inputs[name] = table.tensors[name]
            if f"{name}.lengths" in table.tensors:
                lengths[name] = table.tensors[f"{name}.lengths"]
        present[name] = table.present[name]
    labels = None
    values = table.labels if values is None else values
    if targets is not None and values is not None:
        labels = targets(list(values))
    kinds = {name: table.modalities[name].kind for name in modalities}
    return Encoded(list(table.ids), inputs, lengths, present, labels, kinds)


def make_batch(data: Encoded, index: torch.Tensor, config: DataConfig) -> dict:
    batch: dict = {"lengths": {}, "mask": {}, "index": index}
    if data.features:
        batch["features"] = {n: raw[index].float() for n, (raw, _) in data.features.items()}
        batch["feature_mask"] = {n: mask[index] for n, (_, mask) in data.features.items()}
        batch["mask"].update({n: data.present[n][index] for n in data.features})
    for name, tensor in data.inputs.items():
        kind = data.kinds[name]
        x = tensor[index]
        if kind in ("text", "audio") and name in data.lengths and len(index):
            x = x[..., : max(1, int(data.lengths[name][index].max()))]  # pad to the batch's longest
        if kind == "image":
            x = decode.normalize_image(x, config)
        elif kind == "audio":
            x = decode.normalize_audio(x)
        mask = data.present[name][index]
        if kind != "text":
            x = x * mask.view(-1, *([1] * (x.dim() - 1)))
        batch[name] = x
        batch["mask"][name] = mask
        if name in data.lengths:
            batch["lengths"][name] = data.lengths[name][index]
    if data.labels is not None:
        batch["label"] = data.labels[index]
    return batch


def iterate(data: Encoded, config: DataConfig, batch_size: int, shuffle: bool = False,
            generator: torch.Generator | None = None, weights: torch.Tensor | None = None,
            shard=None) -> Iterator[dict]:
    """Batches in order, shuffled, or (with `weights`) drawn with replacement in proportion
    to the weights, as many as the data has (a weighted sampler). `shard` picks this
    process's part of each batch in distributed training."""
    if weights is not None:
        order = torch.multinomial(weights.double(), len(data), replacement=True, generator=generator)
    else:
        order = torch.randperm(len(data), generator=generator) if shuffle else torch.arange(len(data))
    for start in range(0, len(data), batch_size):
        index = order[start:start + batch_size]
        yield make_batch(data, shard(index) if shard is not None else index, config)


def n_batches(data: Encoded, batch_size: int) -> int:
    return (len(data) + batch_size - 1) // batch_size
