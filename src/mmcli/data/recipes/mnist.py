"""MNIST (LeCun, Cortes and Burges): 28x28 handwritten digits in the IDX format.

The files are fetched from torchvision's mirror and checked against the MD5 digests that
torchvision publishes; a local copy (`--source`) is checked by its IDX headers instead,
since a recompressed `.gz` has other bytes but the same digits.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from mmcli.data.recipes import write_manifest, write_provenance
from mmcli.data.recipes.download import Remote, fetch, file_digest
from mmcli.errors import UsageError

MIRROR = "https://ossci-datasets.s3.amazonaws.com/mnist/"
REMOTES = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
SETS = {"train": "train", "test": "t10k"}  # split name -> file prefix


def download(folder: Path, mirror: Optional[str] = None, progress=None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, md5 in REMOTES.items():
        fetch(Remote(MIRROR + name, md5), folder, mirror, progress)
    return folder


def find(source: Path) -> Path:
    for folder in (source / "mnist", source):
        if _has_any(folder):
            return folder
    raise _missing(source)


def _has_any(folder: Path) -> bool:
    return folder.is_dir() and any(_idx_file(folder, f"{p}-images-idx3-ubyte") for p in SETS.values())


def _missing(source: Path) -> UsageError:
    return UsageError(f"{source}: no MNIST files found (t10k-images-idx3-ubyte[.gz] in {source} or {source / 'mnist'})")


def _idx_file(folder: Path, stem: str) -> Optional[Path]:
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def read_idx(path: Path, magic: int) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError) as exc:
        raise UsageError(f"{path}: cannot read ({exc})") from None
    if len(data) < 8 or struct.unpack(">I", data[:4])[0] != magic:
        raise UsageError(f"{path}: not an IDX file of the expected kind (magic number {magic} missing)")
    dims = data[3]
    shape = struct.unpack(f">{dims}I", data[4:4 + 4 * dims])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims)
    if body.size != int(np.prod(shape)):
        raise UsageError(f"{path}: holds {body.size:,} bytes of data, its header says {int(np.prod(shape)):,} (truncated?)")
    return body.reshape(shape)


def load(folder: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """split -> (images uint8 [N, 28, 28], labels uint8 [N]) for every set present."""
    sets = {}
    for split, prefix in SETS.items():
        images_path = _idx_file(folder, f"{prefix}-images-idx3-ubyte")
        labels_path = _idx_file(folder, f"{prefix}-labels-idx1-ubyte")
        if images_path is None:
            continue
        if labels_path is None:
            raise UsageError(f"{folder}: {images_path.name} has no {prefix}-labels-idx1-ubyte[.gz] beside it")
        images, labels = read_idx(images_path, 2051), read_idx(labels_path, 2049)
        if len(images) != len(labels) or labels.max(initial=0) > 9:
            raise UsageError(f"{labels_path}: {len(labels):,} labels for {len(images):,} images, or a label above 9")
        sets[split] = (images, labels)
    if not sets:
        raise _missing(folder)
    return sets


def digests(folder: Path) -> dict[str, str]:
    return {p.name: file_digest(p) for p in sorted(folder.iterdir()) if "idx" in p.name}


def build(out: Path, folder: Path, source_text: str, progress: Optional[Callable[[int, int], None]] = None) -> int:
    from PIL import Image

    sets = load(folder)
    rows = []
    total = sum(len(labels) for _, labels in sets.values())
    for split, (images, labels) in sets.items():
        (out / "images" / split).mkdir(parents=True)
        for i, (pixels, label) in enumerate(zip(images, labels)):
            rel = f"images/{split}/{i:05d}.png"
            Image.fromarray(pixels, mode="L").save(out / rel)
            rows.append({"id": f"{split}-{i:05d}", "image": rel, "label": str(int(label)), "split": split})
            if progress is not None and len(rows) % 500 == 0:
                progress(len(rows), total)
    # the test set alone: no split column, so mmcli draws a stratified split from the seed
    columns = ["id", "image", "label"] + (["split"] if len(sets) > 1 else [])
    write_manifest(out, columns, rows)
    write_provenance(out, "mnist", {}, {"source": source_text, "sets": {s: len(v[1]) for s, v in sets.items()},
                                        "sha256": digests(folder)})
    return len(rows)
