"""The training loop, split as `train_one_epoch`, `predict_logits` and `fit`.

Early stopping watches the validation metric; the best and the last weights are saved
as `.safetensors` (atomically) with `metrics.jsonl` one line per epoch.
"""

from __future__ import annotations

import json
import math
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from mmcli import runs
from mmcli.config import Config
from mmcli.data.dataset import Encoded, n_batches
from mmcli.data.loader import Loader
from mmcli.errors import ConfigError, RunFailed, writing
from mmcli.training.setup import make_optimizer, pick_device
from mmcli.training.stopping import another_cycle, better, log_cycle, loss_fell, stops, tie_won_on_loss
from mmcli.heads.base import TaskHead
from mmcli.models import Model


class FitProgress(Protocol):
    def epoch_start(self, epoch: int, epochs: int, batches: int) -> None: ...
    def batch_end(self, loss: float) -> None: ...
    def epoch_end(self, record: dict[str, Any]) -> None: ...
    def cycle_start(self, last: int, end: int) -> None: ...  # another learning-rate cycle, after epoch `last`


class NoProgress:
    def epoch_start(self, epoch: int, epochs: int, batches: int) -> None:
        pass

    def cycle_start(self, last: int, end: int) -> None:
        log_cycle(last, end)

    def batch_end(self, loss: float) -> None:
        pass

    def epoch_end(self, record: dict[str, Any]) -> None:
        pass


@dataclass
class FitResult:
    best_epoch: int
    best_metric: float | None
    metric: str
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    examples_per_rank: list[int] = field(default_factory=list)  # training examples each process stepped on


def autocast(config: Config, device: torch.device):
    """Mixed precision through torch.autocast (fp32: none)."""
    import contextlib

    if config.train.precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if config.train.precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


class Stepper:
    """The optimizer and its schedule, stepped once every `train.accumulate` batches, with a
    gradient scaler for fp16 (a pass-through otherwise)."""

    def __init__(self, optimizer, scheduler, config: Config, device: torch.device, world=None, ddp=None):
        from mmcli.training.distributed import World

        self.optimizer, self.scheduler = optimizer, scheduler
        self.world, self.ddp = world or World(), ddp  # distributed training: this rank, the DDP wrapper
        self.seen = 0  # training examples this process has stepped on
        self.accumulate, self.clip = config.train.accumulate, config.train.grad_clip
        self.scaler = torch.amp.GradScaler(device.type, enabled=config.train.precision == "fp16")
        self._params: list[torch.Tensor] | None = None

    def backward(self, model, loss: torch.Tensor, index: int, last: bool) -> None:
        self.scaler.scale(loss / self.accumulate if self.accumulate > 1 else loss).backward()
        if (index + 1) % self.accumulate and not last:
            return
        if self.clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self._clipped(), self.clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        inner = model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
        head = inner.head if isinstance(inner, Model) else None
        if isinstance(head, TaskHead):  # retrieval: clamp the logit scale, as OpenCLIP does
            head.after_step()

    def _clipped(self) -> list[torch.Tensor]:
        """The optimizer's parameters (listed once: walking the modules for them took about
        0.4 ms a step)."""
        if self._params is None:
            self._params = [p for group in self.optimizer.param_groups for p in group["params"]]
        return self._params

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])


def train_one_epoch(model, task, data: Encoded, config: Config, stepper: Stepper, device,
                    generator: torch.Generator, progress: FitProgress, weights: torch.Tensor | None = None,
                    loader: Loader | None = None) -> float:
    """One pass over `loader` (by default, batches of `data` assembled in this process)."""
    from mmcli.training.distributed import mean_across

    (stepper.ddp or model).train()
    total, count = 0.0, 0
    loader = loader or train_loader(data, config, generator, weights, stepper.world, workers=0, device=device)
    batches = len(loader)
    stepper.optimizer.zero_grad(set_to_none=True)
    for i, batch in enumerate(loader):  # on the device, normalised
        with autocast(config, device):
            loss = stepper.ddp(batch) if stepper.ddp is not None else model.loss(batch, task)
        value = loss.item()  # one synchronisation per batch
        if not math.isfinite(value):
            raise RunFailed(f"the training loss became {value}; lower --lr (now {config.train.lr})")
        stepper.backward(model, loss, i, last=i == batches - 1)
        n = len(batch.index)
        total += value * n
        count += n
        progress.batch_end(value)
    stepper.seen += count
    return mean_across(total / max(1, count), stepper.world)


def train_loader(data: Encoded, config: Config, generator: torch.Generator, weights, world,
                 workers: int, pin_memory: bool = False, device: torch.device | None = None) -> Loader:
    """The shuffled (or weighted) batches of this process's share of each global batch."""
    from functools import partial

    from mmcli.training.degrade import train_corruption
    from mmcli.training.distributed import shard

    return Loader(data, config.data, config.train.batch_size, shuffle=True, generator=generator, weights=weights,
                  shard=partial(shard, w=world), workers=workers, prefetch=config.train.prefetch, pin_memory=pin_memory,
                  device=device, degrade=train_corruption(config, data.kinds, frozenset(data.features)))


@torch.no_grad()
def predict_logits(model, data: Encoded, config: Config, device: torch.device, loader: Loader | None = None) -> torch.Tensor:
    return predict_outputs(model, data, config, device, loader)[0]


@torch.no_grad()
def predict_outputs(model, data: Encoded, config: Config, device: torch.device,
                    loader: Loader | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Outputs [N, C] and, for fusions that weigh modalities, their weights [N, M]."""
    model.eval()
    outs, weights = [], []
    for batch in loader or Loader(data, config.data, eval_batch_size(config, data.kinds), device=device):
        with autocast(config, device):
            outs.append(model(batch).float().cpu())
        w = model.fusion.last_weights if model.fusion is not None else None
        if w is not None:
            weights.append(w.float().cpu())
    logits = torch.cat(outs) if outs else torch.empty(0)
    return logits, (torch.cat(weights) if weights and len(weights) == len(outs) else None)


def _blender(model, config: Config, val: Encoded):
    if not config.train.gradient_blending:
        return None
    if not len(model.aux_heads):
        raise ConfigError("train.gradient_blending needs two or more modalities (it weighs one head per modality)")
    if not len(val):
        raise ConfigError("train.gradient_blending needs a validation split (data.val_fraction > 0)")
    from mmcli.training.blending import GradientBlender

    return GradientBlender(["fused", *model.aux_heads])


CHECKPOINT = "checkpoint.pt"


def fit(model, task, train: Encoded, val: Encoded, config: Config, run_dir: Path, labels: list[str],
        generator: torch.Generator, progress: FitProgress | None = None, resume: dict | None = None,
        cache_dir: str | None = None) -> FitResult:
    """Train with early stopping. After every epoch the weights, optimizer, scheduler, random states
    and early-stopping counters go to checkpoint.pt (one file), so `resume`
    (that checkpoint, loaded) continues exactly where an interrupted run stopped."""
    from mmcli.training import distributed

    progress = progress or NoProgress()
    here = distributed.world()
    device = distributed.init(config.train.device) if here.active else pick_device(config.train.device)
    model.to(device)
    if here.active:  # the same shuffling (generator) on every rank; dropout and the like differ
        torch.manual_seed(config.train.seed + here.rank)
    start = time.monotonic()
    from mmcli.training.features import with_cached_features

    train, val = with_cached_features(model, [train, val], config, device, cache_dir)
    if config.train.compile:  # in place: the state dict keeps its names
        for encoder in model.encoders.values():
            encoder.compile()
    steps = n_batches(train, config.train.batch_size)
    optimizer, scheduler = make_optimizer(model, config.train, math.ceil(steps / config.train.accumulate))
    stepper = Stepper(optimizer, scheduler, config, device, here,
                      distributed.wrap(model, task, device) if here.active else None)
    metric = config.eval.metric
    result = FitResult(best_epoch=0, best_metric=None, metric=typing.cast(str, metric))  # set by _with_defaults
    blender = _blender(model, config, val)
    if blender is not None and here.active:
        raise ConfigError("train.gradient_blending does not run distributed (--nproc); train it in one process")
    if resume is not None:
        if blender is not None:
            raise ConfigError("--resume cannot continue a run trained with train.gradient_blending; train it again")
        stepper.load_state_dict(resume)
        torch.set_rng_state(resume["torch_rng"])
        generator.set_state(resume["generator"])
        result.best_epoch, result.best_metric = resume["best_epoch"], resume["best_metric"]
        result.history = _history(run_dir, resume["epoch"])
    loaders = _loaders(task, train, val, config, generator, here, device)
    logger = _logger(config, run_dir)
    try:
        _epochs(model, task, train, val, config, run_dir, labels, generator, progress, device, steps, stepper,
                metric, result, blender, loaders, logger, resume)
    finally:
        for loader in loaders:
            loader.close()
        if logger is not None:
            logger.close()
    result.seconds = time.monotonic() - start
    result.examples_per_rank = distributed.gather_ints(stepper.seen, here)
    return result


def _history(run_dir: Path, epochs: int) -> list[dict[str, Any]]:
    """metrics.jsonl up to the checkpoint's epoch; a line written after it is dropped."""
    path = run_dir / "metrics.jsonl"
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()] if path.is_file() else []
    kept = [r for r in lines if r.get("epoch", 0) <= epochs]
    runs.write_atomic(path, "".join(json.dumps(r) + "\n" for r in kept))
    return kept


def _save_checkpoint(run_dir: Path, epoch: int, stepper: Stepper, generator, result, stale: int, model) -> None:
    """Everything `--resume` needs, in one file written atomically: the weights too, since
    a kill between writing last.safetensors and this file would otherwise pair one
    epoch's weights with the previous epoch's optimizer and random states."""
    import io

    buffer = io.BytesIO()
    weights = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"epoch": epoch, "model": weights, **stepper.state_dict(),
                "torch_rng": torch.get_rng_state(), "generator": generator.get_state(),
                "best_epoch": result.best_epoch, "best_metric": result.best_metric, "stale": stale}, buffer)
    runs.write_atomic(run_dir / CHECKPOINT, buffer.getvalue())


def load_checkpoint(run_dir: Path) -> dict:
    """Only tensors and plain values: torch.load with weights_only=True never runs code."""
    from mmcli.errors import UsageError

    try:
        return torch.load(run_dir / CHECKPOINT, weights_only=True)
    except Exception as exc:  # a broken or foreign file
        raise UsageError(f"{run_dir / CHECKPOINT}: cannot read the checkpoint ({exc})") from None


def eval_batch_size(config: Config, kinds_of: dict[str, str]) -> int:
    """eval.batch_size examples, or as many fewer as one holds pictures (a clip's frames,
    each read by a per-frame encoder): a batch without gradients holds at most eval.batch_size
    pictures of any one modality (measured: 256 clips of 8 frames through a frozen
    MobileNetV2 at 224 px took more than 20 GiB)."""
    from mmcli import kinds

    most = max((kinds.get(k).pictures(config.data) for k in kinds_of.values()), default=1)
    return max(1, config.eval.batch_size // most)


def _loaders(task, train: Encoded, val: Encoded, config: Config, generator, world, device) -> tuple[Loader, Loader]:
    """The training and validation batches, by `train.loader_workers` processes (kept from
    epoch to epoch) and into pinned memory on a GPU (mmcli.data.loader)."""
    from mmcli.data.loader import auto_workers

    workers, pin = auto_workers(config.train.loader_workers, device), device.type == "cuda"
    return (train_loader(train, config, generator, _sample_weights(task, train, config), world, workers, pin, device),
            Loader(val, config.data, eval_batch_size(config, val.kinds), workers=workers if len(val) else 0,
                   prefetch=config.train.prefetch, pin_memory=pin, device=device))


def _sample_weights(task, train: Encoded, config: Config) -> torch.Tensor | None:
    if config.train.sampler != "weighted":
        return None
    if not task.has_classes:
        raise ConfigError(f"train.sampler=weighted needs a task with classes; {task.name} has none")
    return task.sample_weights(train.labels)


def _logger(config: Config, run_dir: Path):
    """TensorBoard's SummaryWriter (optional extra: pip install 'mmcli[tensorboard]')."""
    if config.train.logger != "tensorboard":
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError("--logger tensorboard needs the tensorboard package: pip install 'mmcli[tensorboard]'") from None
    return SummaryWriter(log_dir=str(run_dir / "tensorboard"))


def _epochs(model, task, train, val, config, run_dir, labels, generator, progress, device, steps, stepper,
            metric, result, blender, loaders, logger, resume=None) -> None:
    start, stale = time.monotonic(), (resume or {}).get("stale", 0)
    first = (resume or {}).get("epoch", 0) + 1
    cycle = typing.cast(int, config.train.epochs)
    end = cycle * max(1, math.ceil((first - 1) / cycle))  # the last epoch of the learning-rate cycle the run is in

    def more(epoch: int) -> bool:  # the cycle has ended, validation was still improving: one more
        last = result.history[-1].get(f"val_{metric}") if result.history else None  # NaN or none: no signal
        return another_cycle(config.train, epoch, stale, isinstance(last, (int, float)) and math.isfinite(last))

    if resume is not None and stops(config, first - 1, stale):
        return  # it had stopped early already (one that ended its last cycle does not enter the loop)
    epoch = first - 1
    while epoch < end or more(epoch):
        epoch += 1
        if epoch > end:
            end += cycle
            progress.cycle_start(epoch - 1, end)
        progress.epoch_start(epoch, end, steps)
        train_loss = train_one_epoch(model, task, train, config, stepper, device, generator, progress, loader=loaders[0])
        record: dict[str, Any] = {"epoch": epoch, "train_loss": train_loss, "lr": stepper.scheduler.get_last_lr()[0]}
        if len(val):
            scores = task.validation_score(predict_logits(model, val, config, device, loaders[1]), val, labels)
            record.update({f"val_{k}": v for k, v in scores.items() if isinstance(v, (int, float))})
        if blender is not None:
            record["blend_weights"] = blender.step(model, task, train, val, config, device)
        record["elapsed_s"] = round(time.monotonic() - start, 3)  # time fields end in _s: all else is reproducible
        value = record.get(f"val_{metric}")
        # without a validation split there is nothing to select on: the last epoch is "best"
        meta = {"epoch": epoch, "metric": f"val_{metric}" if value is not None else "none (no validation split)",
                "value": value}
        if value is None or better(task, metric, value, result.best_metric) or tie_won_on_loss(record, value, result):
            result.best_epoch, result.best_metric, stale = epoch, value, 0
            runs.save_weights(model, run_dir / "best.safetensors", meta)
        elif loss_fell(record, result.history):
            stale = 0  # not a better score, but a lower validation loss: still learning
        else:
            stale += 1
        runs.save_weights(model, run_dir / "last.safetensors", meta)
        with writing(run_dir / "metrics.jsonl"), open(run_dir / "metrics.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        result.history.append(record)
        _save_checkpoint(run_dir, epoch, stepper, generator, result, stale, model)
        progress.epoch_end(record)
        if logger is not None:  # metrics.jsonl stays the source of truth; this is a view of it
            for key, v in record.items():
                if key != "epoch" and isinstance(v, (int, float)) and not isinstance(v, bool):
                    logger.add_scalar(key.replace("_", "/", 1) if key.startswith(("val_", "train_")) else key, v, epoch)
            logger.flush()
        if value is not None and stops(config, epoch, stale):
            break
