"""The consoles and progress bars of mmcli.

Progress and logs go to stderr; results go to stdout. Progress bars are shown only when
stderr is a terminal; rich honours NO_COLOR and plain non-terminals by itself.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

_err: Console | None = None
_out: Console | None = None
QUIET = {"on": False}


def err() -> Console:
    global _err
    if _err is None:
        _err = Console(stderr=True, highlight=False, soft_wrap=True)
    return _err


def out() -> Console:
    global _out
    if _out is None:
        _out = Console(highlight=False, soft_wrap=True)
    return _out


def stdout_is_terminal() -> bool:
    return sys.stdout.isatty()


def log(message: str) -> None:
    if not QUIET["on"]:
        err().print(message)


def setup_logging() -> None:
    """The core's warnings (WARNING records of the "mmcli" logger: rows skipped, a column
    not used) go to stderr as `warning: ...`, unless --quiet. With `mmcli --verbose` (or
    MMCLI_VERBOSE=1, which compare's worker processes inherit) its INFO records too (cache
    hits and misses, model sizes, devices, each comparison run)."""
    import logging

    logger = logging.getLogger("mmcli")
    handler = getattr(logger, "_mmcli_handler", None)
    if handler is None:
        class ToConsole(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                if QUIET["on"]:
                    return
                from rich.text import Text

                warn = record.levelno >= logging.WARNING
                message = f"warning: {record.getMessage()}" if warn else record.getMessage()
                err().print(Text(message, style="yellow" if warn else "dim")) if err().is_terminal \
                    else print(message, file=sys.stderr)

        handler = ToConsole()
        logger.addHandler(handler)
        logger._mmcli_handler = handler  # type: ignore[attr-defined]
    verbose = os.environ.get("MMCLI_VERBOSE") == "1"
    handler.setLevel(logging.INFO if verbose else logging.WARNING)
    if verbose:
        logger.setLevel(logging.INFO)


def progress_enabled() -> bool:
    return err().is_terminal and not QUIET["on"] and os.environ.get("MMCLI_NO_PROGRESS") is None


def _progress(transient: bool = True) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                    console=err(), transient=transient, disable=not progress_enabled())


@contextmanager
def task_bar(description: str) -> Iterator[Callable[..., None]]:
    """A bar for work counted in items; yields `update(done, total, info="")` (`done` may be
    fractional: runs part-trained). Its clock stops when the work is done, also while the
    command goes on with other work under it."""
    with _progress() as bar:
        task = bar.add_task(description, total=None, info="")

        def update(done: float, total: int, info: str | None = None) -> None:
            if info is None:
                bar.update(task, completed=done, total=total)
            else:
                bar.update(task, completed=done, total=total, info=info)
            if total and done >= total:
                bar.stop_task(task)

        yield update


class FitBar:
    """Epoch-by-epoch progress of training, with the loss and the validation metric."""

    def __init__(self, label: str = "train", metric: str = "accuracy", logger: Callable[[str], None] | None = None):
        self.label, self.metric, self.logger = label, metric, logger
        self._bar: Progress | None = None
        self._task: Any = None
        self.last_shown = ""

    def __enter__(self) -> "FitBar":
        self._bar = _progress(transient=True)
        self._bar.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def epoch_start(self, epoch: int, epochs: int, batches: int) -> None:
        description = f"{self.label} epoch {epoch}/{epochs}"
        assert self._bar is not None, "FitBar is used as a context manager"
        if self._task is None:
            self._task = self._bar.add_task(description, total=batches, info="")
        else:
            self._bar.reset(self._task, total=batches, description=description, info="")

    def cycle_start(self, last: int, end: int) -> None:
        from mmcli.training.stopping import cycle_note, log_cycle

        if self.logger:
            self.logger(f"{self.label}: {cycle_note(last, end)}")
        else:
            log_cycle(last, end)

    def batch_end(self, loss: float) -> None:
        assert self._bar is not None, "FitBar is used as a context manager"
        self._bar.update(self._task, advance=1, info=f"loss {loss:.3f} {self.last_shown}")

    def epoch_end(self, record: dict[str, Any]) -> None:
        value = record.get(f"val_{self.metric}")
        shown = f"  val {self.metric} {value:.4f}" if isinstance(value, float) else ""
        self.last_shown = shown.strip()
        if self.logger:
            self.logger(f"{self.label} epoch {record['epoch']}: train loss {record['train_loss']:.4f}{shown}")
