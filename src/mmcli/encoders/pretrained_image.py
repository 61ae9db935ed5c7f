"""`image.hf`: a pretrained Hugging Face vision transformer (ViT, DeiT, DINOv2, the vision
tower of CLIP or SigLIP) by model name or local folder, behind the optional extra `mmcli[hf]`.

A dual image-text model's folder (CLIP, SigLIP) gives its vision tower alone. The images
are stored at the size and normalised with the mean and std of the model's
preprocessor_config.json (its crop size, else its size), else at the config's image_size
with the family's usual mean and std (`data_settings`, asked before any data is decoded,
sets data.image_size, image_mean and image_std where the config leaves them at their
defaults). Another image size is read by interpolating the position embeddings where the
model can, else by resizing.

Tokens are the last hidden states of the patches, average-pooled to a 4x4 grid as
`image.vit_b_16`'s, after the pooled vector: the pooler output (CLIP, SigLIP, DINOv2),
the class token (ViT, whose pooler is often untrained), or the patches' mean (`pool`).
`pretrained: false` builds the architecture from the model's config with random weights.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mmcli.encoders import ENCODERS, Encoder, EncoderOutput, ModalitySpec
from mmcli.encoders.pretrained_hf import (layer_stack, load_config, load_tower, preprocessor_config, resolve_model,
                                          saved_config, tower_config)
from mmcli.errors import ConfigError

NAME = "image.hf"
TOKENS_GRID = 4
POOLS = ("auto", "pooler", "cls", "mean")
CLS_FAMILIES = ("vit", "deit")  # their pooler (tanh(dense(CLS))) is not trained in most checkpoints
ANY_SIZE = ("dinov2", "dinov2_with_registers")  # interpolate their position embeddings always
CLIP_MEAN, CLIP_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
HALF = [0.5, 0.5, 0.5]
USUAL_NORMALIZATION = {"clip_vision_model": (CLIP_MEAN, CLIP_STD), "siglip_vision_model": (HALF, HALF),
                       "vit": (HALF, HALF)}  # others: ImageNet's


class HFVisionTower(Encoder):
    """The model's vision transformer; its layers are the blocks for `trainable: N`."""

    def __init__(self, spec: ModalitySpec, out_dim: int, model: str = "", pretrained: bool = True, pool: str = "auto",
                 **_: object):
        super().__init__()
        if pool not in POOLS:
            raise ValueError(f"{NAME}: pool must be one of {', '.join(POOLS)}, not {pool!r}")
        full, _, model = tower_config(spec.backbone_config, model, NAME)
        config = vision_config(full, model)
        self.backbone: Any = load_tower(model, config, pretrained)
        self.family = str(config.model_type)
        self.pool_mode = ("cls" if self.family in CLS_FAMILIES else "pooler") if pool == "auto" else pool
        if self.pool_mode != "pooler" and isinstance(getattr(self.backbone, "pooler", None), nn.Module):
            self.backbone.pooler = None  # unused: no parameters that never get a gradient
        self.size, self.patch = int(config.image_size), int(config.patch_size)
        self.interpolates = "interpolate_pos_encoding" in _forward_parameters(self.backbone)
        self.pool_grid = nn.AdaptiveAvgPool2d(TOKENS_GRID)
        self.proj = nn.Linear(int(config.hidden_size), out_dim)
        self.out_dim = out_dim
        self.trained_parts = ("backbone.",) if pretrained else ()

    @staticmethod
    def data_settings(options: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
        """The image size and normalisation the model reads; a ConfigError at once where the
        model cannot be found. None where `model` is not a vision model (another kind's)."""
        model = resolve_model(str(options.get("model") or ""), NAME)
        try:
            config = vision_config(load_config(model, NAME), model)
        except ConfigError:
            return None
        return NAME, image_settings(model, config)

    @staticmethod
    def backbone_config(options: dict[str, Any]) -> str:
        return saved_config(str(options.get("model") or ""), NAME)

    def blocks(self) -> list[nn.Module]:
        return layer_stack(self.backbone)

    def _run(self, x: torch.Tensor) -> Any:
        if x.shape[-2:] == (self.size, self.size) or self.family in ANY_SIZE:
            return self.backbone(pixel_values=x)
        if self.interpolates:
            return self.backbone(pixel_values=x, interpolate_pos_encoding=True)
        x = nn.functional.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return self.backbone(pixel_values=x)

    def features(self, x: torch.Tensor, lengths: torch.Tensor | None = None):
        out = self._run(x)
        hidden = out.last_hidden_state  # [B, prefix + h*w, C]
        h, w = x.shape[-2] // self.patch, x.shape[-1] // self.patch
        if not self.interpolates and self.family not in ANY_SIZE:
            h = w = self.size // self.patch
        prefix = hidden.shape[1] - h * w
        if prefix < 0:
            raise ValueError(f"{NAME}: {hidden.shape[1]} tokens for a {h}x{w} grid of patches")
        patches = hidden[:, prefix:]
        grid = self.pool_grid(patches.transpose(1, 2).reshape(hidden.shape[0], hidden.shape[2], h, w))
        raw = torch.cat([self._summary(out, hidden, patches, prefix).unsqueeze(1), grid.flatten(2).transpose(1, 2)], 1)
        return raw, torch.ones(raw.shape[:2], dtype=torch.bool, device=x.device)

    def _summary(self, out: Any, hidden: torch.Tensor, patches: torch.Tensor, prefix: int) -> torch.Tensor:
        pooled = getattr(out, "pooler_output", None)
        if self.pool_mode == "pooler" and pooled is not None:
            return pooled
        if self.pool_mode in ("pooler", "cls") and prefix > 0:
            return hidden[:, 0]
        return patches.mean(dim=1)

    def from_features(self, raw, mask) -> EncoderOutput:
        tokens = self.proj(raw)  # token 0 is the pooled vector
        return EncoderOutput(tokens[:, 0], tokens, mask)


def vision_config(config: Any, model: str) -> Any:
    """The vision tower's config: a dual model's (CLIP, SigLIP) `vision_config`, else the
    model's own, which must describe images in patches."""
    config = getattr(config, "vision_config", None) or config
    if not all(hasattr(config, key) for key in ("image_size", "patch_size", "hidden_size")):
        raise ConfigError(f"model '{model}': not a vision transformer ({config.model_type}); {NAME} reads ViT, DeiT, "
                          "DINOv2 and the vision towers of CLIP and SigLIP")
    return config


def image_settings(model: str, config: Any) -> dict[str, Any]:
    """data.image_size, image_mean and image_std as the model's image processor says."""
    processor = preprocessor_config(model)
    size: Any = processor.get("crop_size") if processor.get("do_center_crop") else None
    size = size or processor.get("size") or config.image_size
    if isinstance(size, dict):
        size = size.get("height") or size.get("shortest_edge") or config.image_size
    mean, std = USUAL_NORMALIZATION.get(config.model_type, (IMAGENET_MEAN, IMAGENET_STD))
    if isinstance(processor.get("image_mean"), list) and isinstance(processor.get("image_std"), list):
        mean, std = processor["image_mean"], processor["image_std"]
    return {"image_size": int(size), "image_mean": [float(v) for v in mean], "image_std": [float(v) for v in std]}


def _forward_parameters(module: nn.Module) -> set[str]:
    import inspect

    try:
        return set(inspect.signature(module.forward).parameters)
    except (TypeError, ValueError):
        return set()


ENCODERS.register(NAME, "pretrained Hugging Face vision transformer: ViT, DINOv2, CLIP/SigLIP vision tower (needs mmcli[hf])",
                  tags=("image", "weights:hf"))(HFVisionTower)
