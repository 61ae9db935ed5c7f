"""Downloads with checksums, and archive extraction that stays inside its folder.

A file is streamed to `NAME.part` while its digest is computed; only a complete file whose
digest matches the published one is renamed to NAME. A broken connection, a short file or
a wrong digest is an error that says what happened, and the partial file is deleted.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tarfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from mmcli.errors import UsageError

CHUNK = 1 << 20
TIMEOUT_S = 60
OFFLINE_HINT = "without network, build from a local copy with --source DIR"


@dataclass(frozen=True)
class Remote:
    url: str
    md5: Optional[str] = None  # the digest its publishers (or torchvision) give
    size: Optional[int] = None

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(remote: Remote, folder: Path, mirror: Optional[str] = None,
          progress: Optional[Callable[[int, int], None]] = None) -> Path:
    """Download one file into `folder`; `mirror` replaces everything before its file name."""
    url = mirror.rstrip("/") + "/" + remote.filename if mirror else remote.url
    final = folder / remote.filename
    part = folder / (remote.filename + ".part")
    md5 = hashlib.md5()
    try:
        got, total = _stream(url, part, md5, progress)
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        part.unlink(missing_ok=True)
        raise UsageError(f"download of {url} failed: {_reason(exc)}; nothing of it was kept ({OFFLINE_HINT})") from None
    if total is not None and got != total:
        part.unlink(missing_ok=True)
        raise UsageError(f"download of {url} stopped after {got:,} of {total:,} bytes; nothing of it was kept")
    if remote.md5 is not None and md5.hexdigest() != remote.md5:
        part.unlink(missing_ok=True)
        raise UsageError(
            f"{url}: checksum mismatch (md5 {md5.hexdigest()}, expected {remote.md5}); the file was deleted. "
            "The download was corrupted or the file changed upstream; retry, or use --source with a copy you trust"
        )
    os.replace(part, final)
    return final


def _stream(url: str, part: Path, md5, progress) -> tuple[int, Optional[int]]:
    request = urllib.request.Request(url, headers={"User-Agent": "mmcli"})
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response, open(part, "wb") as out:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        got = 0
        while True:
            block = response.read(CHUNK)
            if not block:
                break
            out.write(block)
            md5.update(block)
            got += len(block)
            if progress is not None:
                progress(got, total or got)
    return got, total


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    if isinstance(exc, http.client.IncompleteRead):
        return f"the connection closed after {len(exc.partial):,} bytes of a block"
    return str(exc) or type(exc).__name__


def extract(archive: Path, dest: Path, members: Callable[[str], bool] = lambda name: True) -> None:
    """Unpack a zip or tar archive (the members whose names `members` accepts) into `dest`,
    refusing members that would land outside it and links."""
    dest = dest.resolve()
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                names = [n for n in zf.namelist() if members(n)]
                for name in names:
                    _inside(dest, name, archive)
                zf.extractall(dest, names)
            return
        with tarfile.open(archive) as tf:
            chosen = [m for m in tf.getmembers() if members(m.name)]
            for member in chosen:
                _inside(dest, member.name, archive)
                if member.issym() or member.islnk():
                    raise UsageError(f"{archive}: member '{member.name}' is a link; refusing to unpack it")
            if hasattr(tarfile, "data_filter"):
                tf.extractall(dest, chosen, filter="data")
            else:
                tf.extractall(dest, chosen)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as exc:
        raise UsageError(f"{archive}: not a readable archive ({exc})") from None


def _inside(dest: Path, name: str, archive: Path) -> None:
    target = (dest / name).resolve()
    if target != dest and dest not in target.parents:
        raise UsageError(f"{archive}: member '{name}' would be written outside {dest}; refusing to unpack it")


def tree_digest(files: list[Path], root: Path) -> str:
    """One sha256 over the sorted (relative name, sha256 of content) pairs of a set of files:
    checks what an archive unpacked to, whatever the archive's own packing."""
    lines = sorted(f"{p.relative_to(root).as_posix()}\t{file_digest(p)}\n" for p in files)
    return hashlib.sha256("".join(lines).encode()).hexdigest()
