"""build(config) -> Model(encoders, fusion, head): composition, no subclass per variant.

A unimodal model is the same `Model` with one encoder and the identity fusion.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mmcli.config import Config
from mmcli.encoders import DEFAULT_ENCODERS, ENCODERS, ModalitySpec
from mmcli.errors import ConfigError
from mmcli.fusion import FUSIONS
from mmcli.heads import TASKS


class Model(nn.Module):
    def __init__(self, encoders: dict[str, nn.Module], fusion: nn.Module, head: nn.Module):
        super().__init__()
        self.encoders = nn.ModuleDict(encoders)
        self.fusion = fusion
        self.head = head

    @property
    def modalities(self) -> list[str]:
        return list(self.encoders)

    def encode(self, batch: dict) -> dict:
        lengths = batch.get("lengths", {})
        return {name: enc(batch[name], lengths.get(name)) for name, enc in self.encoders.items()}

    def forward(self, batch: dict) -> torch.Tensor:
        fused = self.fusion(self.encode(batch), batch["mask"])
        return self.head(fused)


def chosen_modalities(config: Config, available: list[str]) -> list[str]:
    wanted = config.model.modalities or available
    unknown = [m for m in wanted if m not in available]
    if unknown:
        raise ConfigError(f"model.modalities: unknown modality {unknown} (the data has: {', '.join(available)})")
    if len(set(wanted)) != len(wanted):
        raise ConfigError(f"model.modalities: repeated modality in {wanted}")
    return list(wanted)


def encoder_choice(config: Config, spec: ModalitySpec) -> tuple[str, dict[str, Any]]:
    choice = config.model.encoders.get(spec.name) or config.model.encoders.get(spec.kind) or DEFAULT_ENCODERS[spec.kind]
    name = choice if "." in choice else f"{spec.kind}.{choice}"
    if name in ENCODERS and not name.startswith(spec.kind + "."):
        raise ConfigError(f"model.encoders.{spec.name}: '{name}' is not an encoder for {spec.kind}")
    options = config.model.encoder_options.get(spec.name) or config.model.encoder_options.get(spec.kind) or {}
    return name, dict(options)


def fusion_choice(config: Config, modalities: list[str]) -> str:
    return "identity" if len(modalities) == 1 else config.model.fusion


def build(config: Config, specs: dict[str, ModalitySpec], n_outputs: int) -> Model:
    """Compose the model that `config` describes for data with these modality specs."""
    modalities = chosen_modalities(config, list(specs))
    dim = config.model.feature_dim
    encoders = {}
    for name in modalities:
        enc_name, options = encoder_choice(config, specs[name])
        encoders[name] = _construct(ENCODERS.get(enc_name), f"encoder {enc_name}", specs[name], dim, **options)
    in_dims = {n: e.out_dim for n, e in encoders.items()}
    fusion_name = fusion_choice(config, modalities)
    options = dict(config.model.fusion_options)
    options.setdefault("dropout", config.model.dropout)
    fusion = _construct(FUSIONS.get(fusion_name), f"fusion {fusion_name}", in_dims, config.model.hidden_dim, **options)
    task = TASKS.get(config.model.task)()
    head = task.build_head(fusion.out_dim, n_outputs, config.model.hidden_dim, config.model.dropout)
    return Model(encoders, fusion, head)


def _construct(factory: Any, what: str, *args: Any, **kwargs: Any) -> nn.Module:
    try:
        return factory(*args, **kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"cannot build {what}: {exc}") from None


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
