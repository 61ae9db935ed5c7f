"""Pretrained image backbones from torchvision, by name.

`pretrained: true` takes the architecture's default weights through torchvision's
weights API (downloaded once into torch's cache, so it needs the network the first
time); `weights: PATH` loads a state dict from a local `.pth`/`.pt`/`.safetensors` file,
for machines without one. Input size and normalization follow the weights' metadata:
`image_preprocessing(arch)` gives them to the data config (see `models.adapt_data`).
`trainable: false` freezes the backbone (its features can then be cached); `trainable: N`
trains the last N blocks (residual blocks, inverted-residual blocks, ConvNeXt blocks or
Transformer layers).

`mobilenet_v2` has two sources of weights that read different inputs: torchvision's
(`pretrained: true`) read ImageNet-normalised images, while a `weights: PATH` file is
taken to be Google's MobileNetV2 (TensorFlow's convention, as the file in
`../shared/weights`), which reads RGB in [0, 1] normalised with mean = std = 0.5.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmcli.encoders import ENCODERS, Encoder, ModalitySpec, load_pretrained
from mmcli.errors import ConfigError

ARCHS = {
    "resnet18": "ResNet-18 (He et al., 2016), 512 features",
    "resnet50": "ResNet-50 (He et al., 2016), 2048 features",
    "mobilenet_v2": "MobileNetV2 (Sandler et al., 2018), 1280 features; a weights file reads inputs normalised with mean = std = 0.5",
    "mobilenet_v3_small": "MobileNetV3-Small (Howard et al., 2019), 576 features",
    "efficientnet_b0": "EfficientNet-B0 (Tan and Le, 2019), 1280 features",
    "convnext_tiny": "ConvNeXt-Tiny (Liu et al., 2022), 768 features",
    "vit_b_16": "ViT-B/16 (Dosovitskiy et al., 2021), 768 features; 224x224 with pretrained weights",
}
TOKENS_GRID = 4  # feature maps are pooled to 4x4 region tokens, as the small CNN's
MIN_IMAGE_SIZE = {"convnext_tiny": 32}  # smaller images vanish before its last 2x2 downsampling
# How a `weights: PATH` file of these architectures normalises its inputs, where it is not as
# torchvision's own weights do: MobileNetV2 files come from TensorFlow, whose models read [-1, 1].
FILE_NORMALIZATION = {"mobilenet_v2": {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}}


def image_preprocessing(arch: str, from_file: bool = False) -> dict[str, Any]:
    """The weights' input size and normalization (metadata only: no download): those of
    torchvision's default weights, or with `from_file` those of the file the arch expects."""
    from torchvision.models import get_model_weights

    preset = get_model_weights(arch).DEFAULT.transforms()
    out = {"image_size": int(preset.crop_size[0]), "image_mean": list(preset.mean), "image_std": list(preset.std)}
    return {**out, **FILE_NORMALIZATION.get(arch, {})} if from_file else out


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a file: safetensors, or a torch pickle read with weights_only
    (tensors only, never code); a checkpoint that wraps it under state_dict/model works too."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch and safetensors raise many types for a foreign file
        raise ConfigError(f"{path}: not a weights file that torch can read ({exc})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"{path}: holds no state dict of tensors")
    return state


def load_into(model: nn.Module, state: dict[str, torch.Tensor], path: Any, what: str) -> None:
    missing, unexpected = model.state_dict().keys() - state.keys(), state.keys() - model.state_dict().keys()
    if missing or unexpected:
        raise ConfigError(f"{path}: these weights are not {what}'s: {len(missing)} of its tensors missing "
                          f"(e.g. {sorted(missing)[:2]}), {len(unexpected)} unexpected (e.g. {sorted(unexpected)[:2]})")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).split("\n\t")[1] if "\n\t" in str(exc) else str(exc)
        raise ConfigError(f"{path}: these weights do not fit {what}: {first}") from None


def _torchvision_model(arch: str, pretrained: bool, weights: str | None, **kwargs: Any) -> Any:
    """A torchvision model, image or video (Any: its parts are read by name, `tv.layer1`, `tv.features`)."""
    from torchvision.models import get_model_builder

    builder = get_model_builder(arch)
    if not load_pretrained() or (not pretrained and not weights):
        return builder(weights=None, **kwargs)
    if weights:
        model = builder(weights=None, **kwargs)
        load_into(model, read_state_dict(weights), weights, arch)
        return model
    try:
        return builder(weights="DEFAULT", **kwargs)
    except (OSError, RuntimeError) as exc:  # no network, a proxy, a broken download
        from torch.hub import get_dir

        raise ConfigError(f"{arch}: cannot download the pretrained weights ({exc}); on a machine without network, "
                          f"download them elsewhere and pass the file as weights: PATH, or put it in "
                          f"{Path(get_dir()) / 'checkpoints'} ($TORCH_HOME/hub/checkpoints/)") from None


def _stages(arch: str, tv: Any) -> tuple[nn.Module, list[nn.Module], int]:
    """(the feature-map body, its blocks in order, its channels)."""
    if arch.startswith("resnet"):
        body = nn.Sequential(tv.conv1, tv.bn1, tv.relu, tv.maxpool, tv.layer1, tv.layer2, tv.layer3, tv.layer4)
        blocks = [b for layer in (tv.layer1, tv.layer2, tv.layer3, tv.layer4) for b in layer]
        return body, blocks, tv.fc.in_features
    if arch == "convnext_tiny":
        body = nn.Sequential(*tv.features, tv.classifier[0])  # the head's LayerNorm2d belongs to the features
        blocks = [b for stage in list(tv.features)[1:] for b in (stage if type(stage[0]).__name__ == "CNBlock" else [stage])]
        return body, blocks + [tv.classifier[0]], tv.classifier[2].in_features
    if arch == "efficientnet_b0":  # seven stages of MBConv blocks, then a 1x1 conv
        blocks = [b for stage in list(tv.features)[1:8] for b in stage] + [tv.features[8]]
        return tv.features, blocks, tv.features[8].out_channels
    blocks = list(tv.features)[1:]  # mobilenet_v2 and v3_small: inverted-residual blocks, then a 1x1 conv
    return tv.features, blocks, tv.features[-1].out_channels


class TorchvisionBackbone(Encoder):
    """A torchvision convolutional backbone without its classifier; its last feature map,
    pooled to 4x4, gives 16 region tokens."""

    def __init__(self, spec: ModalitySpec, out_dim: int, arch: str = "resnet18", pretrained: bool = False,
                 weights: str | None = None, **_: object):
        super().__init__()
        if spec.image_size < MIN_IMAGE_SIZE.get(arch, 1):
            raise ValueError(f"{arch} needs data.image_size of at least {MIN_IMAGE_SIZE[arch]}, got {spec.image_size}")
        tv = _torchvision_model(arch, pretrained, weights)
        self.body, self._blocks, channels = _stages(arch, tv)
        self.trained_parts = ("body.",) if pretrained or weights else ()  # also when a run is loaded without them
        self.pool_grid = nn.AdaptiveAvgPool2d(TOKENS_GRID)
        self.proj = nn.Linear(channels, out_dim)
        self.out_dim = out_dim

    def blocks(self) -> list[nn.Module]:
        return list(self._blocks)

    def features(self, x: torch.Tensor, lengths: torch.Tensor | None = None):
        raw = self.pool_grid(self.body(x)).flatten(2).transpose(1, 2)  # [B, 16, C]
        return raw, torch.ones(raw.shape[:2], dtype=torch.bool, device=x.device)


class ViTBackbone(Encoder):
    """torchvision's ViT-B/16 without its head: the class token and the patch tokens
    pooled to a 4x4 grid (17 tokens)."""

    def __init__(self, spec: ModalitySpec, out_dim: int, pretrained: bool = False, weights: str | None = None, **_: object):
        super().__init__()
        loads = load_pretrained() and (pretrained or bool(weights))
        size = 224 if loads else spec.image_size
        if loads and spec.image_size != 224:
            raise ValueError(f"vit_b_16 with pretrained weights reads 224x224 images, not {spec.image_size} "
                             "(leave data.image_size unset)")
        if size % 16:
            raise ValueError(f"vit_b_16 needs data.image_size divisible by 16, not {size}")
        self.vit: Any = _torchvision_model("vit_b_16", pretrained, weights, image_size=size)
        self.vit.heads = nn.Identity()
        self.trained_parts = ("vit.",) if pretrained or weights else ()
        self.pool_grid = nn.AdaptiveAvgPool2d(TOKENS_GRID)
        self.proj = nn.Linear(self.vit.hidden_dim, out_dim)
        self.out_dim = out_dim

    def blocks(self) -> list[nn.Module]:
        return [*self.vit.encoder.layers, self.vit.encoder.ln]

    def features(self, x: torch.Tensor, lengths: torch.Tensor | None = None):
        h = self.vit._process_input(x)
        h = torch.cat([self.vit.class_token.expand(h.shape[0], -1, -1), h], dim=1)
        h = self.vit.encoder(h)  # [B, 1 + n*n, C]
        side = int((h.shape[1] - 1) ** 0.5)
        grid = h[:, 1:].transpose(1, 2).reshape(h.shape[0], h.shape[2], side, side)
        raw = torch.cat([h[:, :1], self.pool_grid(grid).flatten(2).transpose(1, 2)], dim=1)
        return raw, torch.ones(raw.shape[:2], dtype=torch.bool, device=x.device)


for _arch, _about in ARCHS.items():
    _factory = ViTBackbone if _arch == "vit_b_16" else partial(TorchvisionBackbone, arch=_arch)
    ENCODERS.register(f"image.{_arch}", f"torchvision {_about}", tags=("image", "weights:torchvision"))(_factory)
