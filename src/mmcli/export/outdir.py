"""The folder an export (or a search index) is written to: new or empty, or an earlier
export's with --overwrite.

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


def check(out: Path, overwrite: bool, record: str = RECORD, what: str = "mmcli export") -> list[Path]:
    """The files of an earlier export that the new one replaces (none for a new or empty
    folder); a UsageError naming what is in the way otherwise. `record`: the file that lists
    what `what` (the command) wrote."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: is a file, not a folder")
    entries = sorted(out.iterdir()) if out.is_dir() else []
    if not entries:
        return []
    if not overwrite:
        raise UsageError(f"--out {out}: the folder holds files already ({_names(entries)}); give a new or empty folder, "
                         f"or --overwrite to replace what {what} wrote there")
    wrote = _written(out, record)
    if wrote is None:
        raise UsageError(f"--out {out}: --overwrite replaces what {what} wrote, and this folder has no {record} of it "
                         f"({_names(entries)}); give a new or empty folder")
    foreign = [e for e in entries if e.name not in wrote or not e.is_file() or e.is_symlink()]
    if foreign:
        raise UsageError(f"--out {out}: --overwrite replaces only what {what} wrote, and the folder also holds "
                         f"{_names(foreign)}; move that away or give another folder")
    return entries


def _written(out: Path, record: str) -> set[str] | None:
    """The files an earlier export wrote there, from its `record` (None: not an export's)."""
    try:
        files = json.loads((out / record).read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        return None
    return set(files) | {record}


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


def place(folder: Path, out: Path, old: list[Path], record: str = RECORD) -> None:
    """Move the staged files into `out`, replacing an earlier export's; `record` last."""
    out.mkdir(parents=True, exist_ok=True)
    for path in old:
        path.unlink()
    staged = sorted(folder.iterdir(), key=lambda p: p.name == record)
    for path in staged:
        os.replace(path, out / path.name)
