"""The audio kind: a sound file per cell (soundfile decodes, librosa resamples), stored
as a float16 log-mel spectrogram [n_mels, frames] padded to data.max_seconds, with its
true number of frames beside; cut to the longest clip of each batch."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmcli import kinds

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from mmcli.config import Config, DataConfig
    from mmcli.data.table import Table

EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif"})


@kinds.register
class Audio(kinds.ModalityKind):
    name = "audio"
    about = "a sound file per cell (WAV, FLAC, Ogg, MP3, AIFF)"
    extensions = EXTENSIONS
    detect_rank = 20
    from_files = True
    windowed = True
    plural = "recordings"
    default_encoder = "cnn"
    corruptions = ("white_noise", "time_mask", "clipping")
    corrupts_stored = True
    padded_to_batch = True
    seconds_limit = True
    caption_source = True
    predict_option = ("--audio", "One example: path of its audio file.")
    query_help = "Retrieval runs: find the items of --index nearest to this audio file (repeatable)."


    def export_recipe(self, run: Any, name: str, folder: Path) -> dict[str, Any] | None:
        from mmcli.export.recipes import audio_recipe

        return audio_recipe(run, name, folder)
    def arrays(self) -> dict[str, tuple[str, int]]:
        return {"": ("float16", 2), ".lengths": ("int64", 0)}

    def decode(self, path: Path, config: DataConfig, window=None) -> tuple[torch.Tensor, int]:
        """Sound files through libsndfile; any other container (a video's sound track, M4A)
        through FFmpeg (PyAV); `window`: (start, end) seconds of the file, either None."""
        from mmcli.data.decode import decode_audio, decode_sound_track

        read = decode_audio if path.suffix.lower() in self.extensions else decode_sound_track
        return read(path, config, window) if window else read(path, config)

    def blank(self, config: DataConfig) -> tuple[torch.Tensor, int]:
        import torch

        from mmcli.data.decode import SILENCE_DB, audio_frames

        return torch.full((config.n_mels, audio_frames(config)), SILENCE_DB, dtype=torch.float16), 1

    def warm_up(self, config: DataConfig) -> None:
        import numpy as np
        import soundfile  # noqa: F401

        from mmcli.data.decode import log_mel

        silence = np.zeros(max(config.n_fft, config.sample_rate // 10), dtype=np.float32)
        log_mel(silence, config.sample_rate * 2, config)  # with a resampling, as for files at another rate

    def batch_input(self, config: DataConfig) -> tuple[str, int] | None:
        if config.max_seconds is None:  # a derived limit is checked once derived (prepare_training)
            return None
        frames = int(config.max_seconds * config.sample_rate) // config.hop_length + 1  # as decode.audio_frames
        return (f"spectrograms of data.n_mels={config.n_mels} x {frames} frames (data.max_seconds, sample_rate, "
                "hop_length)", config.n_mels * frames)

    def cache_shape(self, config: DataConfig) -> tuple[list[int], str] | None:
        from mmcli.data.decode import audio_frames

        return [config.n_mels, audio_frames(config)], "data.n_mels, max_seconds, sample_rate and hop_length give"

    def normalize(self, x: torch.Tensor, config: DataConfig) -> torch.Tensor:
        from mmcli.data.decode import normalize_audio

        return normalize_audio(x)

    def wanted_preprocessing(self, config: Config, name: str) -> tuple[str, dict[str, Any]] | None:
        """A pretrained speaker encoder (audio.resemblyzer) reads the sample rate and mel
        analysis its weights were trained on."""
        from mmcli.encoders.speaker import speaker_preprocessing

        return speaker_preprocessing(config, name)

    def duration(self, path: Path) -> float | None:
        import soundfile

        if path.suffix.lower() not in self.extensions:  # a container FFmpeg reads
            from mmcli.data.video import probe

            try:
                return probe(path).duration or None
            except Exception:  # noqa: BLE001 (the decoder reports this file as a bad row)
                return None
        try:
            with soundfile.SoundFile(str(path)) as handle:
                return handle.frames / handle.samplerate if handle.samplerate > 0 else None
        except Exception:  # libsndfile's errors are many; the decoder reports this file as a bad row
            return None

    def derived_limit(self, config: DataConfig) -> bool:
        return config.max_seconds is None

    def cut(self, config: Config, table: Table, name: str, rows: list[int], fitted: object) -> tuple[int, str] | None:
        from mmcli.data.decode import audio_frames

        if f"{name}.lengths" not in table.tensors:
            return None
        cut = int((table.tensors[f"{name}.lengths"][rows] >= audio_frames(config.data)).sum())
        return cut, f"data.max_seconds={config.data.max_seconds:g} s"

    def show(self, table: Table, name: str, row: int) -> Any:
        """The log-mel spectrogram's real frames, low bands at the bottom."""
        frames = int(table.tensors[f"{name}.lengths"][row]) if f"{name}.lengths" in table.tensors else None
        return table.tensors[name][row][:, :frames].float().flip(0).numpy()

    def corrupt(self, table: Table, name: str, what: str, level: float, seed: int) -> None:
        from mmcli.evaluation.corrupt import corrupt_audio

        table.tensors[name] = corrupt_audio(table.tensors[name], table.tensors[f"{name}.lengths"], what, level, seed)
