"""Where mmcli keeps its caches, and the key that names a preprocessed data set.

The key hashes the manifest's bytes, each referenced file's path, size and modification
time, and the preprocessing settings, so any change to the data or the settings makes a
new entry while train, evaluate and compare share the same one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from mmcli.kinds import KINDS
from mmcli.config import DataConfig, ModalityConfig

PREPROCESS_KEYS = ("image_size", "sample_rate", "n_mels", "n_fft", "hop_length", "win_length", "window", "max_seconds",
                   "label", "id_column", "split_column", "group_column", "on_error", "missing")
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
        except (OSError, ValueError):  # ValueError: a NUL character in the path; the row check reports it
            digest.update(f"{_rel(path, manifest_path)}|missing\n".encode())
    settings = {k: getattr(config, k) for k in PREPROCESS_KEYS}
    settings["modalities"] = {k: [m.column, m.kind] + ([m.columns, m.categorical] if KINDS[m.kind].many_columns else [])
                              + ([m.start, m.end] if m.start or m.end else []) for k, m in sorted(modalities.items())}
    settings.update({k: getattr(config, k) for m in modalities.values() for k in KINDS[m.kind].preprocess_keys})
    settings["require_label"] = require_label
    digest.update(json.dumps(settings, sort_keys=True).encode())
    return digest.hexdigest()[:20]


def _rel(path: Path, manifest_path: Path) -> str:
    # relative to the manifest, so the same data reached by another path shares the entry;
    # a file on another drive (Windows) has no relative path: its absolute one then
    try:
        return os.path.relpath(path, manifest_path.parent)
    except ValueError:
        return str(Path(path).absolute())


@dataclass
class CacheEntry:
    path: Path
    source: str
    examples: int
    size_bytes: int


def list_entries(root: Path) -> list[CacheEntry]:
    entries: list[CacheEntry] = []
    folder = tensor_dir(root)
    if not folder.is_dir():
        return entries
    for sub in sorted(folder.iterdir()):
        meta_path = sub / "table.json"
        if sub.name.startswith(".") or not meta_path.is_file():
            continue
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):
            meta = {}
        meta = meta if isinstance(meta, dict) else {}  # a damaged entry is listed, not a crash
        ids = meta.get("ids")
        ids = ids if isinstance(ids, list) else []
        size = sum(f.stat().st_size for f in sub.rglob("*") if f.is_file())
        entries.append(CacheEntry(sub, str(meta.get("source", "?")), len(ids), size))
    return entries


def features_dir(root: Path) -> Path:
    """Frozen encoders' features (mmcli.training.features)."""
    return root / "features"


def feature_entries(root: Path) -> tuple[int, int]:
    """(entries, bytes) of stored features."""
    folder = features_dir(root)
    files = [f for f in folder.glob("*.safetensors") if f.is_file()] if folder.is_dir() else []
    return len(files), sum(f.stat().st_size for f in files)


class Cleaned(NamedTuple):
    """What `clean` did: entries removed, bytes freed, and what it left and why."""

    entries: int
    freed: int
    kept: list[Path]  # not mmcli's (the user's, or unknown): never deleted
    busy: list[Path]  # entries a running mmcli is building or using


def clean(root: Path) -> Cleaned:
    """Remove every preprocessed entry and stored features that mmcli can prove it wrote
    (an entry's table.json or progress.json lists its files; a feature file is named by its
    key and holds mmcli's two tensors), file by file; data sets, and anything else in the
    folders, stay. Entries being built right now are left alone."""
    from mmcli.data.stream import building

    entries = freed = 0
    kept: list[Path] = []
    busy: list[Path] = []
    folder = tensor_dir(root)
    for sub in sorted(folder.iterdir()) if folder.is_dir() else []:
        if _entry_files(sub) is None:
            kept.append(sub)
            continue
        with building(folder / _entry_key(sub), wait=False) as free:
            names = _entry_files(sub) if free else None  # read again under the lock: a build may have ended
            if names is None:
                (busy if not free else kept).append(sub)
                continue
            was_entry = (sub / "table.json").is_file() and not sub.name.startswith(".")
            freed += _unlink(sub, names)
            left = sorted(sub.iterdir())
            kept += left
            entries += int(was_entry and not (sub / "table.json").exists())
            if not left:
                sub.rmdir()
    count, size, foreign = _clean_features(features_dir(root))
    for empty in (folder, features_dir(root)):
        with contextlib.suppress(OSError):
            empty.rmdir()  # only when nothing is left in it
    return Cleaned(entries + count, freed + size, kept + foreign, busy)


def _entry_files(sub: Path) -> set[str] | None:
    """The names of the files mmcli wrote into a cache entry (or a partial one), as its own
    table.json or progress.json lists them; None when neither proves `sub` an entry."""
    if sub.is_symlink() or not sub.is_dir():
        return None
    key = _entry_key(sub)
    if not re.fullmatch(r"[0-9a-f]{20}", key):
        return None
    meta = _json(sub / "table.json")
    if isinstance(meta, dict) and meta.get("key") == key and isinstance(meta.get("arrays"), dict):
        names = {"table.json", *(f"{n}.bin" for n in meta["arrays"])}
        return names | ({"bad_rows.csv"} if meta.get("bad_rows") else set())
    state = _json(sub / "progress.json")
    if isinstance(state, dict) and isinstance(state.get("sizes"), dict):
        return {"progress.json", "progress.json.tmp", *(f"{n}{e}" for n in state["sizes"] for e in (".bin", ".kept"))}
    return set() if sub.name.endswith(".partial") and not any(sub.iterdir()) else None


def _entry_key(sub: Path) -> str:
    """The key of an entry's folder: `KEY`, or a partial or temporary one (`.KEY.partial`, `.KEY-xyz`)."""
    return sub.name.lstrip(".").split(".")[0].split("-")[0]


def _json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, ValueError, RecursionError):
        return None


def plain_name(name: str) -> bool:
    """A file name in one folder: no separator, not `.` or `..`, nothing absolute."""
    return bool(name) and name not in (".", "..") and not any(c in name for c in "/\\\0") and Path(name).name == name


def _unlink(folder: Path, names: set[str]) -> int:
    """Delete the regular files `names` in `folder` (not links: mmcli writes none); bytes freed.
    A name is taken from a cache entry's own table.json or progress.json, which a stranger may
    have written: only plain names of files directly in `folder` are deleted, never a path
    that leads out of it (`../../x`, `/x`)."""
    freed = 0
    for name in names:
        if not plain_name(name):
            continue
        path = folder / name
        with contextlib.suppress(OSError):
            info = os.lstat(path)
            if stat.S_ISREG(info.st_mode):
                path.unlink()
                freed += info.st_size
    return freed


def _clean_features(folder: Path) -> tuple[int, int, list[Path]]:
    """(files removed, bytes, files kept) of the frozen encoders' feature store."""
    removed = freed = 0
    kept = []
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        if re.fullmatch(r"[0-9a-f]{24}\.safetensors", path.name) and _is_features(path):
            freed += _unlink(folder, {path.name})
            removed += 1
        else:
            kept.append(path)
    return removed, freed, kept


def _is_features(path: Path) -> bool:
    """A regular safetensors file holding exactly the tensors mmcli.training.features stores."""
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return False
        with open(path, "rb") as handle:
            size = int.from_bytes(handle.read(8), "little")
            head = json.loads(handle.read(size)) if 0 < size < (1 << 20) else None
    except (OSError, ValueError):
        return False
    return isinstance(head, dict) and set(head) - {"__metadata__"} == {"raw", "mask"}
