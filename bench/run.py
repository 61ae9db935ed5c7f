"""Benchmarks that print ratios measured side by side in one run (`make bench`).

1. CLI start-up: `mmcli --help` against `python -c "import typer"`, the floor any Typer
   program pays. Each command runs REPEATS times, alternating; the median is compared.
2. The default comparison: `mmcli compare unimodal multimodal --seeds 3` on the built-in
   toy data, from an empty cache (making the toy set and preprocessing it are included),
   against the 3-minute budget that issue 6 sets; and, on the warm cache, `--jobs auto`
   against `--jobs 1` (one run at a time with every core).

`python bench/run.py startup` or `python bench/run.py compare` runs one of them.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

REPEATS = 7
COMPARE_BUDGET_S = 180.0


def timed(cmd: list[str], env: dict | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return time.perf_counter() - start


def startup() -> list[tuple[str, str, str, str]]:
    help_times, typer_times = [], []
    for _ in range(REPEATS):
        help_times.append(timed([sys.executable, "-m", "mmcli", "--help"]))
        typer_times.append(timed([sys.executable, "-c", "import typer"]))
    cli, floor = statistics.median(help_times), statistics.median(typer_times)
    return [("mmcli --help vs import typer (start-up)", f"{cli * 1000:.0f} ms", f"{floor * 1000:.0f} ms", f"{cli / floor:.2f}")]


def compare() -> list[tuple[str, str, str, str]]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="mmcli-bench-") as tmp:
        env = {**os.environ, "MMCLI_CACHE_DIR": os.path.join(tmp, "cache"), "MMCLI_NO_PROGRESS": "1"}
        base = [sys.executable, "-m", "mmcli", "compare", "unimodal", "multimodal", "--seeds", "3", "--quiet"]
        cold = timed(base + ["--out", os.path.join(tmp, "cold")], env)
        rows.append(("compare unimodal multimodal --seeds 3, empty cache, vs 3 min",
                     f"{cold:.0f} s", f"{COMPARE_BUDGET_S:.0f} s", f"{cold / COMPARE_BUDGET_S:.2f}"))
        auto = timed(base + ["--out", os.path.join(tmp, "auto")], env)
        one = timed(base + ["--out", os.path.join(tmp, "one"), "--jobs", "1"], env)
        rows.append(("same, warm cache: --jobs auto vs --jobs 1", f"{auto:.0f} s", f"{one:.0f} s", f"{auto / one:.2f}"))
    return rows


BENCHMARKS = {"startup": startup, "compare": compare}


def main() -> None:
    chosen = sys.argv[1:] or list(BENCHMARKS)
    unknown = [c for c in chosen if c not in BENCHMARKS]
    if unknown:
        sys.exit(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}", flush=True)
    rows = [row for name in chosen for row in BENCHMARKS[name]()]
    width = max(len(r[0]) for r in rows)
    print(f"{'benchmark':<{width}}  {'measured':>10}  {'baseline':>10}  {'ratio':>6}")
    for name, a, b, ratio in rows:
        print(f"{name:<{width}}  {a:>10}  {b:>10}  {ratio:>6}")


if __name__ == "__main__":
    main()
