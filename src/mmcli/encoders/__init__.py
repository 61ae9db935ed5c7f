"""Encoders: one file per modality, one registry for all.

Every encoder is built as `factory(spec, out_dim, **options)`, has `.out_dim`, and maps
an input batch to an `EncoderOutput`: a pooled vector per example and a token sequence
with its mask (image regions, text tokens, audio frames), so that token-level fusions can
use the same encoders.

Every encoder is an `Encoder`: a feature extractor (`features`, which can be frozen)
followed by a projection `proj` to the model's feature size (always trained). The split
is what lets a frozen encoder's features be computed once and cached
(`mmcli.training.features`), and what `trainable: false` or `trainable: N` (the last N
blocks) freezes.
"""

from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass
from typing import Any, Callable, Iterator, NamedTuple

import torch
from torch import nn

from mmcli.registry import Registry

ENCODERS: Registry = Registry("encoder")

# Registry tags saying where an encoder's pretrained weights come from.
PRETRAINED_TAGS = {"weights:torchvision": "torchvision (pretrained: true) or a file (weights: PATH)",
                   "weights:hf": "Hugging Face model name or local folder (model: NAME|PATH)",
                   "weights:resemblyzer": "the resemblyzer package (mmcli[speaker]) or a file (weights: PATH)",
                   "weights:openclip": "an OpenCLIP checkpoint file (model: ARCH|JSON, weights: PATH; mmcli[openclip])"}

_LOAD_PRETRAINED = contextvars.ContextVar("mmcli_load_pretrained", default=True)


@contextlib.contextmanager
def skip_pretrained() -> Iterator[None]:
    """Build encoders without fetching pretrained weights: a saved run's own weights
    replace them right after, so neither the network nor the original file is needed."""
    token = _LOAD_PRETRAINED.set(False)
    try:
        yield
    finally:
        _LOAD_PRETRAINED.reset(token)


def load_pretrained() -> bool:
    return _LOAD_PRETRAINED.get()


@dataclass(frozen=True)
class ModalitySpec:
    """What an encoder needs to know about its input's shape."""

    name: str
    kind: str
    image_size: int = 64
    channels: int = 3
    vocab_size: int = 2000
    max_len: int = 32
    n_mels: int = 64
    frames: int = 126
    tokenizer: str = "own"  # text: "own" (fitted on the training split) or "pretrained" (the model's)
    backbone_config: str = ""  # pretrained text models: their config as JSON, to rebuild without the files
    numeric: int = 0  # tabular: numeric columns
    categories: tuple[int, ...] = ()  # tabular: the number of values of each categorical column


class EncoderOutput(NamedTuple):
    pooled: "object"  # [B, D]
    tokens: "object"  # [B, T, D]
    token_mask: "object"  # [B, T], True where a token is real


def encoder_name(kind: str, name: str) -> str:
    """Registered names are `<kind>.<name>`, e.g. `image.cnn`."""
    return f"{kind}.{name}"


EMBEDDING_STD = 0.02


def embedding(count: int, dim: int, padding_idx: int | None = 0) -> nn.Embedding:
    """A token embedding table initialised as BERT and GPT do, N(0, 0.02) with a zero
    padding row, instead of nn.Embedding's N(0, 1): at the default learning rate a row
    moves by about 0.003 per step, and a word seen in few training examples gets few
    steps, so from N(0, 1) the rare words kept their random vectors. On mdi-icons' names
    (3 seeds) the embedding bag went from 80.5 to 81.8 % with this alone, and to 86.8 % with
    its pooled vector layer-normalised too (`bench/text_recipe.py`, docs/results.md)."""
    table = nn.Embedding(count, dim, padding_idx=padding_idx)
    nn.init.normal_(table.weight, std=EMBEDDING_STD)
    if padding_idx is not None:
        with torch.no_grad():
            table.weight[padding_idx].zero_()
    return table


class Encoder(nn.Module):
    """features(x) -> raw tokens [B, T, C] and mask [B, T]; proj -> [B, T, D]; pooled
    over the real tokens by `pool` ("mean" or "max").

    Subclasses build their layers, then `self.proj` and `self.out_dim`. `blocks()` lists
    the feature extractor's blocks from input to output, for `trainable: N`.
    """

    pool = "mean"
    norm_pooled = False  # True: the pooled vector is layer-normalised (no parameters); see `text.py`
    augments = False  # True while the encoder changes its inputs in training (no feature cache then)
    trained_parts: tuple[str, ...] = ()  # submodules whose weights start trained (pretrained): their lr is scaled
    options_key: str = ""  # the encoder's resolved options as JSON (models.build): part of the feature cache's key
    proj: nn.Module  # set by each subclass
    out_dim: int

    def features(self, x, lengths=None):
        raise NotImplementedError

    def from_features(self, raw, mask) -> EncoderOutput:
        tokens = self.proj(raw)
        if self.pool == "max":
            filled = tokens.masked_fill(~mask.unsqueeze(-1), float("-inf"))
            pooled = filled.max(dim=1).values
            pooled = torch.where(torch.isfinite(pooled), pooled, torch.zeros_like(pooled))
        else:
            weights = mask.unsqueeze(-1).to(tokens.dtype)
            pooled = (tokens * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        if self.norm_pooled:
            pooled = nn.functional.layer_norm(pooled, pooled.shape[-1:])
        return EncoderOutput(pooled, tokens, mask)

    def forward(self, x, lengths=None) -> EncoderOutput:
        augment = self.input_augment
        if self.training and augment is not None:
            x = augment(x)
        return self.from_features(*self.features(x, lengths))

    def blocks(self) -> list:
        return [m for name, m in self.named_children() if name not in ("proj", "input_augment")]

    def extractor_parameters(self) -> list:
        return [p for name, p in self.named_parameters() if not name.startswith("proj.")]

    def set_trainable(self, trainable: bool | int) -> None:
        """True: everything trains; False: only `proj`; N: `proj` and the last N blocks."""
        if isinstance(trainable, bool) or trainable is None:
            for p in self.extractor_parameters():
                p.requires_grad_(trainable is not False)
            return
        if not isinstance(trainable, int) or trainable < 0:
            raise ValueError(f"trainable must be true, false or a number of blocks >= 0, got {trainable!r}")
        for p in self.extractor_parameters():
            p.requires_grad_(False)
        blocks = self.blocks()
        for block in blocks[len(blocks) - trainable:] if trainable else []:
            block.requires_grad_(True)

    @property
    def feature_frozen(self) -> bool:
        """No parameter of the feature extractor trains (its features can be cached)."""
        return not any(p.requires_grad for p in self.extractor_parameters())

    @property
    def cacheable(self) -> bool:
        return self.feature_frozen and not self.augments and self.input_augment is None

    @property
    def input_augment(self):
        """Images: the ImageAugment (a submodule) that models.build attaches to an encoder that trains."""
        return self._modules.get("input_augment")

    def train(self, mode: bool = True):
        super().train(mode)
        if mode:
            from torch.nn.modules.batchnorm import _BatchNorm

            if self.feature_frozen:  # frozen features: no dropout, no batch-norm updates
                for name, child in self.named_children():
                    if name != "proj" and any(True for _ in child.parameters()):  # SpecAugment keeps masking
                        child.eval()
            else:
                for m in self.modules():
                    if isinstance(m, _BatchNorm) and not any(p.requires_grad for p in m.parameters()):
                        m.eval()
        return self


def chosen_hook(config, name: str, kind: str, hook: str) -> tuple[Callable[..., Any], dict[str, Any]] | None:
    """The encoder chosen for modality `name` of `kind`: its factory's static method `hook`
    (data_settings, backbone_config, tokenizer) and the encoder's options, or None where the
    factory has no such method."""
    from mmcli.models import encoder_choice

    choice, options = encoder_choice(config, ModalitySpec(name=name, kind=kind))
    found = getattr(ENCODERS.get(choice), hook, None) if choice in ENCODERS else None
    return (found, options) if callable(found) else None


def encoder_data_settings(config, name: str, kind: str) -> tuple[str, dict] | None:
    """(the encoder, the data settings) that the encoder chosen for modality `name` of `kind`
    reads, from its factory's `data_settings(options)` where it has one (a pretrained
    Hugging Face model's image size, its spectrogram analysis), or None. Asked before any
    data is decoded (`models.wanted_preprocessing`), so that a model that cannot be found
    is a ConfigError at once, not after preprocessing."""
    from mmcli.errors import ConfigError

    try:
        found = chosen_hook(config, name, kind, "data_settings")
    except ConfigError:  # another kind's encoder: `name` is not a modality of this kind
        return None
    return found[0](found[1]) if found is not None else None


def _register_builtins() -> None:
    from mmcli.encoders import (audio, backbones, image, openclip, pretrained_audio, pretrained_image,  # noqa: F401
                                pretrained_text, speaker, tabular, text, video, video_backbones)


_register_builtins()
