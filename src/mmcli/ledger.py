"""What mmcli wrote, and who is writing: the proof behind every delete and replace.

mmcli deletes or replaces a file only when it can prove that it wrote the file and that
nobody changed it since (issue 23: `--overwrite` once replaced any folder that held a
`config.yaml` and a `data.json`, with the user's 402 other files in it). The proof is a
ledger, `.mmcli-files.jsonl`, in every folder mmcli makes (run folders, their staging
folders, comparison folders): a header line (format, kind of folder, mmcli version), then
one line per file written, with its size and SHA-256. Lines are only ever appended, each
with one write(), so processes recording into the same folder at once (two evaluations,
compare's workers) never lose each other's lines; a later line for a path replaces an
earlier one. A file under a ledger's folder that no ledger vouches for, or whose size or
hash differ, is the user's: it is never deleted, and a command that would have to delete
it refuses and names it.

Locks: `hold(path)` is an advisory lock (the operating system's, so a killed process
releases it) on a small lock file that says which process holds it. The lock file is
removed on release when mmcli made it, and a process that locked a file that was removed
meanwhile locks the new one instead, so removing lock files never lets two holders in.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from mmcli.errors import Busy, UsageError

LEDGER = ".mmcli-files.jsonl"
FORMAT = 1
LOCK_KEY = "mmcli_lock"


# --------------------------------------------------------------------------- the ledger

def start(folder: Path, kind: str, **extra: Any) -> None:
    """A new, empty ledger in `folder` (which mmcli has just made)."""
    from mmcli import __version__

    _write_whole(folder / LEDGER, [{"mmcli_files": FORMAT, "kind": kind, "mmcli": __version__, **extra}])


def header(folder: Path) -> dict[str, Any] | None:
    """The ledger's header, or None when `folder` holds no readable ledger of this format."""
    try:
        with open(folder / LEDGER, "rb") as handle:
            head = json.loads(handle.readline(65536))
    except (OSError, ValueError):
        return None
    return head if isinstance(head, dict) and head.get("mmcli_files") == FORMAT else None


def records(folder: Path) -> dict[str, dict[str, Any]]:
    """path (relative, posix) -> its last record. A line cut short by a crash is skipped."""
    out: dict[str, dict[str, Any]] = {}
    try:
        lines = (folder / LEDGER).read_bytes().splitlines()[1:]
    except OSError:
        return out
    any_size = (header(folder) or {}).get("kind") == "staging"  # elsewhere a name alone vouches for nothing
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and isinstance(entry.get("path"), str) and isinstance(entry.get("size"), int) \
                and (entry["size"] >= 0 or any_size):
            out[entry["path"]] = entry
    return out


def intend(*paths: Path) -> None:
    """Before mmcli writes `paths` (one folder's files: a file and its temporary twin) in a
    staging folder: record their names (any size), so that a run killed in the middle of a
    write leaves no file its ledger cannot account for. Staging folders are private to one
    training, so names are proof enough there, and hashing every epoch's checkpoint would
    cost time (publish hashes every file once)."""
    if paths and (header(paths[0].parent) or {}).get("kind") == "staging":
        _append(paths[0].parent, [{"path": p.name, "size": -1} for p in paths])


def record(path: Path, data: bytes | None = None) -> None:
    """Add `path` (just written, with `data` where known) to its folder's ledger, if any,
    with its size and SHA-256 (a staging folder's ledger has its name already: `intend`)."""
    head = header(path.parent)
    if head is None or head.get("kind") == "staging":
        return
    _append(path.parent, [{"path": path.name, "size": len(data) if data is not None else path.stat().st_size,
                           "sha256": hashlib.sha256(data).hexdigest() if data is not None else file_sha256(path)}])


def _append(folder: Path, entries: list[dict[str, Any]]) -> None:
    line = "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries).encode("utf-8")
    fd = os.open(folder / LEDGER, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, line)  # one write, appended whole: processes recording at once keep every line
    finally:
        os.close(fd)


def seal(folder: Path, kind: str) -> None:
    """Rewrite the ledger of `folder` (mmcli's private staging folder, so everything in it is
    mmcli's) to list every file under it with its size and SHA-256."""
    from mmcli import __version__

    lines: list[dict[str, Any]] = [{"mmcli_files": FORMAT, "kind": kind, "mmcli": __version__}]
    for path in sorted(_files(folder)):
        if path != folder / LEDGER:
            lines.append({"path": path.relative_to(folder).as_posix(), "size": path.stat().st_size,
                          "sha256": file_sha256(path)})
    _write_whole(folder / LEDGER, lines)


def check_replace(path: Path) -> None:
    """Before mmcli replaces `path` in a folder it keeps a ledger of: refuse when the file
    there is not one it wrote (a user's file with the name of one of mmcli's)."""
    head = header(path.parent)
    if head is None or head.get("kind") == "staging" or not os.path.lexists(path):
        return
    if not _vouched(path, records(path.parent).get(path.name)):
        raise UsageError(f"{path}: mmcli did not write this file, or it changed since mmcli wrote it; refusing "
                         "to replace it (move it out of the folder first)")


def discard(path: Path) -> bool:
    """Delete `path` if its folder's ledger vouches for it (a file mmcli wrote, unchanged);
    whether it is gone."""
    if not os.path.lexists(path):
        return True
    head = header(path.parent)
    if head is None or not _vouched(path, records(path.parent).get(path.name)):
        return False
    path.unlink()
    return True


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_whole(path: Path, lines: list[dict[str, Any]]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f"{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _files(root: Path) -> Iterator[Path]:
    for folder, dirs, names in os.walk(root):
        for name in names + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
            yield Path(folder) / name


def _entry(recs: dict[str, dict[str, Any]], rel: str) -> dict[str, Any] | None:
    """The record of `rel`, or of a folder above it that a staging ledger names (all of it is mmcli's)."""
    if rel in recs:
        return recs[rel]
    parts = rel.split("/")
    for n in range(1, len(parts)):
        entry = recs.get("/".join(parts[:n]))
        if entry is not None and entry["size"] == -1:
            return entry
    return None


def _vouched(path: Path, entry: dict[str, Any] | None) -> bool:
    """Whether a ledger entry proves that `path` is the file mmcli wrote, unchanged."""
    if entry is None:
        return False
    try:
        info = os.lstat(path)
    except OSError:
        return False
    if not stat.S_ISREG(info.st_mode) or entry["size"] not in (-1, info.st_size):
        return False
    return "sha256" not in entry or file_sha256(path) == entry["sha256"]


# --------------------------------------------------------------------------- survey and removal

@dataclass
class Survey:
    """The files under a folder: mmcli's (provably), the user's, and locks held right now."""

    root: Path
    mine: list[Path] = field(default_factory=list)
    foreign: list[Path] = field(default_factory=list)
    busy: list[Path] = field(default_factory=list)

    def names(self, paths: list[Path], most: int = 5) -> str:
        shown = [p.relative_to(self.root).as_posix() if p != self.root else p.name for p in paths[:most]]
        return ", ".join(shown) + (f" and {len(paths) - most} more" if len(paths) > most else "")


def survey(root: Path) -> Survey:
    """Sort every file under `root`: each is vouched for by the ledger of the nearest folder
    above it that has one (a comparison's run folders have their own), or is a ledger, or a
    lock file mmcli made; anything else (links included: mmcli writes none) is foreign."""
    out = Survey(root)
    ledgers: dict[Path, dict[str, dict[str, Any]] | None] = {}

    def ledger_of(folder: Path) -> tuple[Path, dict[str, dict[str, Any]]] | None:
        while True:
            if folder not in ledgers:
                ledgers[folder] = records(folder) if header(folder) is not None else None
            if ledgers[folder] is not None:
                return folder, ledgers[folder]  # type: ignore[return-value]
            if folder == root:
                return None
            folder = folder.parent

    for path in _files(root):
        if path.name == LEDGER and header(path.parent) is not None:
            out.mine.append(path)
            continue
        owner = lock_owner(path)
        if owner is not None:
            (out.busy if is_locked(path) else out.mine).append(path)
            continue
        found = ledger_of(path.parent)
        entry = _entry(found[1], path.relative_to(found[0]).as_posix()) if found else None
        (out.mine if _vouched(path, entry) else out.foreign).append(path)
    return out


def remove(found: Survey, keep_root: bool = True) -> int:
    """Delete the files `found` proved mmcli's (ledgers last), then the folders left empty;
    the user's files and the folders holding them stay. Returns the bytes freed."""
    freed = 0
    for path in sorted(found.mine, key=lambda p: p.name == LEDGER):
        if path.name == LEDGER and any(f.parent == path.parent for f in found.foreign + found.busy):
            continue  # a folder that keeps the user's files keeps its ledger too
        with contextlib.suppress(OSError):
            freed += os.lstat(path).st_size
            os.unlink(path)
    for folder, _, _ in sorted(os.walk(found.root), key=lambda x: -len(Path(x[0]).parts)):
        if keep_root and Path(folder) == found.root:
            continue
        with contextlib.suppress(OSError):
            os.rmdir(folder)
    return freed


def remove_written(root: Path, keep_root: bool = False) -> Survey:
    """Delete what mmcli provably wrote under `root`; the survey says what was left."""
    found = survey(root)
    remove(found, keep_root)
    return found


# --------------------------------------------------------------------------- locks

def lock_owner(path: Path) -> dict[str, Any] | None:
    """The record in a lock file mmcli made ({mmcli_lock, pid, host}), else None."""
    try:
        if path.suffix != ".lock" or not stat.S_ISREG(os.lstat(path).st_mode) or os.lstat(path).st_size > 4096:
            return None
        value = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) and value.get(LOCK_KEY) == FORMAT else None


def is_locked(path: Path) -> bool:
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


@contextlib.contextmanager
def hold(path: Path, busy: str) -> Iterator[None]:
    """Hold the lock `path` while the block runs; another process holding it already is a
    UsageError: `busy`, with which process holds it."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; mmcli still never replaces a folder it did not write
        yield
        return
    fd, made = _acquire(path, busy, fcntl)
    try:
        yield
    finally:
        try:
            if made and _same_file(fd, path):
                os.unlink(path)  # while still locked: a waiter then finds the file gone and makes its own
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def _acquire(path: Path, busy: str, fcntl) -> tuple[int, bool]:
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(20):  # the file can be removed between open and flock: then lock the new one
        made = writable = True
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            made, writable = False, lock_owner(path) is not None  # a user's file is only read
            try:
                fd = _open_existing(path, writable)
            except FileNotFoundError:
                continue
            except PermissionError:
                fd, writable = _open_existing(path, False), False
        except OSError as exc:
            raise UsageError(f"{path}: cannot make a lock file here ({exc.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            owner = lock_owner(path) or {}
            who = f" (pid {owner['pid']} on {owner.get('host', '?')})" if "pid" in owner else ""
            raise Busy(busy + who) from None
        if not _same_file(fd, path):
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            continue
        made = made or (writable and lock_owner(path) is not None)  # left by a killed mmcli: ours now
        if made:
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps({LOCK_KEY: FORMAT, "pid": os.getpid(), "host": socket.gethostname()}).encode())
        return fd, made
    raise UsageError(f"{path}: this lock file keeps changing; is another program removing it?")


def _open_existing(path: Path, writable: bool) -> int:
    try:
        return os.open(path, os.O_RDWR if writable else os.O_RDONLY)
    except (FileNotFoundError, PermissionError):
        raise
    except OSError as exc:  # a folder, a socket ...
        raise UsageError(f"{path}: cannot be used as a lock file ({exc.strerror}); move it away") from None


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
