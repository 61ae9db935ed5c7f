"""Audio encoders over log-mel spectrograms [B, n_mels, frames], with SpecAugment.

SpecAugment (Park et al., 2019) masks random bands of mel frequencies and random spans
of time in each training example; it is off by default and turned on per encoder with
`spec_augment: true` (or a mapping of its four sizes) in `model.encoder_options`.

`time_stride` (1, 2, 4 or 8; default 8) is how many spectrogram frames make one token:
the conv blocks stride 2 in time, the first ones first, until it is reached. Classifiers
pool the tokens and do well with 8; transcription needs a token per few frames
(mmcli.heads.transcription).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mmcli.encoders import ENCODERS, Encoder, ModalitySpec
from mmcli.encoders.image import conv_block


class SpecAugment(nn.Module):
    """Time and frequency masking, in training only. Masked cells take 0, the normalised
    spectrogram's middle; time masks fall inside each clip's true length."""

    def __init__(self, freq_masks: int = 2, freq_width: int = 8, time_masks: int = 2, time_width: int = 16):
        super().__init__()
        for key, value in (("freq_masks", freq_masks), ("freq_width", freq_width), ("time_masks", time_masks),
                           ("time_width", time_width)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"spec_augment.{key} must be a whole number >= 0, got {value!r}")
        self.freq_masks, self.freq_width = freq_masks, freq_width
        self.time_masks, self.time_width = time_masks, time_width

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        if not self.training:
            return x
        b, n_mels, frames = x.shape
        limit = torch.full((b,), frames, device=x.device) if lengths is None else lengths.to(x.device).clamp(1, frames)
        keep = torch.ones_like(x, dtype=torch.bool)
        bins = torch.arange(n_mels, device=x.device).view(1, -1, 1)
        steps = torch.arange(frames, device=x.device).view(1, 1, -1)
        for _ in range(self.freq_masks):
            width = torch.randint(0, self.freq_width + 1, (b, 1, 1), device=x.device)
            start = (torch.rand(b, 1, 1, device=x.device) * (n_mels - width + 1)).long()
            keep &= ~((bins >= start) & (bins < start + width))
        for _ in range(self.time_masks):
            width = torch.minimum(torch.randint(0, self.time_width + 1, (b,), device=x.device), limit).view(b, 1, 1)
            start = (torch.rand(b, 1, 1, device=x.device) * (limit.view(b, 1, 1) - width + 1)).long()
            keep &= ~((steps >= start) & (steps < start + width))
        return x * keep


def make_augment(option: Any) -> SpecAugment | None:
    if option in (None, False):
        return None
    if option is True:
        return SpecAugment()
    if isinstance(option, dict):
        return SpecAugment(**option)  # unknown keys: TypeError, reported as a config error
    raise ValueError(f"spec_augment must be true, false or a mapping of its sizes, got {option!r}")


def _time_mask(tokens: torch.Tensor, lengths: torch.Tensor | None, stride: int) -> torch.Tensor:
    steps = torch.arange(tokens.shape[1], device=tokens.device)
    if lengths is None:
        return torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
    valid = (lengths.to(tokens.device) + stride - 1) // stride
    return steps.unsqueeze(0) < valid.clamp(min=1).unsqueeze(1)


TIME_STRIDES = (1, 2, 4, 8)


def conv_body(width: int, time_stride: int) -> nn.Sequential:
    """Three conv blocks striding (4, 2, 2) in frequency and 2 in time in the first
    log2(time_stride) of them."""
    if time_stride not in TIME_STRIDES or isinstance(time_stride, bool):
        raise ValueError(f"time_stride must be one of {', '.join(map(str, TIME_STRIDES))}, got {time_stride!r}")
    steps = TIME_STRIDES.index(time_stride)
    t = [2 if i < steps else 1 for i in range(3)]
    return nn.Sequential(conv_block(1, width, stride=(4, t[0])), conv_block(width, width * 2, stride=(2, t[1])),
                         conv_block(width * 2, width * 4, stride=(2, t[2])))


class _AudioEncoder(Encoder):
    augment: Any  # SpecAugment, or None
    body: nn.Sequential
    def _set_augment(self, spec_augment: Any) -> None:
        self.augment = make_augment(spec_augment)

    @property
    def augments(self) -> bool:  # type: ignore[override]
        return self.augment is not None

    def blocks(self) -> list[nn.Module]:
        return [m for name, m in self.named_children() if name not in ("proj", "augment")]

    def _maps(self, x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        if self.augment is not None:
            x = self.augment(x, lengths)
        return self.body(x.unsqueeze(1))  # [B, C, F', T']


class MelCNN(_AudioEncoder):
    """2-D conv blocks over (mel, time), the first striding 4 in frequency; frequency is
    pooled away, and time steps (one per `time_stride` frames, 8 by default) are the tokens."""

    def __init__(self, spec: ModalitySpec, out_dim: int, width: int = 16, spec_augment: Any = None,
                 time_stride: int = 8, **_: object):
        super().__init__()
        self.body = conv_body(width, time_stride)
        self.proj = nn.Linear(width * 4, out_dim)
        self.out_dim = out_dim
        self.stride = time_stride
        self._set_augment(spec_augment)

    def blocks(self) -> list[nn.Module]:
        return list(self.body)

    def features(self, x: torch.Tensor, lengths: torch.Tensor | None = None):
        raw = self._maps(x, lengths).mean(dim=2).transpose(1, 2)  # [B, T', C]
        return raw, _time_mask(raw, lengths, self.stride)


class CRNN(_AudioEncoder):
    """The CNN's conv blocks, then a bidirectional GRU over the time steps (Choi et al.,
    2017): the convolutions see local patterns, the GRU their order."""

    def __init__(self, spec: ModalitySpec, out_dim: int, width: int = 16, hidden: int = 64, spec_augment: Any = None,
                 time_stride: int = 8, **_: object):
        super().__init__()
        self.body = conv_body(width, time_stride)
        self.rnn = nn.GRU(width * 4, hidden, batch_first=True, bidirectional=True)
        self.proj = nn.Linear(2 * hidden, out_dim)
        self.out_dim = out_dim
        self.stride = time_stride
        self._set_augment(spec_augment)

    def blocks(self) -> list[nn.Module]:
        return [*self.body, self.rnn]

    def features(self, x: torch.Tensor, lengths: torch.Tensor | None = None):
        steps = self._maps(x, lengths).mean(dim=2).transpose(1, 2)  # [B, T', C]
        mask = _time_mask(steps, lengths, self.stride)
        counts = mask.sum(dim=1).clamp(min=1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(steps, counts, batch_first=True, enforce_sorted=False)
        states, _ = self.rnn(packed)
        states, _ = nn.utils.rnn.pad_packed_sequence(states, batch_first=True, total_length=steps.shape[1])
        return states, mask


ENCODERS.register("audio.cnn", "CNN over the log-mel spectrogram", tags=("audio",))(MelCNN)
ENCODERS.register("audio.crnn", "CNN + bidirectional GRU over the log-mel spectrogram (CRNN)", tags=("audio",))(CRNN)
