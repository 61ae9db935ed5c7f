"""A lock per comparison run, so two processes never train the same run at once."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from mmcli.errors import UsageError


@contextmanager
def job_lock(path: Path, k: int, cell: dict[str, Any]) -> Iterator[None]:
    """One process per run: a second one (a requeued cluster job, a resume started while
    the --print-jobs batch still runs) stops with a message instead of deleting the first
    one's work. The lock is the operating system's, so a killed process releases it."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; runs are still written atomically
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(f"job {k} ({cell['variant']} seed {cell['seed']}) is running in another process") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
