"""Running a comparison's cells in several processes (`compare --jobs N`): how many
processes, the torch threads each gets, and the process pool that runs the cells, the
runs with the most modalities first."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from mmcli.compare.pool import DataPool
from mmcli.compare.runner import Plan, load_plan, run_cell


def auto_jobs(device: str) -> int:
    """`--jobs auto`: one run at a time on a GPU; on the CPU up to 4 runs, one per core.
    Small models use a core each better than two cores together, so on 2 cores two runs
    of one thread finish a comparison sooner than one run of two (docs/performance.md)."""
    if device not in ("auto", "cpu"):
        return 1
    if device == "auto":
        from mmcli.training.setup import pick_device

        if pick_device("auto").type != "cpu":
            return 1
    return max(1, min(4, usable_cores()))


def usable_cores() -> int:
    """The cores this process may use (Slurm and taskset limit them), not the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def threads_per_job(jobs: int) -> int:
    return max(1, usable_cores() // jobs)


_WORKER: dict[str, Any] = {}


class _Epochs:
    """A worker's training progress, sent to the comparison's process an epoch at a time
    (what `compare --jobs N` shows inside the running trainings)."""

    def __init__(self, events: Any, k: int) -> None:
        self.events, self.k, self.epochs = events, k, 0

    def epoch_start(self, epoch: int, epochs: int, batches: int) -> None:
        self.epochs = epochs
        self.events.put((self.k, epoch - 1, epochs))

    def batch_end(self, loss: float) -> None:
        pass

    def epoch_end(self, record: dict[str, Any]) -> None:
        self.events.put((self.k, int(record.get("epoch", 0)), self.epochs))

    def cycle_start(self, last: int, end: int) -> None:
        from mmcli.training.stopping import log_cycle

        log_cycle(last, end)


def _worker_init(out: str, cache_dir: str | None, parent: int, events: Any = None) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops the pool
    _exit_with_parent(parent)
    from mmcli.reporting.console import setup_logging

    setup_logging()
    plan = load_plan(Path(out))
    _WORKER.update(out=Path(out), plan=plan, data=DataPool(plan.base_config(), plan.kinds, cache_dir), cache_dir=cache_dir,
                   events=events)


def _exit_with_parent(parent: int, interval: float = 0.1) -> None:
    """A worker whose comparison was killed stops too, instead of training on unseen; its
    unfinished run is cleaned up when the comparison is run again."""
    import threading
    import time

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="mmcli-parent-watch").start()


def _worker_cell(k: int) -> tuple[int, dict[str, Any]]:
    events = _WORKER.get("events")
    progress = _Epochs(events, k) if events is not None else None
    return k, run_cell(_WORKER["plan"], _WORKER["data"], k, _WORKER["out"], progress, cache_dir=_WORKER["cache_dir"])[0]


def run_parallel(out: Path, plan: Plan, cache_dir: str | None, todo: list[int], jobs: int,
                 on_epoch: Callable[[int, int, int], Any] | None = None):
    """Run cells in `jobs` processes; yields (k, result) as each finishes. A cell starts
    once the cells it starts from (warm start) have finished; among those ready, the runs
    with the most modalities go first, so no long run is left alone at the end.
    `on_epoch(k, epochs_done, epochs)` hears of each epoch the workers finish."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    from mmcli.compare import warm
    from mmcli.errors import RunFailed

    if not todo:
        return
    waiting = sorted(todo, key=lambda k: -len(plan.variant(plan.cells[k]["variant"]).modalities))
    pending = set(todo)  # not finished in this call: what a waiting cell may still need
    context = multiprocessing.get_context("spawn")  # a clean interpreter: no forked torch threads
    events = context.Queue() if on_epoch is not None else None
    with ProcessPoolExecutor(min(jobs, len(todo)), mp_context=context, initializer=_worker_init,
                             initargs=(str(out), cache_dir, os.getpid(), events)) as pool:
        running: dict[Any, int] = {}
        try:
            while waiting or running:
                for k in [k for k in waiting if not set(warm.sources(plan, k).values()) & pending]:
                    waiting.remove(k)
                    running[pool.submit(_worker_cell, k)] = k
                if not running:  # cannot happen with a plan that compare made: a cell waits for itself
                    raise RunFailed(f"jobs {waiting} wait for cells that never run; plan the comparison again")
                finished, _ = wait(running, timeout=None if events is None else 0.5, return_when=FIRST_COMPLETED)
                _drain(events, on_epoch)
                for future in finished:
                    pending.discard(running.pop(future))
                    yield future.result()  # the first failure is raised here
        except BrokenProcessPool:
            _stop(pool)
            raise RunFailed("a worker process died (out of memory?); finished runs are kept: rerun the same command "
                            "to resume, or use --jobs 1") from None
        except BaseException:
            _stop(pool)
            raise


def _drain(events: Any, on_epoch: Callable[[int, int, int], Any] | None) -> None:
    """Pass on the epochs the workers reported since the last look."""
    import queue

    while events is not None and on_epoch is not None:
        try:
            k, done, epochs = events.get_nowait()
        except (queue.Empty, OSError, EOFError):
            return
        on_epoch(k, done, epochs)


def _stop(pool) -> None:
    """Cancel what has not started and end the workers now, not after their current run."""
    processes = list((getattr(pool, "_processes", None) or {}).values())  # shutdown() forgets them
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.terminate()
