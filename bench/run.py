"""Benchmarks that print ratios measured side by side in one run (`make bench`).

1. CLI start-up: `mmcli --help` against `python -c "import typer"`, the floor any Typer
   program pays. Each command runs REPEATS times, alternating; the median is compared.
2. The default comparison: `mmcli compare unimodal multimodal --seeds 3` on the built-in
   toy data, from an empty cache (making the toy set and preprocessing it are included),
   against the 3-minute budget that issue 6 sets; and, on the warm cache, `--jobs auto`
   against `--jobs 1` (one run at a time with every core).

3. The frozen-feature cache: epoch time of a frozen resnet18 whose features are cached,
   against the same encoder recomputing them in every epoch (target: 10x or more); the
   whole run; and a whole comparison (its runs score the test split several times).

4. The data road and the loop (bench/scale.py): preprocessing with 2 workers against 1,
   peak memory at 10N examples against N, the frozen-feature cache's peak memory against
   the way it was built before, an epoch over the cache against decoding the
   files, mmcli's epoch against a minimal hand-written loop, batched predict against one
   example at a time.

5. Video (bench/video.py): preprocessing peak memory at 10x the clips against 1x, and a
   training epoch over the cached frames against decoding the clips every epoch.

6. Serving (`mmcli serve`): the latency of one toy example, median and 95th percentile of
   200 sequential requests from a client on the same machine, against one `mmcli predict`
   process per example (the goal: under 50 ms on 2 cores) and against the same prediction
   in-process; and the throughput of 8 concurrent clients against one client's
   sequential requests (micro-batching).

`make bench` runs all but `compare` (about 8 minutes on 2 cores); `python bench/run.py
NAME ...` runs the named ones (startup, preprocess, memory, cache_memory, cache, loop, predict, frozen,
video_memory, video_cache, serve, compare).
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


def _epoch_seconds(run: str) -> float:
    """Median time of an epoch after the first, from metrics.jsonl's elapsed_s."""
    import json

    with open(os.path.join(run, "metrics.jsonl")) as handle:
        elapsed = [json.loads(line)["elapsed_s"] for line in handle if line.strip()]
    return statistics.median(b - a for a, b in zip(elapsed, elapsed[1:]))


def frozen() -> list[tuple[str, str, str, str]]:
    """A frozen resnet18 (224x224 inputs, as its weights want) on 240 toy images: epoch
    time with its features cached against recomputing them in every epoch. Random weights
    saved to a file stand in for ImageNet's (no network here); they cost the same."""
    import torch
    import torchvision

    with tempfile.TemporaryDirectory(prefix="mmcli-bench-") as tmp:
        env = {**os.environ, "MMCLI_CACHE_DIR": os.path.join(tmp, "cache"), "MMCLI_NO_PROGRESS": "1"}
        weights = os.path.join(tmp, "resnet18.pth")
        torch.save(torchvision.models.resnet18().state_dict(), weights)
        toy = os.path.join(tmp, "toy")
        subprocess.run([sys.executable, "-m", "mmcli", "datasets", "make", "toy", toy, "--n", "240"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        base = [sys.executable, "-m", "mmcli", "train", toy, "--modalities", "image", "--epochs", "4", "--quiet",
                "--set", "model.encoders.image=resnet18", "--set", "train.patience=0",
                "--set", f"model.encoder_options.image={{weights: {weights}, trainable: false}}"]
        runs = {}
        for cache in ("true", "false"):
            runs[cache] = os.path.join(tmp, f"cache-{cache}")
            total = timed(base + ["--out", runs[cache], "--set", f"train.feature_cache={cache}"], env)
            runs[cache + "-total"] = total
        cached, full = _epoch_seconds(runs["true"]), _epoch_seconds(runs["false"])
        # a comparison scores each run's test split clean and with each modality hidden, and
        # saves the outputs the ensemble averages: every pass reads the cached features too
        versus = [sys.executable, "-m", "mmcli", "compare", "unimodal", "multimodal:concat", "--data", toy,
                  "--modalities", "image,text", "--epochs", "2", "--jobs", "1", "--quiet",
                  "--set", "model.encoders.image=resnet18",
                  "--set", f"model.encoder_options.image={{weights: {weights}, trainable: false}}"]
        compared = {cache: timed(versus + ["--out", os.path.join(tmp, f"compare-{cache}"),
                                           "--set", f"train.feature_cache={cache}"], env) for cache in ("true", "false")}
        return [("frozen resnet18 epoch: cached features vs recomputed", f"{cached:.3f} s", f"{full:.2f} s",
                 f"{full / cached:.0f}x"),
                ("same, whole 4-epoch run (cache built in it) vs recomputed", f"{runs['true-total']:.0f} s",
                 f"{runs['false-total']:.0f} s", f"{runs['false-total'] / runs['true-total']:.1f}x"),
                ("compare image, text, concat + ensemble (2 epochs) vs recomputed", f"{compared['true']:.0f} s",
                 f"{compared['false']:.0f} s", f"{compared['false'] / compared['true']:.1f}x")]


SERVE_REQUESTS = 200
SERVE_GOAL_S = 0.050


def _post(connection, body: bytes) -> float:
    """One POST /predict on a kept-alive connection: its wall time (the answer checked)."""
    start = time.perf_counter()
    connection.request("POST", "/predict", body, {"Content-Type": "application/json"})
    answer = connection.getresponse()
    data = answer.read()
    assert answer.status == 200, data
    return time.perf_counter() - start


def _seconds(port: int, body: bytes, clients: int, each: int) -> float:
    """Wall time of `clients` clients at once, each sending `each` requests one after another."""
    import http.client
    from concurrent.futures import ThreadPoolExecutor

    def client(_: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for _ in range(each):
            _post(connection, body)
        connection.close()

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    return time.perf_counter() - start


def _serve_measures(run: str, one: dict, env: dict) -> tuple[list[float], list[float], float, float]:
    """`mmcli serve RUN` on a free port, measured side by side with the same prediction in
    this process (mmcli.load, called from a thread as the server calls it): SERVE_REQUESTS
    rounds of one request and one call, alternating (after 10 to warm up); then requests/s
    of 8 clients at once and of one, in 5 alternating rounds of 40 requests each. This
    machine's load from other work varies by the minute; alternating shares it out."""
    import http.client
    import json
    import socket
    import urllib.request
    from concurrent.futures import ThreadPoolExecutor

    import mmcli as api

    predictor = api.load(run)
    predictor.predict(one)  # its first call imports the decoders: not while a connection waits (5 s keep-alive)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "mmcli", "serve", run, "--port", str(port), "--quiet"], env=env)
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5).read()
                break
            except OSError:
                time.sleep(0.2)
        body = json.dumps(one).encode()
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        served, direct = [], []
        with ThreadPoolExecutor(1) as model_thread:
            for i in range(10 + SERVE_REQUESTS):
                took = _post(connection, body), model_thread.submit(_timed_predict, predictor, one).result()
                if i >= 10:
                    served.append(took[0])
                    direct.append(took[1])
        connection.close()
        concurrent = sequential = 0.0
        for _ in range(5):
            concurrent += _seconds(port, body, 8, 5)
            sequential += _seconds(port, body, 1, 40)
        return sorted(served), direct, 200 / concurrent, 200 / sequential
    finally:
        server.terminate()
        server.wait(timeout=60)


def _timed_predict(predictor, one: dict) -> float:
    start = time.perf_counter()
    predictor.predict(one)
    return time.perf_counter() - start


def serve() -> list[tuple[str, str, str, str]]:
    """`mmcli serve` on the default toy model (one epoch on the built-in toy data's 1,200
    examples): one example's latency against a `mmcli predict` process per example and
    against the same prediction in this process (mmcli.load), and 8 concurrent clients
    against sequential requests."""
    import csv

    with tempfile.TemporaryDirectory(prefix="mmcli-bench-") as tmp:
        env = {**os.environ, "MMCLI_CACHE_DIR": os.path.join(tmp, "cache"), "MMCLI_NO_PROGRESS": "1"}
        toy, run = os.path.join(tmp, "toy"), os.path.join(tmp, "run")
        mmcli = [sys.executable, "-m", "mmcli"]
        subprocess.run(mmcli + ["datasets", "make", "toy", toy, "--quiet"], check=True, env=env, stdout=subprocess.DEVNULL)
        subprocess.run(mmcli + ["train", toy, "--epochs", "1", "--out", run, "--quiet"], check=True, env=env,
                       stdout=subprocess.DEVNULL)
        row = next(csv.DictReader(open(os.path.join(toy, "manifest.csv"), encoding="utf-8")))
        one = {k: os.path.join(toy, row[k]) if k != "text" else row[k] for k in ("image", "audio", "text")}
        latencies, direct, concurrent, sequential = _serve_measures(run, one, env)
        processes = statistics.median(timed(mmcli + ["predict", run, *[f"--{k}={v}" for k, v in one.items()]], env)
                                      for _ in range(5))
    median, p95, in_process = statistics.median(latencies), latencies[int(0.95 * len(latencies)) - 1], statistics.median(direct)
    return [(f"serve: one example, median of {SERVE_REQUESTS} requests vs a mmcli predict process (5)",
             f"{median * 1000:.1f} ms", f"{processes:.2f} s", f"{processes / median:.0f}x"),
            (f"serve: 95th percentile of the same vs the {SERVE_GOAL_S * 1000:.0f} ms goal",
             f"{p95 * 1000:.1f} ms", f"{SERVE_GOAL_S * 1000:.0f} ms", f"{p95 / SERVE_GOAL_S:.2f}"),
            ("serve: the median request vs the same prediction in-process", f"{median * 1000:.1f} ms",
             f"{in_process * 1000:.1f} ms", f"{median / in_process:.2f}"),
            ("serve throughput: 8 concurrent clients vs sequential", f"{concurrent:.0f}/s", f"{sequential:.0f}/s",
             f"{concurrent / sequential:.2f}x")]

import scale  # noqa: E402  (bench/scale.py, beside this file)
import video  # noqa: E402  (bench/video.py)

# `make bench` runs these (about 8 minutes on 2 cores); `compare` (5 minutes) runs by name
BENCHMARKS = {"startup": startup, **scale.BENCHMARKS, "frozen": frozen, **video.BENCHMARKS, "serve": serve}
EXTRA = {"compare": compare}


def main() -> None:
    known = {**BENCHMARKS, **EXTRA}
    chosen = sys.argv[1:] or list(BENCHMARKS)
    unknown = [c for c in chosen if c not in known]
    if unknown:
        sys.exit(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(known)}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}", flush=True)
    rows = [row for name in chosen for row in known[name]()]
    width = max(len(r[0]) for r in rows)
    print(f"{'benchmark':<{width}}  {'measured':>10}  {'baseline':>10}  {'ratio':>6}")
    for name, a, b, ratio in rows:
        print(f"{name:<{width}}  {a:>10}  {b:>10}  {ratio:>6}")


if __name__ == "__main__":
    main()
