"""The video kind: a clip per cell (PyAV decodes; its wheels carry FFmpeg), stored as
data.video_frames frames of data.image_size square, uint8 [T, 3, S, S], with the number of
real frames beside (a shorter clip is padded with black frames, which the encoders mask).
Frames are sampled once, when the cache is made: evenly spaced (`uniform`), or one random
frame in each of T equal segments (`segment`, as TSN samples; the same frames for the same
file). A clip's sound is an audio modality of its own: a video column whose files have a
sound track also gives `<column>_audio`, read from the same files by the audio kind.

Detected by extension (.mp4, .avi, .mkv, .webm, .mov, .mpg, .mpeg, .m4v); an animated GIF
is an image unless declared `kind: video`."""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmcli import kinds

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from mmcli.config import DataConfig, ModalityConfig
    from mmcli.data.table import Table

EXTENSIONS = frozenset({".mp4", ".avi", ".mkv", ".webm", ".mov", ".mpg", ".mpeg", ".m4v"})
PROBED = 5  # files of a video column probed for a sound track when the modalities are detected


@kinds.register
class Video(kinds.ModalityKind):
    name = "video"
    about = "a video file per cell (MP4, AVI, MKV, WebM, MOV, MPEG; GIF when declared)"
    extensions = EXTENSIONS
    detect_rank = 15
    from_files = True
    windowed = True
    plural = "videos"
    preprocess_keys = ("video_frames", "video_sampling", "video_fps")
    default_encoder = "cnn"
    corruptions = ("dropped_frames", "frozen_frames", "noise", "temporal_shuffle")
    corrupts_stored = True
    caption_source = True
    predict_option = ("--video", "One example: path of its video.")
    query_help = "Retrieval runs: find the items of --index nearest to this video (repeatable)."

    export_refusal = ("its frames are decoded, sampled and timed by FFmpeg (PyAV) in ways preprocessing.json cannot "
                      "state exactly enough to reproduce without mmcli")
    def arrays(self) -> dict[str, tuple[str, int]]:
        return {"": ("uint8", 4), ".lengths": ("int64", 0)}

    def decode(self, path: Path, config: DataConfig, window=None) -> tuple[torch.Tensor, int]:
        from mmcli.data.video import decode_video

        start, end = window or (None, None)
        seed = zlib.crc32(f"{path}{f'#t={start},{end}' if window else ''}".encode()) if config.video_sampling == "segment" else None
        return decode_video(path, frames=config.video_frames, size=config.image_size, sampling=config.video_sampling,
                            start=start, end=end, seed=seed, fps=config.video_fps)

    def blank(self, config: DataConfig) -> tuple[torch.Tensor, int]:
        import torch

        return torch.zeros(config.video_frames, 3, config.image_size, config.image_size, dtype=torch.uint8), 1

    def warm_up(self, config: DataConfig) -> None:
        import av  # noqa: F401

    def batch_input(self, config: DataConfig) -> tuple[str, int] | None:
        return (f"clips of data.video_frames={config.video_frames} frames of data.image_size={config.image_size}",
                config.video_frames * 3 * config.image_size**2)

    def pictures(self, config: DataConfig) -> int:
        return config.video_frames

    def cache_shape(self, config: DataConfig) -> tuple[list[int], str] | None:
        return ([config.video_frames, 3, config.image_size, config.image_size],
                f"data.video_frames={config.video_frames} and image_size={config.image_size} give")

    def array_problem(self, shape: list[int]) -> str | None:
        return "a video array must hold 3 colour channels" if shape[2] != 3 else None

    def companions(self, name: str, m: ModalityConfig, paths: list[Path]) -> dict[str, ModalityConfig]:
        """`<name>_audio`, the clips' sound, when one of the first files probed has a sound track."""
        from mmcli.config import ModalityConfig
        from mmcli.data.decode import DecodeError
        from mmcli.data.video import probe

        for path in paths[:PROBED]:
            try:
                if probe(path).has_audio:
                    return {f"{name}_audio": ModalityConfig(column=m.column, kind="audio")}
            except (DecodeError, OSError):
                continue
        return {}

    def normalize(self, x: torch.Tensor, config: DataConfig) -> torch.Tensor:
        from mmcli.data.decode import normalize_image

        return normalize_image(x.flatten(0, 1), config).view(x.shape)  # each frame as an image

    def feature_key(self, config) -> str:
        return kinds.get("image").feature_key(config)  # frames are normalised as images

    def wanted_preprocessing(self, config, name: str):
        """A pretrained frame backbone, or a pretrained 3D network, reads the frame size and
        normalisation its weights want."""
        from mmcli.encoders import ModalitySpec
        from mmcli.encoders.video_backbones import VIDEO_ARCHS, video_preprocessing
        from mmcli.kinds.image import backbone_preprocessing
        from mmcli.models import encoder_choice

        choice, options = encoder_choice(config, ModalitySpec(name=name, kind=self.name))
        arch = choice.split(".", 1)[1]
        if choice.startswith(f"{self.name}.") and arch in VIDEO_ARCHS and (options.get("pretrained") or options.get("weights")):
            return arch, video_preprocessing(arch)
        return backbone_preprocessing(config, name, self.name)

    def show(self, table: Table, name: str, row: int) -> Any:
        """The clip's middle real frame."""
        frames = int(table.tensors[f"{name}.lengths"][row]) if f"{name}.lengths" in table.tensors else 1
        return table.tensors[name][row, max(0, frames - 1) // 2].permute(1, 2, 0).numpy()

    def corrupt(self, table: Table, name: str, what: str, level: float, seed: int) -> None:
        from mmcli.evaluation.corrupt_video import corrupt_video

        table.tensors[name] = corrupt_video(table.tensors[name], table.tensors[f"{name}.lengths"], what, level, seed)
