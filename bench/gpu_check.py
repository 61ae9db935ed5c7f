"""One prepared check for a machine with a GPU (`python bench/gpu_check.py`).

1. A bf16 training step under autocast on the device: the loss is finite and close to the
   fp32 step's on the same batch, and the step is timed.
2. The loader: the time to assemble a batch from the preprocessed cache in the
   training process (`--loader-workers 0`), and the time per batch of a whole epoch
   from mmcli's loader with worker processes and pinned memory (`--loader-workers`,
   default 4, what `mmcli train` uses on a GPU), each against the model's step time
   on the device. A ratio under 1 means the loader keeps the device busy.

Without CUDA it says so and stops; `--device cpu` runs the same checks on the CPU (how
the test suite checks this script). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile

from scale import median_seconds  # bench/scale.py, beside this file


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--n", type=int, default=600, help="toy examples")
    parser.add_argument("--loader-workers", type=int, default=4, help="worker processes of the loader check")
    args = parser.parse_args(argv)
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(json.dumps({"device": args.device, "available": False, "note": "no CUDA device: nothing checked"}))
        return 0
    from mmcli.config import from_dict
    from mmcli.data.dataset import iterate
    from mmcli.data.toy import make_toy
    from mmcli.models import build
    from mmcli.pipeline import prepare_training
    from mmcli.data.loader import to_device
    from mmcli.training.loop import autocast

    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        manifest = make_toy(f"{tmp}/toy", n=args.n, seed=0)
        config = from_dict({"data": {"manifest": str(manifest)}, "train": {"batch_size": args.batch_size}})
        data = prepare_training(config, cache_dir=f"{tmp}/cache")
    task = data.task
    train = data.part("train")
    torch.manual_seed(0)
    model = build(config, data.specs, task.n_outputs(data.labels)).to(device)
    batch = to_device(next(iterate(train, config.data, args.batch_size)), device)
    losses = {}
    for precision in ("fp32", "bf16"):
        config.train.precision = precision
        with torch.no_grad(), autocast(config, device):
            losses[precision] = float(model.loss(batch, task))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step() -> None:
        with autocast(config, device):
            loss = model.loss(batch, task)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    step()  # warm-up
    step_s = median_seconds(step, 10)
    load_s = median_seconds(lambda: to_device(next(iter(iterate(train, config.data, args.batch_size))), device), 10)
    loader_s = _loader_seconds(train, config, args, device)
    report = {"device": str(device), "available": True,
              "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
              "bf16_loss": round(losses["bf16"], 4), "fp32_loss": round(losses["fp32"], 4),
              "bf16_vs_fp32": round(abs(losses["bf16"] - losses["fp32"]) / losses["fp32"], 4),
              "bf16_step_ms": round(step_s * 1000, 2), "batch_load_ms": round(load_s * 1000, 2),
              "load_over_step": round(load_s / step_s, 3), "loader_workers": args.loader_workers,
              "loader_batch_ms": round(loader_s * 1000, 2), "loader_over_step": round(loader_s / step_s, 3)}
    print(json.dumps(report))
    ok = torch.isfinite(torch.tensor(losses["bf16"])) and report["bf16_vs_fp32"] < 0.05
    return 0 if ok else 1


def _loader_seconds(train, config, args, device) -> float:
    """Seconds per batch of a whole epoch from mmcli's loader (its workers already started
    by a first epoch), as the training loop gets them: on the device, normalised."""
    import time

    import torch

    from mmcli.data.loader import Loader

    loader = Loader(train, config.data, args.batch_size, shuffle=True, generator=torch.Generator().manual_seed(0),
                    workers=args.loader_workers, pin_memory=device.type == "cuda", device=device)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        for _batch in loader:  # on the device, normalised there
            pass
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) / len(loader))
    loader.close()
    return min(times[1:])  # the first epoch starts the workers


if __name__ == "__main__":
    sys.exit(main())
