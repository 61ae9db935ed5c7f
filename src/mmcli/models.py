"""build(config) -> Model(encoders, fusion, head): composition, no subclass per variant.

A unimodal model is the same `Model` with one encoder and the identity fusion.
"""

from __future__ import annotations

import json
import typing
from typing import Any

import torch
from torch import nn

from mmcli.config import Config
from mmcli.data.dataset import Batch
from mmcli.encoders import ENCODERS, ModalitySpec, encoder_data_settings
from mmcli.fusion.base import Fusion
from mmcli.heads.base import TaskHead
from mmcli.kinds import KINDS
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

    trained_prefixes: list[str] = []  # parameters whose weights start trained (pretrained encoders): build sets them

    def __init__(self, encoders: dict[str, nn.Module], fusion: nn.Module | None, head: nn.Module,
                 modality_dropout: float = 0.0, aux_heads: dict[str, nn.Module] | None = None, aux_weight: float = 0.0):
        super().__init__()
        self.encoders: Any = nn.ModuleDict(encoders)  # Any: each is an mmcli Encoder, called by its methods
        self.fusion: Any = fusion
        self.head: Any = head
        self.modality_dropout = modality_dropout
        self.aux_heads = nn.ModuleDict(aux_heads or {})
        self.aux_weight = aux_weight
        self.blend: dict[str, float] | None = None  # set by gradient blending, per epoch
        self.trained_prefixes: list[str] = []  # parameter names that start trained (warm start): their lr is scaled

    @property
    def modalities(self) -> list[str]:
        return list(self.encoders)

    def encode(self, batch: Batch | dict) -> dict:
        batch = Batch.of(batch)
        cached = batch.features
        return {name: enc.from_features(cached[name], batch.feature_mask[name]) if name in cached
                else enc(batch.inputs[name], batch.lengths.get(name)) for name, enc in self.encoders.items()}

    def forward(self, batch: Batch | dict) -> torch.Tensor:
        return self._forward(batch)[0]

    def _forward(self, batch: Batch | dict) -> tuple[torch.Tensor, dict]:
        batch = Batch.of(batch)  # a dict batch (older callers, tests) reads as a Batch
        mask = batch.mask
        if self.training and self.modality_dropout > 0 and len(self.encoders) > 1:
            mask = drop_modalities(mask, self.modality_dropout)
        features = self.encode(batch)
        if self.fusion is None:
            return self.head(features, mask, batch), features
        outputs = self.head(self.fusion(features, mask))
        if not self.training and len(self.aux_heads) > 1:
            outputs = self._alone(outputs, features, mask)
        return outputs, features

    def _alone(self, outputs: torch.Tensor, features: dict, mask: dict[str, torch.Tensor]) -> torch.Tensor:
        """In evaluation, an example with one modality present is predicted by that modality's
        auxiliary head, which learned from that modality alone, rather than by the fused head,
        which learned from every modality at once and leans on the strongest: on mdi-icons
        without the name it fell to 10 % where the image alone gets 52 % (docs/fusion.md)."""
        present = torch.stack([mask[n] for n in self.aux_heads], dim=1)
        alone = present.sum(dim=1) == 1
        if not bool(alone.any()):
            return outputs
        outputs = outputs.clone()
        for i, name in enumerate(self.aux_heads):
            rows = alone & present[:, i]
            if bool(rows.any()):
                outputs[rows] = self.aux_heads[name](features[name].pooled[rows]).to(outputs.dtype)
        return outputs

    def head_losses(self, batch: Batch | dict, task) -> dict[str, torch.Tensor]:
        """The task's loss of the fused output ("fused") and of each auxiliary head."""
        batch = Batch.of(batch)
        outputs, features = self._forward(batch)
        losses = {"fused": task.loss(outputs, batch)}
        losses.update({n: task.loss(head(features[n].pooled), batch) for n, head in self.aux_heads.items()})
        return losses

    def loss(self, batch: Batch | dict, task) -> torch.Tensor:
        """The fused loss, plus the auxiliary losses: blended, or their mean times aux_weight."""
        batch = Batch.of(batch)
        if isinstance(self.head, TaskHead) and self.head.adds_losses:  # translation: its translation and target losses too
            outputs, features = self._forward(batch)
            return task.loss(outputs, batch) + sum(self.head.extra_losses(features, batch, task).values())
        losses = self.head_losses(batch, task)
        if self.blend is not None:
            return typing.cast(torch.Tensor, sum(self.blend[k] * v for k, v in losses.items()))
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
    """The modality's encoder and its options: those keyed by the encoder's name, overridden
    by those keyed by the modality's name or else by its kind."""
    choice = config.model.encoders.get(spec.name) or config.model.encoders.get(spec.kind) or KINDS[spec.kind].default_encoder
    name = choice if "." in choice else f"{spec.kind}.{choice}"
    if name in ENCODERS and not name.startswith(spec.kind + "."):
        raise ConfigError(f"model.encoders.{spec.name}: '{name}' is not an encoder for {spec.kind}")
    options = config.model.encoder_options.get(spec.name) or config.model.encoder_options.get(spec.kind) or {}
    options = {k: v for k, v in options.items() if not _names_encoder(spec.kind, k, v)}
    return name, {**own_options(config, name), **options}


def own_options(config: Config, name: str) -> dict[str, Any]:
    """Options keyed by an encoder's registered name, wherever it is used: in YAML
    `image.mobilenet_v2: {...}`, or under its kind as --set writes them
    (`model.encoder_options.image.mobilenet_v2.weights=PATH`)."""
    kind, _, short = name.partition(".")
    nested = (config.model.encoder_options.get(kind) or {}).get(short)
    return {**(typing.cast(dict, nested) if _names_encoder(kind, short, nested) else {}),
            **(config.model.encoder_options.get(name) or {})}


def _names_encoder(kind: str, key: str, value: Any) -> bool:
    return isinstance(value, dict) and f"{kind}.{key}" in ENCODERS


def adapt_data(config: Config, kinds: dict[str, str] | None = None) -> Config:
    """Image encoders with pretrained weights read the images their weights were trained
    on: `data.image_size`, `image_mean` and `image_std` follow the weights' metadata,
    unless the config sets them to something other than the defaults.

    `kinds` (modality name -> kind, from the data) says which modalities are images; where
    the data could not be read, every name the model config mentions is tried as one."""
    from mmcli.config import DataConfig

    wanted = wanted_preprocessing(config, kinds)
    if wanted is None:
        return config
    defaults, adapted = DataConfig(), config.copy()
    for key, value in wanted.items():
        if getattr(config.data, key) == getattr(defaults, key):
            setattr(adapted.data, key, value)
    return adapted


def wanted_preprocessing(config: Config, kinds: dict[str, str] | None = None) -> dict[str, Any] | None:
    """The data settings that the encoders' pretrained weights read: an image size and
    normalization (None: no encoder has pretrained weights that want any)."""
    named = [(n, k) for n, k in (kinds or {}).items()]
    named += [(n, m.kind) for n, m in config.data.modalities.items() if n not in (kinds or {})]
    if not kinds and not config.data.modalities:  # no encoder's registered name is a modality: any name may be one
        names = [n for n in [*config.model.encoders, *config.model.encoder_options] if "." not in n]
        named = [(n, k) for k in KINDS for n in [k, *names]]
    wanted: dict[str, Any] = {}
    for name, kind in dict.fromkeys(named):
        found = KINDS[kind].wanted_preprocessing(config, name) or encoder_data_settings(config, name, kind)
        if found is not None:
            wanted.setdefault(f"{kind}:{found[0]}:{found[1]}", found[1])
    merged: dict[str, Any] = {}
    for settings in wanted.values():  # an image encoder's and a speaker encoder's settings do not overlap
        if any(k in merged and merged[k] != v for k, v in settings.items()):
            raise ConfigError(f"encoders {', '.join(dict.fromkeys(a.split(':')[1] for a in wanted))} want different input "
                              "sizes or normalizations; set data.image_size, image_mean and image_std yourself")
        merged.update(settings)
    return merged or None


# compare's `VARIANT@ENCODER:MODE`: what each mode sets in the encoder's options
ENCODER_MODES: dict[str, dict[str, Any]] = {"frozen": {"trainable": False}, "finetuned": {"trainable": True},
                 "scratch": {"pretrained": False, "weights": None, "trainable": True}}


def with_encoders(config: Config, choices: dict[str, str], kinds: dict[str, str], modalities: list[str]) -> Config:
    """`config` with the encoders of some modalities replaced, as compare's
    `VARIANT@ENCODER` asks: `choices` maps a modality to a registered encoder name with an
    optional `:MODE` (ENCODER_MODES). Each of `modalities` gets its encoder and its resolved
    options under its own name, so that a key naming a kind says the same for the others;
    a replaced encoder takes the options keyed by its own name, not those the config gave the
    encoder it replaces. The image size and normalization follow the new encoders' weights
    wherever the config had them from its own encoders' (or the defaults); `kinds`: every
    modality of the data."""
    out = config.copy()
    for m in modalities:
        name, options = encoder_choice(config, ModalitySpec(name=m, kind=kinds[m]))
        if m in choices:
            new, _, mode = choices[m].partition(":")
            options = options if new == name else own_options(config, new)
            name = new
            options.update(ENCODER_MODES[mode] if mode else {})
        out.model.encoders[m] = name
        out.model.encoder_options[m] = {"trainable": True, **options}  # never empty: a kind's options must not apply
    before, after = wanted_preprocessing(config, kinds), wanted_preprocessing(out, {m: kinds[m] for m in modalities})
    if after is None:
        return out
    from mmcli.config import DataConfig

    defaults = DataConfig()
    for key, value in after.items():
        current = getattr(config.data, key)
        if current == getattr(defaults, key) or (before is not None and current == before[key]):
            setattr(out.data, key, value)
    return out


def fusion_choice(config: Config, modalities: list[str]) -> str:
    return "identity" if len(modalities) == 1 else config.model.fusion


def build(config: Config, specs: dict[str, ModalitySpec], n_outputs: int) -> Model:
    """Compose the model that `config` describes for data with these modality specs."""
    modalities = chosen_modalities(config, list(specs))
    dim = config.model.feature_dim
    encoders: dict[str, Any] = {}
    for name in modalities:
        enc_name, options = encoder_choice(config, specs[name])
        trainable = options.pop("trainable", True)
        if not isinstance(trainable, (bool, int)) or (not isinstance(trainable, bool) and trainable < 0):
            raise ConfigError(f"model.encoder_options.{name}.trainable: true, false or a number of blocks, not {trainable!r}")
        encoders[name] = _construct(ENCODERS.get(enc_name), f"encoder {enc_name}", specs[name], dim, **options)
        encoders[name].set_trainable(trainable)
        augment = KINDS[specs[name].kind].input_augment(config)
        if augment is not None and not encoders[name].feature_frozen:
            # a frozen encoder is left alone: its features are computed once and cached
            encoders[name].input_augment = augment
        encoders[name].options_key = json.dumps(options, sort_keys=True, default=str)  # for the feature cache's key
    in_dims = {n: e.out_dim for n, e in encoders.items()}
    task = TASKS.get(config.model.task)(config)
    own_head = task.build_model_head(in_dims, n_outputs, config)
    if own_head is not None:  # cross-modal tasks: the head reads every encoder's output itself
        return _with_trained(Model(encoders, None, own_head))
    fusion_name = fusion_choice(config, modalities)
    hidden, dropout = config.model.hidden_dim, config.model.dropout

    def make_head(in_dim: int) -> nn.Module:
        return task.build_head(in_dim, n_outputs, hidden, dropout)

    if config.model.crossmodal == "translate":
        if len(modalities) < 2:
            raise ConfigError("model.crossmodal=translate needs two or more modalities: the first is the source")
        from mmcli.heads.translation import TranslationHead

        return _with_trained(Model(encoders, None, TranslationHead(modalities[0], in_dims, make_head, hidden,
                                                                   config.model.translate_weight)))
    factory = FUSIONS.get(fusion_name)
    if not (isinstance(factory, type) and issubclass(factory, Fusion)):
        raise ConfigError(f"fusion {fusion_name}: a registered fusion must be a subclass of mmcli.fusion.base.Fusion")
    options = dict(config.model.fusion_options)
    options.setdefault("dropout", dropout)
    if factory.produces_outputs:
        options["make_head"] = make_head
    fusion: Any = _construct(factory, f"fusion {fusion_name}", in_dims, hidden, **options)
    head = nn.Identity() if fusion.produces_outputs else make_head(fusion.out_dim)
    wants_aux = config.model.aux_loss_weight > 0 or config.train.gradient_blending
    aux = {n: make_head(e.out_dim) for n, e in encoders.items()} if wants_aux and len(encoders) > 1 else None
    return _with_trained(Model(encoders, fusion, head, config.model.modality_dropout, aux, config.model.aux_loss_weight))


def _with_trained(model: Model) -> Model:
    """List the pretrained encoders' parts in `model.trained_prefixes` (their lr is scaled)."""
    model.trained_prefixes = [f"encoders.{n}.{part}" for n, e in model.encoders.items() for part in e.trained_parts]
    return model


ANY_OPTION = None  # declared_options' answer for a factory that reads options it does not name (**kwargs)
BUILD_OPTIONS = {"encoder": {"trainable"}, "fusion": {"dropout", "make_head"}}  # read or set by build for every one


def declared_options(factory: Any) -> set[str] | None:
    """The options a component's constructor names after its two inputs (an encoder's spec
    and size, a fusion's input sizes and size). A trailing `**_` takes what build passes to
    every component and ignores it; a factory with another `**kwargs` may read any option
    (ANY_OPTION)."""
    import inspect

    try:
        params = list(inspect.signature(factory).parameters.values())
    except (TypeError, ValueError):  # a builtin without a signature: nothing to check against
        return ANY_OPTION
    if any(p.kind is p.VAR_KEYWORD and p.name != "_" for p in params):
        return ANY_OPTION
    named = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    return set(named[2:])


def check_options(config: Config, specs: dict[str, ModalitySpec]) -> None:
    """Every option in `model.encoder_options` and `model.fusion_options` must be one that
    some component of its place takes: a misspelt key (`attn_dimm`, `widht`) is an error
    naming it and the chosen component's options, not a setting silently ignored. An
    option that another encoder of the kind (or another fusion) takes is kept: a config may
    name options for several, and `compare` trains several with one config."""
    modalities = chosen_modalities(config, list(specs))
    for name in modalities:
        encoder, options = encoder_choice(config, specs[name])
        if encoder not in ENCODERS:
            continue  # build names the unknown encoder
        kind = specs[name].kind
        siblings = [declared_options(e.factory) for e in ENCODERS.entries() if e.name.startswith(kind + ".")]
        _refuse_unknown(options, declared_options(ENCODERS.get(encoder)), siblings, BUILD_OPTIONS["encoder"],
                        f"model.encoder_options.{name}", f"encoder {encoder}")
    if len(modalities) > 1 and config.model.fusion in FUSIONS:
        siblings = [declared_options(e.factory) for e in FUSIONS.entries()]
        _refuse_unknown(config.model.fusion_options, declared_options(FUSIONS.get(config.model.fusion)), siblings,
                        BUILD_OPTIONS["fusion"], "model.fusion_options", f"fusion {config.model.fusion}")


def _refuse_unknown(options: dict[str, Any], own: set[str] | None, siblings: list[set[str] | None], generic: set[str],
                    where: str, what: str) -> None:
    if own is None or any(s is None for s in siblings):  # ANY_OPTION: nothing to check against
        return
    known = own | generic | set().union(*(s for s in siblings if s is not None))
    unknown = sorted(k for k in options if k not in known)
    if unknown:
        shown = sorted(own - {"make_head"} | generic - BUILD_OPTIONS["fusion"])  # not what build passes to fusions
        takes = f"the options of {what}: {', '.join(shown)}" if shown else f"{what} takes no options"
        raise ConfigError(f"{where}.{unknown[0]}: unknown option{'s' if len(unknown) > 1 else ''} "
                          f"{', '.join(unknown)}; {takes}")


def _construct(factory: Any, what: str, *args: Any, **kwargs: Any) -> nn.Module:
    try:
        return factory(*args, **kwargs)
    except (TypeError, ValueError, RuntimeError) as exc:  # RuntimeError: torch refusing a size (negative, too large)
        raise ConfigError(f"cannot build {what}: {str(exc)[:300]}") from None


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
