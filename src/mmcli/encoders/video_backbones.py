"""torchvision's 3D convolutional video networks as video encoders: `video.r3d_18`,
`video.mc3_18`, `video.r2plus1d_18` (Tran et al., 2018).

They read a whole clip, [B, 3, T, H, W], with `pretrained: true` (torchvision's Kinetics-400
weights, downloaded once) or `weights: FILE` (a state dict on disk, for machines without a
network), as the image backbones do; the frame size and normalisation then follow the
weights' metadata (112x112, Kinetics' mean and std: the video kind's
`wanted_preprocessing`). Their tokens are the time steps left after the network's temporal
strides (the feature maps averaged over space). `trainable: false` freezes the network,
whose features then go through the feature cache; `trainable: N` trains its last N
residual blocks.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import nn

from mmcli.encoders import ENCODERS, Encoder, ModalitySpec
from mmcli.encoders.backbones import _torchvision_model

VIDEO_ARCHS = {
    "r3d_18": "R3D-18 (Tran et al., 2018), 3D ResNet on the whole clip, 512 features",
    "mc3_18": "MC3-18 (Tran et al., 2018), mixed 3D/2D convolutions on the whole clip, 512 features",
    "r2plus1d_18": "R(2+1)D-18 (Tran et al., 2018), factorised (2+1)D convolutions on the whole clip, 512 features",
}


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
        self.body = nn.Sequential(tv.stem, tv.layer1, tv.layer2, tv.layer3, tv.layer4)
        self._blocks = [b for layer in (tv.layer1, tv.layer2, tv.layer3, tv.layer4) for b in layer]
        self.trained_parts = ("body.",) if pretrained or weights else ()
        self.proj = nn.Linear(tv.fc.in_features, out_dim)
        self.out_dim = out_dim

    def blocks(self) -> list[nn.Module]:
        return list(self._blocks)

    def features(self, x: torch.Tensor, lengths: torch.Tensor | None = None):
        maps = self.body(x.transpose(1, 2))  # [B, T, 3, H, W] -> [B, 3, T, H, W] -> [B, C, T', H', W']
        raw = maps.mean(dim=(3, 4)).transpose(1, 2)  # a token per remaining time step
        return raw, torch.ones(raw.shape[:2], dtype=torch.bool, device=x.device)


for _arch, _about in VIDEO_ARCHS.items():
    ENCODERS.register(f"video.{_arch}", f"torchvision {_about}", tags=("video", "weights:torchvision"))(
        partial(VideoBackbone, arch=_arch))
