"""torchvision's video networks as video encoders: the 3D convolutional `video.r3d_18`,
`video.mc3_18`, `video.r2plus1d_18` (Tran et al., 2018) and `video.s3d` (Xie et al., 2018),
and the video transformers `video.swin3d_t` (Liu et al., 2022) and `video.mvit_v1_b`
(Fan et al., 2021).

They read a whole clip, [B, 3, T, H, W], with `pretrained: true` (torchvision's Kinetics-400
weights, downloaded once) or `weights: FILE` (a state dict on disk, for machines without a
network), as the image backbones do; the frame size and normalisation then follow the
weights' metadata (the video kind's `wanted_preprocessing`: 112x112 for the ResNets,
224x224 for the others, each with its own mean and std). Their tokens are the time steps
left after the network's temporal strides (the feature maps averaged over space). A clip
shorter than a network's temporal strides allow is lengthened by repeating its last frame.
MViT's position embeddings were learnt for 16 frames of 224x224; other clip sizes read them
interpolated (as ViT's are for other image sizes). `trainable: false` freezes the network,
whose features then go through the feature cache; `trainable: N` trains its last N blocks.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from mmcli.encoders import ENCODERS, Encoder, ModalitySpec
from mmcli.encoders.backbones import _torchvision_model

VIDEO_ARCHS = {
    "r3d_18": "R3D-18 (Tran et al., 2018), 3D ResNet on the whole clip, 512 features",
    "mc3_18": "MC3-18 (Tran et al., 2018), mixed 3D/2D convolutions on the whole clip, 512 features",
    "r2plus1d_18": "R(2+1)D-18 (Tran et al., 2018), factorised (2+1)D convolutions on the whole clip, 512 features",
    "s3d": "S3D (Xie et al., 2018), separable 3D Inception on the whole clip, 1024 features",
    "swin3d_t": "Swin3D-T (Liu et al., 2022), video Swin transformer on the whole clip, 768 features",
    "mvit_v1_b": "MViT-B (Fan et al., 2021), multiscale vision transformer on the whole clip, 768 features",
}
# Clips shorter than this are padded with their last frame. S3D: fewer than 5 frames leave
# nothing after its temporal strides, and on some CPUs (seen on AMD EPYC) torch 2.14's oneDNN
# backward of its first temporal convolution (7x1x1 at stride 2) corrupts memory on 5 to 7
# steps: 5 kill the process ("double free or corruption"), 6 and 7 give non-finite weight
# gradients in 1 of 3 to 1 of 7 backward passes; 8 (data.video_frames' default) and 10 gave
# none in 50 and 20 passes.
MIN_FRAMES = {"s3d": 8}


class _Permute(nn.Module):
    def __init__(self, *order: int):
        super().__init__()
        self.order = order

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(*self.order)


class _MViTBody(nn.Module):
    """MViT's layers up to its last norm, as feature maps [B, C, T', H', W'] without the
    class token; the position embeddings interpolated to the clip's token grid."""

    def __init__(self, tv: Any):
        super().__init__()
        self.conv_proj, self.pos, self.blocks, self.norm = tv.conv_proj, tv.pos_encoding, tv.blocks, tv.norm

    def _position(self, grid: tuple[int, int, int]) -> torch.Tensor:
        pos = self.pos
        t, h, w = grid
        temporal = pos.temporal_pos
        if temporal.shape[0] != t:
            temporal = F.interpolate(temporal.T[None], size=t, mode="linear", align_corners=False)[0].T
        spatial = pos.spatial_pos
        if tuple(pos.spatial_size) != (h, w):
            square = spatial.T.reshape(1, -1, *pos.spatial_size)
            spatial = F.interpolate(square, size=(h, w), mode="bicubic", align_corners=False).flatten(2)[0].T
        return (temporal[:, None, :] + spatial[None]).reshape(t * h * w, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_proj(x)
        grid = (int(x.shape[2]), int(x.shape[3]), int(x.shape[4]))
        x = x.flatten(2).transpose(1, 2) + self._position(grid)
        token = (self.pos.class_token + self.pos.class_pos).expand(x.shape[0], 1, -1)
        x = torch.cat([token, x], dim=1)
        thw: Any = grid
        for block in self.blocks:
            x, thw = block(x, thw)
        x = self.norm(x)[:, 1:]
        return x.transpose(1, 2).reshape(x.shape[0], -1, *thw)


def _resnet3d(tv: Any) -> tuple[nn.Module, list[nn.Module], int]:
    blocks = [b for layer in (tv.layer1, tv.layer2, tv.layer3, tv.layer4) for b in layer]
    return nn.Sequential(tv.stem, tv.layer1, tv.layer2, tv.layer3, tv.layer4), blocks, tv.fc.in_features


def _s3d(tv: Any) -> tuple[nn.Module, list[nn.Module], int]:
    return tv.features, [m for m in tv.features if any(True for _ in m.parameters())], tv.classifier[1].in_channels


def _swin3d(tv: Any) -> tuple[nn.Module, list[nn.Module], int]:
    blocks = [b for stage in tv.features for b in (stage if isinstance(stage, nn.Sequential) else [stage])]
    body = nn.Sequential(tv.patch_embed, tv.pos_drop, tv.features, tv.norm, _Permute(0, 4, 1, 2, 3))
    return body, blocks + [tv.norm], tv.head.in_features


def _mvit(tv: Any) -> tuple[nn.Module, list[nn.Module], int]:
    return _MViTBody(tv), list(tv.blocks) + [tv.norm], tv.head[1].in_features


PARTS: dict[str, Callable[[Any], tuple[nn.Module, list[nn.Module], int]]] = {
    "r3d_18": _resnet3d, "mc3_18": _resnet3d, "r2plus1d_18": _resnet3d, "s3d": _s3d, "swin3d_t": _swin3d,
    "mvit_v1_b": _mvit}


def video_preprocessing(arch: str) -> dict[str, Any]:
    """The weights' crop size and normalisation (metadata only: no download)."""
    from torchvision.models import get_model_weights

    preset = get_model_weights(arch).DEFAULT.transforms()
    return {"image_size": int(preset.crop_size[0]), "image_mean": list(preset.mean), "image_std": list(preset.std)}


class VideoBackbone(Encoder):
    def __init__(self, spec: ModalitySpec, out_dim: int, arch: str = "r3d_18", pretrained: bool = False,
                 weights: str | None = None):
        super().__init__()
        tv = _torchvision_model(arch, pretrained, weights)
        self.body, self._blocks, dim = PARTS[arch](tv)
        self.min_frames = MIN_FRAMES.get(arch, 1)
        self.trained_parts = ("body.",) if pretrained or weights else ()
        self.proj = nn.Linear(dim, out_dim)
        self.out_dim = out_dim

    def blocks(self) -> list[nn.Module]:
        return list(self._blocks)

    def features(self, x: torch.Tensor, lengths: torch.Tensor | None = None):
        if x.shape[1] < self.min_frames:  # repeat the last frame (a padded clip's is black, as its padding)
            x = torch.cat([x, x[:, -1:].expand(-1, self.min_frames - x.shape[1], -1, -1, -1)], dim=1)
        maps = self.body(x.transpose(1, 2))  # [B, T, 3, H, W] -> [B, 3, T, H, W] -> [B, C, T', H', W']
        raw = maps.mean(dim=(3, 4)).transpose(1, 2)  # a token per remaining time step
        return raw, torch.ones(raw.shape[:2], dtype=torch.bool, device=x.device)


for _arch, _about in VIDEO_ARCHS.items():
    ENCODERS.register(f"video.{_arch}", f"torchvision {_about}", tags=("video", "weights:torchvision"))(
        partial(VideoBackbone, arch=_arch))
