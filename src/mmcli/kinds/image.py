"""The image kind: a file per cell (Pillow decodes), stored as uint8 [3, S, S] at
data.image_size, normalised on the device with data.image_mean and image_std."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmcli import kinds

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from mmcli.config import Config, DataConfig
    from mmcli.data.table import Table

EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff",
                        ".pgm", ".ppm", ".pbm", ".pnm"})  # Netpbm: ORL faces and other research sets


@kinds.register
class Image(kinds.ModalityKind):
    name = "image"
    about = "an image file per cell (PNG, JPEG, GIF, WebP, TIFF, BMP, Netpbm)"
    extensions = EXTENSIONS
    detect_rank = 10
    from_files = True
    plural = "images"
    default_encoder = "cnn"
    corruptions = ("gaussian_noise", "blur", "occlusion", "grayscale", "jpeg")
    corrupts_stored = True
    caption_source = True
    predict_option = ("--image", "One example: path of its image.")
    query_help = "Retrieval runs: find the items of --index nearest to this image (repeatable)."


    def export_recipe(self, run: Any, name: str, folder: Path) -> dict[str, Any] | None:
        from mmcli.export.recipes import image_recipe

        return image_recipe(run, name, folder)
    def arrays(self) -> dict[str, tuple[str, int]]:
        return {"": ("uint8", 3)}

    def decode(self, path: Path, config: DataConfig, window=None) -> tuple[torch.Tensor, int]:
        from mmcli.data.decode import decode_image

        return decode_image(path, config), 0

    def blank(self, config: DataConfig) -> tuple[torch.Tensor, int]:
        import torch

        return torch.zeros(3, config.image_size, config.image_size, dtype=torch.uint8), 0

    def warm_up(self, config: DataConfig) -> None:
        import torch

        from mmcli.data.decode import resize_square

        resize_square(torch.zeros(3, 8, 8, dtype=torch.uint8), 4)

    def batch_input(self, config: DataConfig) -> tuple[str, int] | None:
        return f"images of data.image_size={config.image_size}", 3 * config.image_size**2

    def cache_shape(self, config: DataConfig) -> tuple[list[int], str] | None:
        return [3, config.image_size, config.image_size], f"data.image_size={config.image_size} gives"

    def array_problem(self, shape: list[int]) -> str | None:
        return "an image array must hold 3 colour channels" if shape[1] != 3 else None

    def normalize(self, x: torch.Tensor, config: DataConfig) -> torch.Tensor:
        from mmcli.data.decode import normalize_image

        return normalize_image(x, config)

    def feature_key(self, config: Config) -> str:
        return repr((config.data.image_mean, config.data.image_std))

    def input_augment(self, config: Config) -> Any:
        if not config.train.augment:
            return None
        from mmcli.encoders.augment import ImageAugment

        return ImageAugment(config.train.crop_scale, config.train.hflip)

    def wanted_preprocessing(self, config: Config, name: str) -> tuple[str, dict[str, Any]] | None:
        return backbone_preprocessing(config, name, self.name)

    def show(self, table: Table, name: str, row: int) -> Any:
        return table.tensors[name][row].permute(1, 2, 0).numpy()  # uint8 [3, H, W] -> H x W x 3

    def corrupt(self, table: Table, name: str, what: str, level: float, seed: int) -> None:
        from mmcli.evaluation.corrupt import corrupt_images

        table.tensors[name] = corrupt_images(table.tensors[name], what, level, seed)


def backbone_preprocessing(config: Config, name: str, kind: str) -> tuple[str, dict[str, Any]] | None:
    """The image size and normalisation that the pretrained torchvision backbone chosen for
    a modality of `kind` reads (the image kind's, and the video kind's per-frame ones)."""
    from mmcli.encoders import ModalitySpec
    from mmcli.encoders.backbones import ARCHS, image_preprocessing
    from mmcli.models import encoder_choice

    choice, options = encoder_choice(config, ModalitySpec(name=name, kind=kind))
    arch, from_file = choice.split(".", 1)[1], bool(options.get("weights"))
    if choice.startswith(f"{kind}.") and arch in ARCHS and (options.get("pretrained") or from_file):
        return arch, image_preprocessing(arch, from_file)
    return None
