"""Where mmcli keeps its caches, and the key that names a preprocessed data set.

The key hashes the manifest's bytes, each referenced file's path, size and modification
time, and the preprocessing settings, so any change to the data or the settings makes a
new entry while train, evaluate and compare share the same one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from mmcli.config import DataConfig, ModalityConfig

PREPROCESS_KEYS = ("image_size", "sample_rate", "n_mels", "n_fft", "hop_length", "win_length", "window", "max_seconds",
                   "label", "id_column", "split_column", "on_error")
KEY_VERSION = "3"  # 3: one memory-mapped file per tensor


def cache_root(override: str | Path | None = None) -> Path:
    """`--cache-dir`, else $MMCLI_CACHE_DIR, else the user's cache folder."""
    if override:
        return Path(override)
    if os.environ.get("MMCLI_CACHE_DIR"):
        return Path(os.environ["MMCLI_CACHE_DIR"])
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("mmcli"))


def tensor_dir(root: Path) -> Path:
    return root / "tensors"


def data_key(manifest_path: Path, files: list[Path], modalities: dict[str, ModalityConfig],
             config: DataConfig, require_label: bool) -> str:
    digest = hashlib.sha256()
    digest.update(KEY_VERSION.encode())
    digest.update(manifest_path.read_bytes())
    for path in sorted(set(files)):
        try:
            stat = path.stat()
            digest.update(f"{_rel(path, manifest_path)}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{_rel(path, manifest_path)}|missing\n".encode())
    settings = {k: getattr(config, k) for k in PREPROCESS_KEYS}
    settings["modalities"] = {k: [m.column, m.kind] + ([m.columns, m.categorical] if m.kind == "tabular" else [])
                              for k, m in sorted(modalities.items())}
    settings["require_label"] = require_label
    digest.update(json.dumps(settings, sort_keys=True).encode())
    return digest.hexdigest()[:20]


def _rel(path: Path, manifest_path: Path) -> str:
    # relative to the manifest, so the same data reached by another path shares the entry
    return os.path.relpath(path, manifest_path.parent)


@dataclass
class CacheEntry:
    path: Path
    source: str
    examples: int
    size_bytes: int


def list_entries(root: Path) -> list[CacheEntry]:
    entries = []
    folder = tensor_dir(root)
    if not folder.is_dir():
        return entries
    for sub in sorted(folder.iterdir()):
        meta_path = sub / "table.json"
        if sub.name.startswith(".") or not meta_path.is_file():
            continue
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            meta = {}
        size = sum(f.stat().st_size for f in sub.rglob("*") if f.is_file())
        entries.append(CacheEntry(sub, meta.get("source", "?"), len(meta.get("ids", [])), size))
    return entries


def features_dir(root: Path) -> Path:
    """Frozen encoders' features (mmcli.training.features)."""
    return root / "features"


def feature_entries(root: Path) -> tuple[int, int]:
    """(entries, bytes) of stored features."""
    folder = features_dir(root)
    files = [f for f in folder.glob("*.safetensors") if f.is_file()] if folder.is_dir() else []
    return len(files), sum(f.stat().st_size for f in files)


def clean(root: Path) -> tuple[int, int]:
    """Remove every preprocessed entry and stored features; return (entries, bytes)
    freed. Data sets stay."""
    entries = list_entries(root)
    features, feature_bytes = feature_entries(root)
    freed = sum(e.size_bytes for e in entries) + feature_bytes
    for folder in (tensor_dir(root), features_dir(root)):
        if folder.is_dir():
            shutil.rmtree(folder)
    return len(entries) + features, freed
