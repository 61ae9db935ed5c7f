"""A lock per comparison run, so two processes never train the same run at once."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from mmcli import ledger
from mmcli.compare.crossfit import label


@contextmanager
def job_lock(path: Path, k: int, cell: dict[str, Any]) -> Iterator[None]:
    """One process per run: a second one (a requeued cluster job, a resume started while
    the --print-jobs batch still runs) stops with a message instead of deleting the first
    one's work. The lock is the operating system's, so a killed process releases it; the
    lock file says which process holds it, and proves itself mmcli's to `--overwrite`."""
    with ledger.hold(path, f"job {k} ({label(cell)}) is running in another process"):
        yield
