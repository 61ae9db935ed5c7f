"""Importers for folder layouts people already have: one subfolder per class, as
torchvision's `ImageFolder` reads them (`DIR/cat/1.jpg`), optionally under split folders
(`DIR/train/cat/1.jpg`, `DIR/val/...`, `DIR/test/...`). The files stay where they are;
only a manifest is written, and never over an existing file.
"""

from __future__ import annotations

from pathlib import Path

from mmcli import kinds as registry
from mmcli.data.recipes import relative_prefix, write_manifest
from mmcli.data.splits import SPLITS
from mmcli.errors import UsageError

# `datasets import KINDfolder` for each kind read from files: (the manifest's column, the files' suffixes)
KINDS = {f"{k}folder": (k, set(registry.get(k).extensions)) for k in registry.with_trait("from_files")}


def _class_folders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def scan(folder: Path, extensions: set[str]) -> list[tuple[Path, str, str]]:
    """(file, label, split or '') for every file with one of `extensions`, sorted."""
    if not folder.is_dir():
        raise UsageError(f"{folder}: no such folder")
    top = _class_folders(folder)
    split_layout = bool(top) and all(p.name in SPLITS for p in top)
    groups = [(c, c.name, s.name) for s in top for c in _class_folders(s)] if split_layout else [(c, c.name, "") for c in top]
    found = [(f, label, split) for c, label, split in groups for f in sorted(c.rglob("*"))
             if f.is_file() and f.suffix.lower() in extensions and not f.name.startswith(".")]
    if not found:
        kinds = ", ".join(sorted(extensions))
        raise UsageError(f"{folder}: no files ({kinds}) in class subfolders (expected {folder}/CLASS/FILE "
                         f"or {folder}/train/CLASS/FILE)")
    return found


def _check_names(folder: Path, found: list[tuple[Path, str, str]]) -> None:
    """Names a UTF-8 manifest cannot hold (bytes that are not UTF-8, kept by Python as
    surrogates) and class folders whose name is only spaces are refused, naming them."""
    bad = sorted({repr(str(p.relative_to(folder))) for p, _, _ in found if not _utf8(str(p.relative_to(folder)))})
    if bad:
        raise UsageError(f"{folder}: file or folder names that are not UTF-8 cannot be written to a manifest; "
                         f"rename them: {', '.join(bad[:5])}" + (f" and {len(bad) - 5} more" if len(bad) > 5 else ""))
    blank = sorted({repr(label) for _, label, _ in found if not label.strip()})
    if blank:
        raise UsageError(f"{folder}: class folders named only with spaces ({', '.join(blank)}) give no label; rename them")


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def import_folder(kind: str, folder: Path, manifest: Path) -> tuple[Path, int, int]:
    """Write `manifest` for a class-per-folder tree; returns (manifest, files, classes)."""
    column, extensions = KINDS[kind]
    prefix = relative_prefix(folder, manifest)
    found = scan(folder, extensions)
    _check_names(folder, found)
    rows, seen = [], set()
    for path, label, split in found:
        rel = path.relative_to(folder).as_posix()
        ex_id = rel.rsplit(".", 1)[0]
        if ex_id in seen:  # a.png and a.jpg in one folder
            ex_id = rel
        seen.add(ex_id)
        # mmcli reads a cell without its outer spaces: a path that starts with one (class
        # folder " cat") keeps it behind "./", and the label is written as it will be read
        cell = prefix + rel
        rows.append({"id": ex_id, column: f"./{cell}" if cell[:1].isspace() else cell, "label": label.strip(),
                     "split": split})
    columns = ["id", column, "label"] + (["split"] if found[0][2] else [])
    write_manifest(manifest.parent, columns, rows, name=manifest.name)
    return manifest, len(rows), len({r["label"] for r in rows})
