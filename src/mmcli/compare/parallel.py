"""Running a comparison's cells in several processes (`compare --jobs N`): how many
processes, the torch threads each gets, and the process pool that runs the cells, the
runs with the most modalities first."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

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


def _worker_init(out: str, cache_dir: str | None, parent: int) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops the pool
    _exit_with_parent(parent)
    from mmcli.reporting.console import setup_logging

    setup_logging()
    plan = load_plan(Path(out))
    _WORKER.update(out=Path(out), plan=plan, data=DataPool(plan.base_config(), plan.kinds, cache_dir), cache_dir=cache_dir)


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
    return k, run_cell(_WORKER["plan"], _WORKER["data"], k, _WORKER["out"], cache_dir=_WORKER["cache_dir"])[0]


def run_parallel(out: Path, plan: Plan, cache_dir: str | None, todo: list[int], jobs: int):
    """Run cells in `jobs` processes; yields (k, result) as each finishes. A cell starts
    once the cells it starts from (warm start) have finished; among those ready, the runs
    with the most modalities go first, so no long run is left alone at the end."""
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
    with ProcessPoolExecutor(min(jobs, len(todo)), mp_context=context, initializer=_worker_init,
                             initargs=(str(out), cache_dir, os.getpid())) as pool:
        running: dict[Any, int] = {}
        try:
            while waiting or running:
                for k in [k for k in waiting if not set(warm.sources(plan, k).values()) & pending]:
                    waiting.remove(k)
                    running[pool.submit(_worker_cell, k)] = k
                if not running:  # cannot happen with a plan that compare made: a cell waits for itself
                    raise RunFailed(f"jobs {waiting} wait for cells that never run; plan the comparison again")
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
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


def _stop(pool) -> None:
    """Cancel what has not started and end the workers now, not after their current run."""
    processes = list((getattr(pool, "_processes", None) or {}).values())  # shutdown() forgets them
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.terminate()
