"""Benchmarks that print ratios measured side by side in one run (`make bench`).

1. CLI start-up: `mmcli --help` against `python -c "import typer"`, the floor any Typer
   program pays. Each command runs REPEATS times, alternating; the median is compared.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

REPEATS = 7


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def startup() -> tuple[float, float]:
    help_times, typer_times = [], []
    for _ in range(REPEATS):
        help_times.append(timed([sys.executable, "-m", "mmcli", "--help"]))
        typer_times.append(timed([sys.executable, "-c", "import typer"]))
    return statistics.median(help_times), statistics.median(typer_times)


def main() -> None:
    rows = []
    cli, floor = startup()
    rows.append(("mmcli --help vs import typer (start-up)", f"{cli * 1000:.0f} ms", f"{floor * 1000:.0f} ms", f"{cli / floor:.2f}"))
    width = max(len(r[0]) for r in rows)
    print(f"{'benchmark':<{width}}  {'measured':>10}  {'baseline':>10}  {'ratio':>6}")
    for name, a, b, ratio in rows:
        print(f"{name:<{width}}  {a:>10}  {b:>10}  {ratio:>6}")


if __name__ == "__main__":
    main()
