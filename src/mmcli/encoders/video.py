"""Video encoders: a registered image encoder applied to every frame, then a temporal
model over the frames' vectors (one token per frame).

`video.cnn` (the default) runs the small image CNN on each frame and a bidirectional GRU
over time, all trained from scratch. `video.<arch>` does the same with a torchvision image
backbone (`pretrained: true` or `weights: FILE`, as the image backbones take); frozen
(`trainable: false`), its frame features are computed once and kept in the feature cache,
while the temporal model above them still trains. `temporal` chooses that model: `gru`
(order matters: lips, gestures), `attention` (one Transformer layer), or `mean` (TSN's
average consensus, no parameters).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import nn

from mmcli.encoders import ENCODERS, Encoder, EncoderOutput, ModalitySpec
from mmcli.encoders.backbones import ARCHS

TEMPORAL = ("gru", "attention", "mean")


class Temporal(nn.Module):
    """The model over a clip's frame vectors [B, T, C] (mask [B, T]) and the projection to
    the model's feature size: together the encoder's `proj`, which always trains, so a
    frozen frame backbone's features can be cached while the temporal model learns."""

    def __init__(self, kind: str, channels: int, out_dim: int):
        super().__init__()
        self.kind = kind
        self.model: nn.Module = nn.Identity()
        if kind == "gru":
            self.model = nn.GRU(channels, channels // 2, batch_first=True, bidirectional=True)
            channels = 2 * (channels // 2)
        elif kind == "attention":
            heads = next(h for h in (4, 2, 1) if channels % h == 0)
            self.model = nn.TransformerEncoderLayer(channels, heads, 2 * channels, dropout=0.1, batch_first=True)
        self.linear = nn.Linear(channels, out_dim)

    def forward(self, raw: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.kind == "gru":
            packed = nn.utils.rnn.pack_padded_sequence(raw, mask.sum(1).clamp(min=1).cpu(), batch_first=True,
                                                       enforce_sorted=False)
            out, _ = self.model(packed)
            raw, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=mask.shape[1])
        elif self.kind == "attention":
            raw = self.model(raw, src_key_padding_mask=~mask)
        return self.linear(raw)


class FrameEncoder(Encoder):
    """`frame` (a registered image encoder) on each frame [B*T, 3, S, S]; its region tokens
    averaged into one vector per frame; then `proj`: the temporal model over the T frames
    and the projection, one token per frame."""

    def __init__(self, spec: ModalitySpec, out_dim: int, frame: str = "image.cnn", temporal: str = "gru",
                 pretrained: bool = False, weights: str | None = None, width: int | None = None):
        super().__init__()
        if temporal not in TEMPORAL:
            raise ValueError(f"temporal must be one of {', '.join(TEMPORAL)}, not {temporal!r}")
        options: dict[str, Any] = {"pretrained": pretrained, "weights": weights} if frame != "image.cnn" else {}
        if width is not None:
            options["width"] = width
        image = ModalitySpec(name=spec.name, kind="image", image_size=spec.image_size, channels=spec.channels)
        self.frame: Any = ENCODERS.get(frame)(image, out_dim, **options)
        channels = self.frame.proj.in_features
        self.frame.proj = nn.Identity()  # its region features are what this encoder reads
        self.trained_parts = tuple(f"frame.{p}" for p in self.frame.trained_parts)
        self.proj = Temporal(temporal, channels, out_dim)
        self.out_dim = out_dim

    def blocks(self) -> list[nn.Module]:
        return list(self.frame.blocks())

    def features(self, x: torch.Tensor, lengths: torch.Tensor | None = None):
        """Per-frame vectors [B, T, C] and the real frames' mask [B, T]."""
        b, t = x.shape[:2]
        raw, mask = self.frame.features(x.flatten(0, 1), None)  # [B*T, R, C]
        weights = mask.unsqueeze(-1).to(raw.dtype)
        frames = ((raw * weights).sum(1) / weights.sum(1).clamp(min=1.0)).view(b, t, -1)
        count = lengths.to(x.device).clamp(1, t) if lengths is not None else torch.full((b,), t, device=x.device)
        return frames, torch.arange(t, device=x.device).unsqueeze(0) < count.unsqueeze(1)

    def from_features(self, raw, mask) -> EncoderOutput:
        tokens = self.proj(raw, mask)
        weights = mask.unsqueeze(-1).to(tokens.dtype)
        pooled = (tokens * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        return EncoderOutput(pooled, tokens, mask)


ENCODERS.register("video.cnn", "small image CNN on each frame + bidirectional GRU over time, from scratch",
                  tags=("video",))(FrameEncoder)
for _arch, _about in ARCHS.items():
    if _arch != "vit_b_16":
        ENCODERS.register(f"video.{_arch}", f"torchvision {_about} on each frame + a temporal model",
                          tags=("video", "weights:torchvision"))(partial(FrameEncoder, frame=f"image.{_arch}"))
