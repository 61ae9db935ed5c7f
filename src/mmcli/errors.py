"""One exception family for the core; the CLI turns each into an exit code.

Exit codes: 2 for bad input or usage (`UsageError`, `DataError`, `ConfigError`),
1 for a run that failed for another reason (`RunFailed`).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Iterator


class MmcliError(Exception):
    """Base class of every error that mmcli reports without a traceback."""

    exit_code = 1


class UsageError(MmcliError):
    """The user asked for something that cannot be done as asked."""

    exit_code = 2


class ConfigError(UsageError):
    """A config file, flag or `--set` expression is wrong; names the key."""


class Busy(UsageError):
    """Another process holds the lock of what was asked for (a run, a comparison's job)."""


class Interrupted(MmcliError):
    """The user stopped a run (Ctrl-C); what it saved can be resumed."""

    exit_code = 130


class RunFailed(MmcliError):
    """A run started but could not finish."""

    exit_code = 1


@dataclass(frozen=True)
class BadRow:
    """One problem in a manifest: where it is and why."""

    file: str
    row: int | None  # 1-based data row (the header is not a row)
    column: str | None
    reason: str
    line: int | None = None  # line number in the file, where that differs from the row

    def __str__(self) -> str:
        where = self.file
        if self.row is not None:
            where += f", row {self.row}"
            if self.line is not None:
                where += f" (line {self.line})"
        if self.column is not None:
            where += f", column '{self.column}'"
        return f"{where}: {self.reason}"


class DataError(UsageError):
    """The data is unusable; carries every bad row found, not only the first."""

    def __init__(self, message: str, rows: list[BadRow] | None = None):
        self.rows = list(rows or [])
        super().__init__(message)

    def __str__(self) -> str:
        text = self.args[0]
        if not self.rows:
            return text
        shown = self.rows[:20]
        lines = [text] + [f"  {row}" for row in shown]
        if len(self.rows) > len(shown):
            lines.append(f"  ... and {len(self.rows) - len(shown)} more")
        return "\n".join(lines)


@contextlib.contextmanager
def writing(path: str | os.PathLike) -> Iterator[None]:
    """Name `path` in an OSError raised while writing there: write() on a full disk raises
    ENOSPC without a file name, and "No space left on device" alone does not say which
    disk (the CLI reports an OSError as "FILE: reason")."""
    try:
        yield
    except OSError as exc:
        if exc.filename is not None:
            raise
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
