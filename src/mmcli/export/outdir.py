"""The folder an export is written to: new or empty, or an earlier export's with --overwrite.

Files are written into a staging folder beside it and moved in once every one of them is
written, export.json last: a folder with an export.json holds a whole export, and a failed
export leaves the folder as it was. `--overwrite` replaces only the files that export.json
lists (what an earlier export wrote), never a file of the user's.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from mmcli.errors import UsageError

RECORD = "export.json"


def check(out: Path, overwrite: bool) -> list[Path]:
    """The files of an earlier export that the new one replaces (none for a new or empty
    folder); a UsageError naming what is in the way otherwise."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: is a file, not a folder")
    entries = sorted(out.iterdir()) if out.is_dir() else []
    if not entries:
        return []
    if not overwrite:
        raise UsageError(f"--out {out}: the folder holds files already ({_names(entries)}); give a new or empty folder, "
                         "or --overwrite to replace an earlier export there")
    wrote = _written(out)
    if wrote is None:
        raise UsageError(f"--out {out}: --overwrite replaces an earlier export, and this folder has no {RECORD} of one "
                         f"({_names(entries)}); give a new or empty folder")
    foreign = [e for e in entries if e.name not in wrote or not e.is_file() or e.is_symlink()]
    if foreign:
        raise UsageError(f"--out {out}: --overwrite replaces only what mmcli export wrote, and the folder also holds "
                         f"{_names(foreign)}; move that away or give another folder")
    return entries


def _written(out: Path) -> set[str] | None:
    """The files an earlier export wrote there, from its export.json (None: not an export's)."""
    try:
        files = json.loads((out / RECORD).read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        return None
    return set(files) | {RECORD}


def _names(paths: list[Path]) -> str:
    shown = ", ".join(p.name for p in paths[:5])
    return shown + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")


@contextlib.contextmanager
def staging(out: Path) -> Iterator[Path]:
    """A temporary folder beside `out` (on its file system), removed afterwards."""
    parent = out.absolute().parent
    parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{out.name}.export-", dir=parent))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def place(folder: Path, out: Path, old: list[Path]) -> None:
    """Move the staged files into `out`, replacing an earlier export's; export.json last."""
    out.mkdir(parents=True, exist_ok=True)
    for path in old:
        path.unlink()
    staged = sorted(folder.iterdir(), key=lambda p: p.name == RECORD)
    for path in staged:
        os.replace(path, out / path.name)
