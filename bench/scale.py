"""Benchmarks of the data road and the training loop (issue 9), each a ratio measured side
by side in one run on the built-in toy data. Called from bench/run.py.

- preprocess: throughput with --workers 2 against --workers 1 (fresh caches);
- memory: peak memory of preprocessing 10N examples against N (target: under 1.3);
- cache_memory: the frozen-feature cache's peak memory while it computes a split, against
  the way it was built before (float32 batches joined, then converted);
- cache: a training epoch over the cache against one that also decodes the raw files;
- loop: an epoch of mmcli's loop against a minimal hand-written PyTorch loop on the same
  model, data and batch size (target: at most 1.05);
- predict: predict throughput in batches against one example at a time.
"""

from __future__ import annotations

import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

Row = tuple[str, str, str, str]
N = 400


def _env(tmp: str) -> dict:
    return {**os.environ, "MMCLI_CACHE_DIR": os.path.join(tmp, "cache"), "MMCLI_NO_PROGRESS": "1"}


def _toy(tmp: str, n: int, name: str = "toy") -> str:
    out = os.path.join(tmp, name)
    subprocess.run([sys.executable, "-m", "mmcli", "datasets", "make", "toy", out, "--n", str(n), "--quiet"],
                   check=True, env=_env(tmp), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return out


def _preprocess_seconds(tmp: str, toy: str, workers: int, cache: str) -> float:
    env = {**_env(tmp), "MMCLI_CACHE_DIR": os.path.join(tmp, cache)}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "mmcli", "preprocess", toy, "--workers", str(workers), "--quiet"],
                   check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


PREPROCESS_N = 3000  # enough rows that decoding, not the ~3 s of imports, is most of the time


def preprocess() -> list[Row]:
    """The whole `mmcli preprocess` command, start-up included, with fresh caches."""
    n = PREPROCESS_N
    with tempfile.TemporaryDirectory(prefix="mmcli-bench-") as tmp:
        toy = _toy(tmp, n)
        one = _preprocess_seconds(tmp, toy, 1, "c1")
        two = _preprocess_seconds(tmp, toy, 2, "c2")
    return [(f"preprocess {n} examples: --workers 2 vs 1 (throughput)", f"{n / two:.0f}/s", f"{n / one:.0f}/s",
             f"{one / two:.2f}x")]


PEAK = """
import resource, sys
from mmcli.config import DataConfig
from mmcli.data.preprocess import preprocess
preprocess(sys.argv[1], DataConfig(), sys.argv[2])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def memory() -> list[Row]:
    peaks = {}
    with tempfile.TemporaryDirectory(prefix="mmcli-bench-") as tmp:
        for n in (N // 2, 5 * N):
            toy = _toy(tmp, n, f"toy{n}")
            out = subprocess.run([sys.executable, "-c", PEAK, toy, os.path.join(tmp, f"c{n}")], check=True,
                                 capture_output=True, text=True, env=_env(tmp))
            peaks[n] = int(out.stdout.strip().splitlines()[-1]) / 1024  # KiB -> MiB
    small, big = peaks[N // 2], peaks[5 * N]
    return [(f"preprocess peak memory: {5 * N} vs {N // 2} examples (target < 1.3)", f"{big:.0f} MiB", f"{small:.0f} MiB",
             f"{big / small:.2f}")]


CACHE_PEAK = """
import sys, torch
from dataclasses import replace
from mmcli.config import from_dict
from mmcli.data.dataset import iterate
from mmcli.encoders import ENCODERS, ModalitySpec
from mmcli.pipeline import prepare_training
from mmcli.training import features
from mmcli.training.loop import eval_batch_size

def joined_then_converted(encoder, name, part, config, device):  # the cache before 2026-12-07
    raws, masks = [], []
    for batch in iterate(part, config.data, eval_batch_size(config, part.kinds)):
        raw, mask = encoder.features(batch.inputs[name].to(device), batch.lengths.get(name))
        raws.append(raw.float().cpu())
        masks.append(mask.cpu())
    raw = torch.cat(raws)
    return raw.to(torch.float16), torch.cat(masks)

REPEAT = 24000

def status(key):
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(key + ":"))

toy, cache, how = sys.argv[1:4]
torch.set_num_threads(2)
config = from_dict({"data": {"manifest": toy + "/manifest.csv"}, "model": {"modalities": ["image"]}})
data = prepare_training(config, cache_dir=cache, report=False)
one = data.part("train")
k = REPEAT // len(one)  # the training split many times over: a split whose features fill memory
part = replace(one, ids=one.ids * k, inputs={"image": one.inputs["image"].repeat(k, 1, 1, 1)}, lengths={},
               present={"image": one.present["image"].repeat(k)}, labels=None, sources={})
encoder = ENCODERS.get("image.cnn")(ModalitySpec("image", "image", image_size=64), 8).eval()
compute = features._compute if how == "now" else joined_then_converted
with torch.no_grad():
    compute(encoder, "image", one, config, torch.device("cpu"))  # torch's own buffers, allocated once
    with open("/proc/self/clear_refs", "w") as handle:  # the peak (VmHWM) from here on
        handle.write("5")
    before = status("VmRSS")
    raw, mask = compute(encoder, "image", part, config, torch.device("cpu"))
print(status("VmHWM") - before, raw.nelement() * raw.element_size() // 1024)
"""


def cache_memory() -> list[Row]:
    """The frozen-feature cache: the memory that computing a split's features takes above
    what the process held before, as a multiple of the stored (float16) features, for the
    cache as it is and as it was (float32 batches joined, then converted): the small CNN,
    frozen, over the toy training split repeated to 24,000 images (16 tokens of 128
    features each, 94 MiB in float16)."""
    n = N
    with tempfile.TemporaryDirectory(prefix="mmcli-bench-") as tmp:
        toy = _toy(tmp, n)
        peaks = {}
        for how in ("now", "before"):
            out = subprocess.run([sys.executable, "-c", CACHE_PEAK, toy, os.path.join(tmp, "cache"), how], check=True,
                                 capture_output=True, text=True, env=_env(tmp))
            extra, size = (int(v) for v in out.stdout.strip().splitlines()[-1].split())
            peaks[how] = extra / size
    return [("feature cache: peak memory / stored features (24,000 images; lower is better)",
             f"{peaks['now']:.1f}x", f"{peaks['before']:.1f}x", f"{peaks['before'] / peaks['now']:.1f}x less")]


def _prepared(tmp: str, n: int):
    from mmcli.config import from_dict
    from mmcli.pipeline import prepare_training

    toy = _toy(tmp, n)
    config = from_dict({"data": {"manifest": os.path.join(toy, "manifest.csv")}, "train": {"batch_size": 64, "epochs": 3}})
    return config, prepare_training(config, cache_dir=os.path.join(tmp, "cache")), toy


def median_seconds(fn, repeats: int = 3) -> float:
    """The median wall time of `repeats` calls of `fn`."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _mmcli_epoch(config, data):
    import torch

    from mmcli.models import build
    from mmcli.training.loop import NoProgress, Stepper, train_one_epoch
    from mmcli.training.setup import make_optimizer

    task, train = data.task, data.part("train")
    torch.manual_seed(0)
    model = build(config, data.specs, task.n_outputs(data.labels))
    optimizer, scheduler = make_optimizer(model, config.train, 100)
    stepper = Stepper(optimizer, scheduler, config, torch.device("cpu"))
    generator = torch.Generator().manual_seed(0)
    return lambda: train_one_epoch(model, task, train, config, stepper, torch.device("cpu"), generator, NoProgress())


def cache() -> list[Row]:
    from mmcli.data import decode

    with tempfile.TemporaryDirectory(prefix="mmcli-bench-") as tmp:
        config, data, toy = _prepared(tmp, N)
        epoch = _mmcli_epoch(config, data)
        epoch()
        cached = median_seconds(epoch)
        train_rows = [i for i, s in enumerate(data.splits) if s == "train"]
        with open(os.path.join(toy, "manifest.csv")) as handle:
            rows = list(csv.DictReader(handle))

        def decode_all() -> None:
            for i in train_rows:
                decode.decode_image(Path(toy) / rows[i]["image"], data.config.data)  # its limits derived
                decode.decode_audio(Path(toy) / rows[i]["audio"], data.config.data)

        raw = cached + median_seconds(decode_all, 1)
    return [("training epoch: over the cache vs decoding the files each epoch", f"{cached:.2f} s", f"{raw:.2f} s",
             f"{raw / cached:.1f}x")]


def _hand_batches(train, config):
    """Two ways a user would feed a hand-written loop from the same cache: `stored`
    slices the stored tensors (images uint8, audio float16 dB) and normalises each batch
    as it goes; `preloaded` holds the whole split normalised in memory (4 bytes a pixel)
    and only slices. Text and audio are cut to the split's longest example."""
    import torch

    from mmcli.data.dataset import make_batch

    width = {m: int(v.max()) for m, v in train.lengths.items()}
    inputs = {m: (t[..., :width[m]] if m in width else t) for m, t in train.inputs.items()}
    mean = torch.tensor(config.data.image_mean).view(1, -1, 1, 1)
    std = torch.tensor(config.data.image_std).view(1, -1, 1, 1)

    def stored(idx):
        batch = {"index": idx, "label": train.labels[idx], "mask": {m: p[idx] for m, p in train.present.items()},
                 "lengths": {m: v[idx] for m, v in train.lengths.items()}}
        for m, t in inputs.items():
            x = t[idx]
            if train.kinds[m] == "image":
                x = (x.float() / 255.0 - mean) / std
            elif train.kinds[m] == "audio":
                x = (x.float() + 40.0) / 40.0  # mmcli's dB scaling, so that the model sees the same values
            batch[m] = x
        return batch

    everything = make_batch(train, torch.arange(len(train)), config.data)

    def preloaded(idx):
        return {k: ({m: t[idx] for m, t in v.items()} if isinstance(v, dict) else v[idx]) for k, v in everything.items()}

    return stored, preloaded


def loop() -> list[Row]:
    """mmcli's train_one_epoch against the loop a user would write by hand: the same
    model, cache and batch size, AdamW (fused, as mmcli's), cross-entropy, no gradient
    clipping, no schedule, no checks; fed from the stored tensors (the target's
    comparison) and, second row, from the whole split held normalised in memory."""
    import torch

    from mmcli.models import build

    with tempfile.TemporaryDirectory(prefix="mmcli-bench-") as tmp:
        config, data, _ = _prepared(tmp, 2 * N)
        epochs = {"ours": _mmcli_epoch(config, data)}
        train = data.part("train")
        torch.manual_seed(0)
        model = build(config, data.specs, len(data.labels))
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.train.lr, fused=True)
        generator = torch.Generator().manual_seed(0)

        def hand(make) -> None:
            model.train()
            order = torch.randperm(len(train), generator=generator)
            for start in range(0, len(train), config.train.batch_size):
                batch = make(order[start:start + config.train.batch_size])
                loss = torch.nn.functional.cross_entropy(model(batch), batch["label"])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()

        stored, preloaded = _hand_batches(train, config)
        epochs.update(stored=lambda: hand(stored), preloaded=lambda: hand(preloaded))
        for epoch in epochs.values():  # warm-up
            epoch()
        times: dict[str, list[float]] = {name: [] for name in epochs}
        for k in range(11):  # in turn, the order rotating, so that the machine's drift hits all alike
            names = list(epochs)[k % 3:] + list(epochs)[:k % 3]
            for name in names:
                times[name].append(median_seconds(epochs[name], 1))
    med = {name: statistics.median(t) for name, t in times.items()}
    ratio = {name: statistics.median(x / y for x, y in zip(times["ours"], times[name])) for name in ("stored", "preloaded")}
    return [("mmcli train epoch vs a minimal PyTorch loop (target <= 1.05)", f"{med['ours']:.3f} s",
             f"{med['stored']:.3f} s", f"{ratio['stored']:.2f}"),
            ("same, the loop holding the split normalised in memory", f"{med['ours']:.3f} s", f"{med['preloaded']:.3f} s",
             f"{ratio['preloaded']:.2f}")]


def predict() -> list[Row]:
    from mmcli.inference import predict_records, records_from_manifest
    from mmcli.pipeline import load_run

    with tempfile.TemporaryDirectory(prefix="mmcli-bench-") as tmp:
        toy = _toy(tmp, N)
        run = os.path.join(tmp, "run")
        subprocess.run([sys.executable, "-m", "mmcli", "train", toy, "--epochs", "1", "--out", run, "--quiet"],
                       check=True, env=_env(tmp), stdout=subprocess.DEVNULL)
        loaded = load_run(Path(run))
        records = records_from_manifest(loaded, Path(toy) / "manifest.csv")[:200]
        batched = median_seconds(lambda: predict_records(loaded, records, device="cpu"))
        single = median_seconds(lambda: [predict_records(loaded, [r], device="cpu") for r in records], 1)
    n = len(records)
    return [(f"predict {n} examples: in batches vs one at a time (throughput)", f"{n / batched:.0f}/s",
             f"{n / single:.0f}/s", f"{single / batched:.1f}x")]


BENCHMARKS = {"preprocess": preprocess, "memory": memory, "cache_memory": cache_memory, "cache": cache, "loop": loop, "predict": predict}

if __name__ == "__main__":
    for name in sys.argv[1:] or BENCHMARKS:
        print(json.dumps(BENCHMARKS[name]()))
