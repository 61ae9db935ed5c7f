"""Seeds, devices, optimizer and learning-rate schedule."""

from __future__ import annotations

import math
import random

import numpy as np
import torch

from mmcli.config import TrainConfig
from mmcli.errors import UsageError


def seed_everything(seed: int, deterministic: bool = False) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def pick_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: CUDA is not available on this machine")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UsageError("--device mps: MPS is not available on this machine")
    try:
        return torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device {name}: not a device (use auto, cpu, cuda or mps)") from None


# The training budget when train.epochs is not set: enough epochs for about BUDGET_STEPS
# optimizer steps, within [MIN_EPOCHS, MAX_EPOCHS]. Measured on real sets (docs/results.md,
# "Defaults"): 12 epochs left mdi-icons' name and image models 2 points short of where 30
# take them; AV-MNIST's 120 steps an epoch reach their best within 13. The cap keeps a
# tiny set from training for hundreds of epochs.
BUDGET_STEPS, MIN_EPOCHS, MAX_EPOCHS = 1500, 12, 30
# A run with a derived budget that is still improving on validation when its learning rate
# has decayed (early stopping has not ended it) trains another cycle of the same epochs,
# from a warm restart (SGDR, Loshchilov and Hutter, 2017), at most MAX_CYCLES in all:
# mdi-icons' image model with crops stood at 53 % after 30 epochs, 61 % after 100.
MAX_CYCLES = 3


def budget(n_train: int, cfg: TrainConfig, max_epochs: int | None = None) -> tuple[int, int]:
    """(epochs, patience) for a training split of `n_train` examples: the set values, or
    derived ones (at most `max_epochs`, by default MAX_EPOCHS; a task may allow more). Early
    stopping waits a quarter of the budget (at least 5 epochs): a small set's validation
    metric is noisy from epoch to epoch."""
    steps = max(1, math.ceil(n_train / (cfg.batch_size * cfg.accumulate)))
    epochs = cfg.epochs or min(max_epochs or MAX_EPOCHS, max(MIN_EPOCHS, math.ceil(BUDGET_STEPS / steps)))
    patience = cfg.patience if cfg.patience is not None else max(5, epochs // 4)
    return epochs, patience


def stop_floor(epochs: int, cfg: TrainConfig) -> int:
    """The first epoch after which early stopping may end a run: the set `min_epochs`, or
    the epoch where the cosine decay has halved the learning rate. A model often sits on a
    validation plateau while the rate is high and improves as it falls (the toy set's
    image model: 20-24 % for ten epochs, then 38 %); judged on a small, noisy validation
    split before that, it was stopped half-trained."""
    if cfg.min_epochs is not None:
        return min(cfg.min_epochs, epochs)
    warmup = min(float(cfg.warmup_epochs), float(epochs))
    return min(epochs, math.ceil(warmup + (epochs - warmup) / 2))


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig, steps_per_epoch: int):
    """AdamW (no weight decay on biases and norms) with linear warm-up then cosine decay over
    `cfg.epochs`, begun again for each further cycle (`another_cycle`).
    Parameters that start trained (`model.trained_prefixes`: a warm start, pretrained
    weights) learn at `cfg.trained_lr_scale` times the learning rate."""
    trained = tuple(getattr(model, "trained_prefixes", ())) if cfg.trained_lr_scale != 1.0 else ()  # a bare module: none
    groups: dict[tuple[bool, bool], list] = {(True, False): [], (False, False): []}  # the order checkpoints hold
    devices = set()
    for name, p in model.named_parameters():
        devices.add(p.device.type)
        if p.requires_grad:
            groups.setdefault((p.dim() > 1, bool(trained) and name.startswith(trained)), []).append(p)
    optimizer = torch.optim.AdamW(
        [{"params": params, "weight_decay": cfg.weight_decay if decays else 0.0,
          "lr": cfg.lr * (cfg.trained_lr_scale if starts_trained else 1.0)}
         for (decays, starts_trained), params in groups.items()], lr=cfg.lr,
        fused=devices <= {"cpu", "cuda"} or None,  # one kernel for all parameters, where torch has it
    )
    assert cfg.epochs is not None, "the budget is derived before the optimizer is made"
    total = max(1, cfg.epochs * steps_per_epoch)  # one cycle's steps; another cycle restarts the schedule
    warmup = min(total - 1, int(cfg.warmup_epochs * steps_per_epoch))

    def factor(step: int) -> float:
        step = step % total if (cfg.max_cycles or 1) > 1 else step
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
