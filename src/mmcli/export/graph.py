"""The modules that are exported: a run's model behind plain tensors.

mmcli's model reads a `Batch` (dicts of inputs, lengths and presence masks, normalised on
the device by each kind); an exported model reads tensors, by position (TorchScript) or
by name (ONNX). `Slot` describes each tensor. The wrappers do on their inputs what
`finish_batch` does on a batch (the kinds' normalisation, absent modalities zeroed), so
the tensors a user prepares are the values mmcli stores: uint8 pixels, dB spectrograms,
token ids. Where mmcli stores float16 (spectrograms), the input is float32 and the
model rounds it to float16 first, as the cache does.

The forward pass is `Model._forward` in evaluation, with its shortcuts that depend on
the data (skip the per-modality heads when no example has a single modality) written as
selections: a trace or `torch.export` records one path through Python branches, and a
selection holds for every batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from mmcli.data.dataset import Batch
from mmcli.kinds import KINDS

STORED_DTYPES = {torch.uint8: "uint8", torch.int64: "int64", torch.float32: "float32", torch.float16: "float32",
                 torch.bool: "bool"}
TORCH_DTYPES = {"uint8": torch.uint8, "int64": torch.int64, "float32": torch.float32, "bool": torch.bool}


@dataclass(frozen=True)
class Slot:
    """One input tensor: `name` is the modality's name, MODALITY.lengths or MODALITY.present."""

    name: str
    modality: str
    role: str  # "values", "lengths" or "present"
    dtype: str  # numpy's name of it
    shape: tuple  # per dimension: "batch", "length" (a batch's longest example) or a fixed size
    rounds_to_float16: bool = False  # the model rounds the values to float16, as mmcli's cache stores them

    def as_dict(self) -> dict[str, Any]:
        out = {"name": self.name, "modality": self.modality, "role": self.role, "dtype": self.dtype,
               "shape": list(self.shape)}
        return out | ({"rounded_to": "float16"} if self.rounds_to_float16 else {})


@dataclass
class Graph:
    """One model to export: its file's stem, the module, its inputs and outputs."""

    stem: str
    module: nn.Module
    modalities: list[str]
    slots: list[Slot]
    outputs: list[tuple[str, str]]  # (name, meaning)
    reference: Callable[[Any, Batch], tuple[torch.Tensor, ...]]  # the run's own answer: (model, normalised batch)
    output_shapes: dict[str, list] = field(default_factory=dict)


def slots_for(stored: Batch, kinds_of: dict[str, str], modalities: list[str], present: bool = True) -> list[Slot]:
    """The inputs of `modalities`, from a batch as gathered (not yet normalised)."""
    out = []
    for name in modalities:
        x, kind = stored.inputs[name], KINDS[kinds_of[name]]
        shape: list = ["batch", *x.shape[1:]]
        if kind.padded_to_batch:
            shape[-1] = "length"
        out.append(Slot(name, name, "values", STORED_DTYPES[x.dtype], tuple(shape), x.dtype == torch.float16))
        if name in stored.lengths:
            out.append(Slot(f"{name}.lengths", name, "lengths", "int64", ("batch",)))
        if present:
            out.append(Slot(f"{name}.present", name, "present", "bool", ("batch",)))
    return out


def tensors_for(stored: Batch, slots: list[Slot]) -> list[torch.Tensor]:
    """The exported model's inputs for a gathered batch, in the order of `slots`."""
    out = []
    for slot in slots:
        source = {"values": stored.inputs, "lengths": stored.lengths, "present": stored.mask}[slot.role]
        out.append(source[slot.modality].to(TORCH_DTYPES[slot.dtype]).contiguous())
    return out


class _Inputs(nn.Module):
    """Tensors by position -> the normalised Batch the model reads (`finish_batch`'s work)."""

    def __init__(self, slots: list[Slot], kinds_of: dict[str, str], data_config: Any):
        super().__init__()
        self.slots, self.kinds_of, self.data_config = slots, kinds_of, data_config

    def batch(self, tensors: tuple[torch.Tensor, ...]) -> Batch:
        batch = Batch()
        for slot, tensor in zip(self.slots, tensors):
            if slot.role == "lengths":
                batch.lengths[slot.modality] = tensor
            elif slot.role == "present":
                batch.mask[slot.modality] = tensor
            else:
                batch.inputs[slot.modality] = tensor.to(torch.float16) if slot.rounds_to_float16 else tensor
        for name, x in list(batch.inputs.items()):
            kind = KINDS[self.kinds_of[name]]
            x = kind.normalize(x, self.data_config)
            if kind.zero_missing and name in batch.mask:  # a multiplication by ones where all are present
                mask = batch.mask[name]
                x = x * mask.reshape((mask.shape[0],) + (1,) * (x.dim() - 1)).to(x.dtype)
            batch.inputs[name] = x
        return batch


def answer(model: Any, batch: Batch) -> torch.Tensor:
    """`Model._forward` in evaluation, without branches on the data (see the module's docstring):
    an example with a single modality present takes that modality's own head's answer."""
    features = model.encode(batch)
    if model.fusion is None:
        return model.head(features, batch.mask, batch)
    outputs = model.head(model.fusion(features, batch.mask))
    if len(model.aux_heads) > 1:
        present = torch.stack([batch.mask[n] for n in model.aux_heads], dim=1)
        alone = present.sum(dim=1) == 1
        for i, name in enumerate(model.aux_heads):
            own = model.aux_heads[name](features[name].pooled).to(outputs.dtype)
            outputs = torch.where((alone & present[:, i]).unsqueeze(1), own, outputs)
    return outputs


class Predictor(_Inputs):
    """A fused model (classification, multi-label, regression): inputs -> the task's outputs."""

    def __init__(self, model: Any, slots: list[Slot], kinds_of: dict[str, str], data_config: Any,
                 outputs: Callable[[torch.Tensor], tuple[torch.Tensor, ...]]):
        super().__init__(slots, kinds_of, data_config)
        self.model, self.outputs = model, outputs

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.outputs(answer(self.model, self.batch(tensors)))


class Tower(_Inputs):
    """One modality of a retrieval run: inputs -> its unit embedding in the shared space, as
    `TwoTowerHead.embed_modalities` gives it (`predict --embed`, search)."""

    def __init__(self, model: Any, name: str, slots: list[Slot], kinds_of: dict[str, str], data_config: Any):
        super().__init__(slots, kinds_of, data_config)
        self.encoder: Any = model.encoders[name]
        self.proj: Any = model.head.proj[name]
        self.name = name

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor]:
        batch = self.batch(tensors)
        pooled = self.encoder(batch.inputs[self.name], batch.lengths.get(self.name)).pooled
        return (nn.functional.normalize(self.proj(pooled).float(), dim=-1),)


def tower_reference(model: Any, batch: Batch, name: str) -> tuple[torch.Tensor]:
    """What mmcli itself gives as a modality's retrieval embedding (mmcli.search.embed)."""
    return (model.head.embed_modalities(model.encode(batch))[name].float(),)


def task_outputs(task: Any) -> tuple[list[tuple[str, str]], Callable[[torch.Tensor], tuple[torch.Tensor, ...]]]:
    """The outputs of a fused task's exported model, and how they come from the model's."""
    if task.name == "classification":
        return ([("logits", "one score per label, in the order of task.labels"),
                 ("probabilities", "softmax of the logits: what mmcli predict lists")],
                lambda y: (y.float(), torch.softmax(y.float(), dim=1)))
    if task.name == "multilabel":
        return ([("logits", "one score per label, in the order of task.labels"),
                 ("probabilities", "sigmoid of the logits; a label is predicted where it reaches task.thresholds")],
                lambda y: (y.float(), torch.sigmoid(y.float())))
    mean, std = float(task.state.get("mean", 0.0)), float(task.state.get("std", 1.0))
    return ([("value", "the prediction in the target's units: standardised output * task.std + task.mean")],
            lambda y: (y.float().squeeze(-1) * std + mean,))
