"""Encoders: one file per modality, one registry for all.

Every encoder is built as `factory(spec, out_dim, **options)`, has `.out_dim`, and maps
an input batch to an `EncoderOutput`: a pooled vector per example and a token sequence
with its mask (image regions, text tokens, audio frames), so that token-level fusions can
use the same encoders.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from mmcli.registry import Registry

ENCODERS: Registry = Registry("encoder")
DEFAULT_ENCODERS = {"image": "cnn", "text": "textcnn", "audio": "cnn"}


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


class EncoderOutput(NamedTuple):
    pooled: "object"  # [B, D]
    tokens: "object"  # [B, T, D]
    token_mask: "object"  # [B, T], True where a token is real


def encoder_name(kind: str, name: str) -> str:
    """Registered names are `<kind>.<name>`, e.g. `image.cnn`."""
    return f"{kind}.{name}"


def _register_builtins() -> None:
    from mmcli.encoders import audio, image, text  # noqa: F401  (registration side effects)


_register_builtins()
