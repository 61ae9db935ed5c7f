"""A pretrained speaker encoder: Resemblyzer's GE2E voice encoder (Wan et al., 2018), with
the weights that the `resemblyzer` package ships (behind the optional extra `mmcli[speaker]`).

Architecture, as the weights want it: a 3-layer LSTM (256 units) over 40-band mel power
spectrograms at 16 kHz (25 ms windows, 10 ms hop), whose last hidden state goes through a
linear layer (256), a ReLU and an L2 normalisation. An utterance is cut into partial
windows of 160 frames (1.6 s), `rate` windows a second, the last kept if it covers
`min_coverage` of a window; its embedding is the L2-normalised mean of the windows'.

The audio kind reads the data settings the weights want (`PREPROCESSING`: data.sample_rate
16000, n_mels 40, n_fft 400, hop_length 160, wherever the config leaves them unset; other
values that the config sets are refused), so the stored log-mel spectrogram is Resemblyzer's
mel power in dB: the encoder turns it back into power. What differs from `VoiceEncoder.embed_utterance`: dB values are stored in float16
and clipped to [-100, 40] dB, and the frame after a clip's end holds silence here where
Resemblyzer's zero padding still sees the clip's last samples; `preprocess_wav`'s volume
normalisation and silence trimming (webrtcvad) are not applied, as `embed_utterance` does
not apply them either.

Tokens are the windows' embeddings (one per 1/rate s, masked past a clip's windows); the
pooled vector is the utterance embedding, both through the trainable `proj`. With
pretrained weights the LSTM and its linear layer are frozen, whatever `trainable` says,
unless `finetune: true` (then `trainable` applies: true, or the last N of its 2 blocks).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmcli.encoders import ENCODERS, Encoder, EncoderOutput, ModalitySpec, load_pretrained
from mmcli.errors import ConfigError

NAME = "audio.resemblyzer"
N_MELS, HIDDEN, LAYERS = 40, 256, 3
WINDOW = 160  # frames in a partial utterance (1.6 s)
SILENCE_POWER = 1e-10  # the audio kind's silence, -100 dB
FRAMES_PER_SECOND = 100  # 16 kHz, hop 160
PREPROCESSING: dict[str, Any] = {"sample_rate": 16000, "n_mels": N_MELS, "n_fft": 400, "hop_length": 160,
                                 "win_length": None, "window": "hann"}
EXTRA_HINT = (f"{NAME} needs Resemblyzer's weights: pip install 'mmcli[speaker]' (the resemblyzer package ships them), "
              "or give the file as weights: PATH (resemblyzer/pretrained.pt)")


def packaged_weights() -> Path | None:
    """The resemblyzer package's pretrained.pt, found without importing the package (its
    __init__ imports webrtcvad, which this encoder does not need); None: not installed."""
    try:
        spec = importlib.util.find_spec("resemblyzer")
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(folder) / "pretrained.pt"
        if path.is_file():
            return path
    return None


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The LSTM's and linear layer's tensors of a Resemblyzer checkpoint ({"model_state": ...},
    or a bare state dict), read with weights_only (tensors only, never code)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"{NAME}: weights file not found: {path}")
    try:
        state: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a foreign file
        raise ConfigError(f"{path}: not a weights file that torch can read ({exc})") from None
    if isinstance(state, dict) and isinstance(state.get("model_state"), dict):
        state = state["model_state"]
    if not isinstance(state, dict):
        raise ConfigError(f"{path}: holds no state dict of tensors")
    return {k: v for k, v in state.items() if k.startswith(("lstm.", "linear.")) and isinstance(v, torch.Tensor)}


def window_starts(frames: int, step: int, min_coverage: float) -> list[int]:
    """First frames of an utterance's partial windows, as Resemblyzer places them: every
    `step` frames while a window still starts within the utterance (at least one), the last
    dropped when its part of the clip covers less than `min_coverage` of a window. `frames`
    is the centred STFT's count, 1 + samples // hop: samples are taken at mid-hop."""
    starts = list(range(0, max(1, frames - WINDOW + step + 1), step))
    samples = (frames - 1) * 160 + 80
    if len(starts) > 1 and (samples - starts[-1] * 160) / (WINDOW * 160) < min_coverage:
        starts.pop()
    return starts


def to_power(x: torch.Tensor) -> torch.Tensor:
    """The audio kind's normalised log-mel ((dB + 40) / 40, see `normalize_audio`) back to mel power."""
    return torch.pow(10.0, (x.float() * 40.0 - 40.0) / 10.0)


class Resemblyzer(Encoder):
    """Resemblyzer's voice encoder: tokens are its partial windows' embeddings, pooled
    their L2-normalised mean (the utterance embedding), both through `proj`."""

    def __init__(self, spec: ModalitySpec, out_dim: int, weights: str | None = None, pretrained: bool = True,
                 finetune: bool = False, rate: float = 1.3, min_coverage: float = 0.75, **_: object):
        super().__init__()
        if spec.n_mels != N_MELS:
            raise ConfigError(f"{NAME} reads {N_MELS} mel bands at 16 kHz, not data.n_mels={spec.n_mels}: leave data.n_mels, "
                              "sample_rate, n_fft and hop_length unset (they follow the encoder) or set them to 40, 16000, 400, 160")
        if not isinstance(rate, (int, float)) or not 0 < rate or not 1 <= round(FRAMES_PER_SECOND / rate) <= WINDOW:
            raise ConfigError(f"{NAME}: rate must be 0.625 to 200 windows a second, not {rate!r}")
        if not isinstance(min_coverage, (int, float)) or not 0 < min_coverage <= 1:
            raise ConfigError(f"{NAME}: min_coverage must be in (0, 1], not {min_coverage!r}")
        self.lstm = nn.LSTM(N_MELS, HIDDEN, LAYERS, batch_first=True)
        self.linear = nn.Linear(HIDDEN, HIDDEN)
        uses_weights = bool(pretrained or weights)
        if load_pretrained() and uses_weights:
            self._load(weights)
        self.trained_parts = ("lstm.", "linear.") if uses_weights else ()
        self.finetune = bool(finetune)
        self.step, self.min_coverage = int(round(FRAMES_PER_SECOND / rate)), float(min_coverage)
        self.proj = nn.Linear(HIDDEN, out_dim)
        self.out_dim = out_dim
        self.set_trainable(True)  # frozen with pretrained weights (unless finetune), as models.build leaves it by default

    def _load(self, weights: str | None) -> None:
        path = weights or packaged_weights()
        if path is None:
            raise ConfigError(EXTRA_HINT)
        state = read_weights(path)
        mine = {k for k in self.state_dict() if not k.startswith("proj.")}
        if set(state) != mine:
            raise ConfigError(f"{path}: not Resemblyzer's voice encoder: {len(mine - set(state))} of its tensors missing, "
                              f"{len(set(state) - mine)} unexpected")
        try:
            self.load_state_dict(state, strict=False)
        except RuntimeError as exc:
            raise ConfigError(f"{path}: these weights do not fit {NAME}: {str(exc).splitlines()[-1].strip()}") from None

    def set_trainable(self, trainable: bool | int) -> None:
        super().set_trainable(trainable if self.finetune or not self.trained_parts else False)

    def blocks(self) -> list[nn.Module]:
        return [self.lstm, self.linear]

    def features(self, x: torch.Tensor, lengths: torch.Tensor | None = None):
        """Each example's partial-window embeddings [B, W, 256] and their mask [B, W]."""
        b, _, frames = x.shape
        counts = [frames] * b if lengths is None else lengths.clamp(1, frames).tolist()
        starts = [window_starts(int(n), self.step, self.min_coverage) for n in counts]
        owner = torch.tensor([i for i, s in enumerate(starts) for _ in s], device=x.device)
        first = torch.tensor([f for s in starts for f in s], device=x.device)
        power = to_power(x).transpose(1, 2)  # [B, T, 40]
        span = int(first.max()) + WINDOW
        if span > frames:  # windows past the stored frames read silence, as Resemblyzer's zero padding
            power = nn.functional.pad(power, (0, 0, 0, span - frames), value=SILENCE_POWER)
        index = first.unsqueeze(1) + torch.arange(WINDOW, device=x.device)
        partial = self.embed_windows(power[owner.unsqueeze(1), index])  # [W, 256]
        width = max(len(s) for s in starts)
        slot = torch.tensor([j for s in starts for j in range(len(s))], device=x.device)
        raw = partial.new_zeros(b, width, HIDDEN)
        raw[owner, slot] = partial
        mask = torch.arange(width, device=x.device).unsqueeze(0) < torch.tensor([len(s) for s in starts], device=x.device).unsqueeze(1)
        return raw, mask

    def embed_windows(self, mels: torch.Tensor) -> torch.Tensor:
        """Windows of mel power [W, 160, 40] -> their L2-normalised embeddings [W, 256]."""
        _, (hidden, _) = self.lstm(mels)
        return nn.functional.normalize(torch.relu(self.linear(hidden[-1])), dim=-1)

    @staticmethod
    def utterance(raw: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The utterance embeddings [B, 256]: the L2-normalised mean of the real windows'."""
        weights = mask.unsqueeze(-1).to(raw.dtype)
        return nn.functional.normalize((raw * weights).sum(1) / weights.sum(1).clamp(min=1.0), dim=-1)

    def embed(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """The 256-d speaker embeddings of a batch, before `proj` (Resemblyzer's embed_utterance)."""
        return self.utterance(*self.features(x, lengths))

    def from_features(self, raw, mask) -> EncoderOutput:
        raw = raw.to(self.proj.weight.dtype)
        return EncoderOutput(self.proj(self.utterance(raw, mask)), self.proj(raw), mask)


def speaker_preprocessing(config: Any, name: str) -> tuple[str, dict[str, Any]] | None:
    """The data settings that the audio modality `name` must be stored with when its encoder
    is this one (the audio kind's `wanted_preprocessing`; `models.adapt_data` sets those the
    config leaves at their defaults). One the config sets to another value is an error here,
    before any audio is decoded."""
    from mmcli.config import DataConfig
    from mmcli.models import encoder_choice

    try:
        choice, _ = encoder_choice(config, ModalitySpec(name=name, kind="audio"))
    except ConfigError:  # another kind's encoder: `name` is not an audio modality (build reports a real mismatch)
        return None
    if choice != NAME:
        return None
    defaults = DataConfig()
    clash = [f"data.{k}={getattr(config.data, k)} (wants {v})" for k, v in PREPROCESSING.items()
             if getattr(config.data, k) not in (v, getattr(defaults, k))]
    if clash:
        raise ConfigError(f"{NAME} reads what its weights were trained on, not {', '.join(clash)}: leave these unset")
    return "resemblyzer", dict(PREPROCESSING)


ENCODERS.register(NAME, "Resemblyzer's pretrained GE2E speaker encoder (LSTM over 40 mel bands, 256-d; needs mmcli[speaker])",
                  tags=("audio", "weights:resemblyzer"))(Resemblyzer)
