"""build(config) -> Model(encoders, fusion, head): composition, no subclass per variant.

A unimodal model is the same `Model` with one encoder and the identity fusion.
"""

from __future__ import annotations

import json
from typing import Any

import torch
from torch import nn

from mmcli.config import Config
from mmcli.encoders import DEFAULT_ENCODERS, ENCODERS, ModalitySpec
from mmcli.errors import ConfigError
from mmcli.fusion import FUSIONS
from mmcli.heads import TASKS


class Model(nn.Module):
    """encoders -> fusion -> head; optional modality dropout and auxiliary unimodal heads.
    Cross-modal tasks have no fusion: their head reads every encoder's output.

    Modality dropout (training only) hides each present modality of an example with
    probability `modality_dropout` through the mask, always keeping one. Auxiliary heads
    put the task's loss on each modality's own features too, weighted by `aux_weight`.
    """

    def __init__(self, encoders: dict[str, nn.Module], fusion: nn.Module | None, head: nn.Module,
                 modality_dropout: float = 0.0, aux_heads: dict[str, nn.Module] | None = None, aux_weight: float = 0.0):
        super().__init__()
        self.encoders = nn.ModuleDict(encoders)
        self.fusion = fusion
        self.head = head
        self.modality_dropout = modality_dropout
        self.aux_heads = nn.ModuleDict(aux_heads or {})
        self.aux_weight = aux_weight
        self.blend: dict[str, float] | None = None  # set by gradient blending, per epoch

    @property
    def modalities(self) -> list[str]:
        return list(self.encoders)

    def encode(self, batch: dict) -> dict:
        lengths, cached = batch.get("lengths", {}), batch.get("features", {})
        return {name: enc.from_features(cached[name], batch["feature_mask"][name]) if name in cached
                else enc(batch[name], lengths.get(name)) for name, enc in self.encoders.items()}

    def forward(self, batch: dict) -> torch.Tensor:
        return self._forward(batch)[0]

    def _forward(self, batch: dict) -> tuple[torch.Tensor, dict]:
        mask = batch["mask"]
        if self.training and self.modality_dropout > 0 and len(self.encoders) > 1:
            mask = drop_modalities(mask, self.modality_dropout)
        features = self.encode(batch)
        if self.fusion is None:
            return self.head(features, mask, batch), features
        return self.head(self.fusion(features, mask)), features

    def head_losses(self, batch: dict, task) -> dict[str, torch.Tensor]:
        """The task's loss of the fused output ("fused") and of each auxiliary head."""
        outputs, features = self._forward(batch)
        losses = {"fused": task.loss(outputs, batch)}
        losses.update({n: task.loss(head(features[n].pooled), batch) for n, head in self.aux_heads.items()})
        return losses

    def loss(self, batch: dict, task) -> torch.Tensor:
        """The fused loss, plus the auxiliary losses: blended, or their mean times aux_weight."""
        if hasattr(self.head, "extra_losses"):  # translation: its translation and target losses too
            outputs, features = self._forward(batch)
            return task.loss(outputs, batch) + sum(self.head.extra_losses(features, batch, task).values())
        losses = self.head_losses(batch, task)
        if self.blend is not None:
            return sum(self.blend[k] * v for k, v in losses.items())
        aux = [v for k, v in losses.items() if k != "fused"]
        if self.aux_weight > 0 and aux:
            return losses["fused"] + self.aux_weight * torch.stack(aux).mean()
        return losses["fused"]


def drop_modalities(mask: dict[str, torch.Tensor], rate: float) -> dict[str, torch.Tensor]:
    names = list(mask)
    present = torch.stack([mask[n] for n in names], dim=1)
    keep = present & (torch.rand(present.shape, device=present.device) >= rate)
    # an example that lost every modality gets one of its own back, chosen at random
    empty = ~keep.any(dim=1) & present.any(dim=1)
    if empty.any():
        scores = torch.rand(present.shape, device=present.device).masked_fill(~present, -1.0)
        pick = nn.functional.one_hot(scores.argmax(dim=1), len(names)).bool()
        keep = torch.where(empty.unsqueeze(1), pick, keep)
    return {n: keep[:, i] for i, n in enumerate(names)}


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


def adapt_data(config: Config, kinds: dict[str, str] | None = None) -> Config:
    """Image encoders with pretrained weights read the images their weights were trained
    on: `data.image_size`, `image_mean` and `image_std` follow the weights' metadata,
    unless the config sets them to something other than the defaults.

    `kinds` (modality name -> kind, from the data) says which modalities are images; where
    the data could not be read, every name the model config mentions is tried as one."""
    from mmcli.config import DataConfig
    from mmcli.encoders.backbones import ARCHS, image_preprocessing

    images = [n for n, k in (kinds or {}).items() if k == "image"]
    images += [n for n, m in config.data.modalities.items() if m.kind == "image" and n not in images]
    if not kinds and not config.data.modalities:
        images = ["image", *config.model.encoders, *config.model.encoder_options]
    wanted = {}
    for name in dict.fromkeys(images):
        choice, options = encoder_choice(config, ModalitySpec(name=name, kind="image"))
        arch = choice.split(".", 1)[1]
        if choice.startswith("image.") and arch in ARCHS and (options.get("pretrained") or options.get("weights")):
            wanted.setdefault(arch, image_preprocessing(arch))
    if not wanted:
        return config
    if len({str(v) for v in wanted.values()}) > 1:
        raise ConfigError(f"image encoders {', '.join(wanted)} want different input sizes or normalizations; "
                          "set data.image_size, image_mean and image_std yourself")
    defaults, adapted = DataConfig(), config.copy()
    for key, value in next(iter(wanted.values())).items():
        if getattr(config.data, key) == getattr(defaults, key):
            setattr(adapted.data, key, value)
    return adapted


def fusion_choice(config: Config, modalities: list[str]) -> str:
    return "identity" if len(modalities) == 1 else config.model.fusion


def build(config: Config, specs: dict[str, ModalitySpec], n_outputs: int) -> Model:
    """Compose the model that `config` describes for data with these modality specs."""
    modalities = chosen_modalities(config, list(specs))
    dim = config.model.feature_dim
    encoders = {}
    for name in modalities:
        enc_name, options = encoder_choice(config, specs[name])
        trainable = options.pop("trainable", True)
        if not isinstance(trainable, (bool, int)) or (not isinstance(trainable, bool) and trainable < 0):
            raise ConfigError(f"model.encoder_options.{name}.trainable: true, false or a number of blocks, not {trainable!r}")
        encoders[name] = _construct(ENCODERS.get(enc_name), f"encoder {enc_name}", specs[name], dim, **options)
        encoders[name].set_trainable(trainable)
        encoders[name].options_key = json.dumps(options, sort_keys=True, default=str)  # for the feature cache's key
    in_dims = {n: e.out_dim for n, e in encoders.items()}
    task = TASKS.get(config.model.task)(config)
    own_head = task.build_model_head(in_dims, n_outputs, config)
    if own_head is not None:  # cross-modal tasks: the head reads every encoder's output itself
        return Model(encoders, None, own_head)
    fusion_name = fusion_choice(config, modalities)
    hidden, dropout = config.model.hidden_dim, config.model.dropout

    def make_head(in_dim: int) -> nn.Module:
        return task.build_head(in_dim, n_outputs, hidden, dropout)

    if config.model.crossmodal == "translate":
        if len(modalities) < 2:
            raise ConfigError("model.crossmodal=translate needs two or more modalities: the first is the source")
        from mmcli.heads.translation import TranslationHead

        return Model(encoders, None, TranslationHead(modalities[0], in_dims, make_head, hidden, config.model.translate_weight))
    factory = FUSIONS.get(fusion_name)
    options = dict(config.model.fusion_options)
    options.setdefault("dropout", dropout)
    if getattr(factory, "produces_outputs", False):
        options["make_head"] = make_head
    fusion = _construct(factory, f"fusion {fusion_name}", in_dims, hidden, **options)
    head = nn.Identity() if getattr(fusion, "produces_outputs", False) else make_head(fusion.out_dim)
    wants_aux = config.model.aux_loss_weight > 0 or config.train.gradient_blending
    aux = {n: make_head(e.out_dim) for n, e in encoders.items()} if wants_aux and len(encoders) > 1 else None
    return Model(encoders, fusion, head, config.model.modality_dropout, aux, config.model.aux_loss_weight)


def _construct(factory: Any, what: str, *args: Any, **kwargs: Any) -> nn.Module:
    try:
        return factory(*args, **kwargs)
    except (TypeError, ValueError, RuntimeError) as exc:  # RuntimeError: torch refusing a size (negative, too large)
        raise ConfigError(f"cannot build {what}: {str(exc)[:300]}") from None


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
