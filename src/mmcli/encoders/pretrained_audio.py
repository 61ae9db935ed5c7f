"""`audio.hf`: a pretrained Hugging Face audio transformer that reads log-mel spectrograms,
by model name or local folder, behind the optional extra `mmcli[hf]`: Whisper's encoder
(any size) and the Audio Spectrogram Transformer (AST).

The audio kind stores log-mel spectrograms, not waveforms, so models that read raw
samples (wav2vec 2.0, HuBERT, WavLM) do not fit it and are refused by name. The two
families read spectrograms close to the kind's own: `data_settings`, asked before any
data is decoded, sets the kind's analysis to the model's (16 kHz, 25 ms windows, 10 ms
hops, the model's number of mel bands) where the config leaves it at its defaults. Then:

- Whisper reads log10 power scaled as (log10 + 4) / 4, which is exactly the kind's
  normalised dB, (dB + 40) / 40; its dynamic range is clamped to 8 decades below each
  clip's peak as Whisper's feature extractor does, and it is padded with silence (or cut)
  to the encoder's fixed length, 3000 frames (30 s) for the released models. Its output
  frames (one per 20 ms) are kept up to the batch's longest clip.
- AST reads Kaldi filterbanks (natural log) normalised by its data set's mean and std; the
  kind's dB are recast to that scale (an approximation: the filterbanks differ), padded
  or cut to its `max_length` frames (1024, about 10 s). Its patch tokens are averaged
  over frequency, one token per `time_stride` frames.

Another number of mel bands is resampled to the model's. Tokens follow the pooled vector
(AST's pooler output, the mean of Whisper's real frames); the mask covers each clip's real
frames. `pretrained: false` builds the architecture from the model's config with random weights.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mmcli.encoders import ENCODERS, Encoder, EncoderOutput, ModalitySpec
from mmcli.encoders.pretrained_hf import (layer_stack, load_config, load_tower, preprocessor_config, resolve_model,
                                          saved_config, tower_config)
from mmcli.errors import ConfigError

NAME = "audio.hf"
WHISPER, AST = "whisper", "audio-spectrogram-transformer"
WAVEFORM_FAMILIES = ("wav2vec2", "hubert", "wavlm", "data2vec-audio", "unispeech", "unispeech-sat", "sew", "sew-d",
                     "wav2vec2-conformer", "wav2vec2-bert")
SILENCE = -1.5  # the kind's normalised silence (-100 dB)
WHISPER_RANGE = 2.0  # 8 decades of power below the peak, in (log10 + 4) / 4 units
DB_TO_LN = 0.23025850929940458  # ln(10) / 10
AST_MEAN, AST_STD = -4.2677393, 4.5689974  # AudioSet's, as ASTFeatureExtractor normalises


class HFAudioTower(Encoder):
    """Whisper's encoder or AST over the kind's log-mel spectrograms [B, n_mels, frames]."""

    def __init__(self, spec: ModalitySpec, out_dim: int, model: str = "", pretrained: bool = True, **_: object):
        super().__init__()
        config, processor, model = tower_config(spec.backbone_config, model, NAME)
        self.family = _family(config, model)
        self.backbone: Any = load_tower(model, config, pretrained)
        self.bins = int(config.num_mel_bins)
        if self.family == WHISPER:
            self.length = int(config.max_source_positions) * 2  # two convolutions, the second striding 2
            self.stride, self.pad_value = 2, SILENCE
        else:
            self.mean, self.std = float(processor.get("mean", AST_MEAN)), float(processor.get("std", AST_STD))
            self.length, self.stride = int(config.max_length), int(config.time_stride)
            self.pad_value = -self.mean / (2 * self.std)  # AST pads its filterbanks with 0 before normalising
        self.proj = nn.Linear(int(config.hidden_size), out_dim)
        self.out_dim = out_dim
        self.trained_parts = ("backbone.",) if pretrained else ()

    @staticmethod
    def data_settings(options: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
        """The spectrogram analysis the model reads; a ConfigError at once where the model
        cannot be found. None where `model` is not an audio model (another kind's)."""
        model = resolve_model(str(options.get("model") or ""), NAME)
        try:
            config = load_config(model, NAME)
            _family(config, model)
        except ConfigError:
            return None
        processor = preprocessor_config(model)
        return NAME, {"sample_rate": int(processor.get("sampling_rate", 16000)), "n_mels": int(config.num_mel_bins),
                      "n_fft": int(processor.get("n_fft", 400)), "hop_length": int(processor.get("hop_length", 160))}

    @staticmethod
    def backbone_config(options: dict[str, Any]) -> str:
        return saved_config(str(options.get("model") or ""), NAME)

    def blocks(self) -> list[nn.Module]:
        return layer_stack(self.backbone)

    def _inputs(self, x: torch.Tensor) -> torch.Tensor:
        """[B, n_mels, frames] -> [B, bins, self.length] on the model's scale."""
        if x.shape[1] != self.bins:
            x = nn.functional.interpolate(x.unsqueeze(1), size=(self.bins, x.shape[2]), mode="bilinear",
                                          align_corners=False).squeeze(1)
        if self.family == AST:
            x = (x * 40.0 - 40.0) * DB_TO_LN  # the kind's (dB + 40) / 40 -> natural log of power
            x = (x - self.mean) / (2 * self.std)
        x = x[:, :, : self.length]
        x = nn.functional.pad(x, (0, self.length - x.shape[2]), value=self.pad_value)
        if self.family == WHISPER:
            x = torch.maximum(x, x.amax(dim=(1, 2), keepdim=True) - WHISPER_RANGE)
        return x

    def features(self, x: torch.Tensor, lengths: torch.Tensor | None = None):
        used = min(x.shape[2], self.length)
        inputs = self._inputs(x)
        if self.family == WHISPER:
            frames = self.backbone(input_features=inputs).last_hidden_state  # [B, length / 2, C]
            summary = None
        else:
            out = self.backbone(input_values=inputs.transpose(1, 2))
            hidden, summary = out.last_hidden_state, out.pooler_output
            times = (self.length - self.backbone.config.patch_size) // self.stride + 1
            patches = hidden[:, 2:]  # after the class and distillation tokens, frequency-major
            frames = patches.reshape(hidden.shape[0], -1, times, hidden.shape[2]).mean(dim=1)  # over frequency
        frames = frames[:, : max(1, min(frames.shape[1], -(-used // self.stride)))]
        steps = torch.arange(frames.shape[1], device=x.device).unsqueeze(0) * self.stride
        limit = torch.full((x.shape[0], 1), used, device=x.device) if lengths is None else lengths.to(x.device).view(-1, 1)
        mask = (steps < limit) | (steps == 0)
        if summary is None:
            weights = mask.unsqueeze(-1).to(frames.dtype)
            summary = (frames * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        raw = torch.cat([summary.unsqueeze(1), frames], dim=1)
        return raw, torch.cat([torch.ones_like(mask[:, :1]), mask], dim=1)

    def from_features(self, raw, mask) -> EncoderOutput:
        tokens = self.proj(raw)  # token 0 is the pooled vector
        return EncoderOutput(tokens[:, 0], tokens, mask)


def _family(config: Any, model: str) -> str:
    family = str(getattr(config, "model_type", ""))
    if family in (WHISPER, AST):
        return family
    if family in WAVEFORM_FAMILIES:
        raise ConfigError(f"model '{model}': {family} reads raw waveforms, and the audio kind stores log-mel "
                          f"spectrograms; {NAME} reads Whisper (its encoder) and AST")
    raise ConfigError(f"model '{model}': not an audio model that {NAME} reads ({family or 'unknown'}): "
                      "Whisper (its encoder) or AST")


ENCODERS.register(NAME, "pretrained Hugging Face audio transformer over log-mel spectrograms: Whisper's encoder, AST "
                  "(needs mmcli[hf])", tags=("audio", "weights:hf"))(HFAudioTower)
