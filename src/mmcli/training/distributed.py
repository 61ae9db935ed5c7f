"""Distributed data-parallel training on `torch.distributed`, started by torchrun.

`mmcli train --nproc N` starts N copies of itself through torchrun's launcher
(`python -m torch.distributed.run --standalone`); `torchrun ... -m mmcli train ...` does
the same by hand, across nodes through torchrun's rendezvous. Each process reads
RANK/WORLD_SIZE/LOCAL_RANK from the environment torchrun sets, joins the process group
(`nccl` on CUDA, `gloo` otherwise), and trains a DistributedDataParallel copy of the
model on its share of every global batch (`train.batch_size` examples split across the
ranks), so the gradients, averaged by DDP, are those of the global batch. The shuffling
order and the model's initial weights are the same on every rank; dropout and other
randomness are seeded with seed + rank. Every rank scores the whole validation split
(the same weights give the same scores, so all ranks stop at the same epoch); the
training loss is averaged across ranks. Only rank 0 writes the run folder: the other
ranks work in a temporary folder that is removed at the end.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:  # pragma: no cover
    from mmcli.data.dataset import Batch


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def world() -> World:
    """This process's place, from the variables torchrun sets (one process: rank 0 of 1)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    return World(int(os.environ.get("RANK", "0")), size, int(os.environ.get("LOCAL_RANK", "0")))


def init(device_name: str) -> torch.device:
    """Join the process group; the device of this rank."""
    import torch.distributed as dist

    from mmcli.training.setup import pick_device

    w = world()
    device = pick_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", w.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return device


def shard(index: torch.Tensor, w: World) -> torch.Tensor:
    """This rank's part of a global batch; never empty (DDP needs a step on every rank)."""
    if not w.active:
        return index
    part = index[w.rank::w.size]
    return part if len(part) else index[:1]


def mean_across(value: float, w: World) -> float:
    if not w.active:
        return value
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item()) / w.size


def gather_ints(value: int, w: World) -> list[int]:
    if not w.active:
        return [value]
    import torch.distributed as dist

    out: list = [None] * w.size
    dist.all_gather_object(out, value)
    return [int(v) for v in out]


class LossOf(torch.nn.Module):
    """model.loss(batch, task) as a forward pass, so that DDP prepares its gradient
    all-reduce on each step (DDP syncs only what goes through its forward)."""

    def __init__(self, model: torch.nn.Module, task):
        super().__init__()
        self.model: Any = model  # a mmcli Model: its loss() is called
        self.task = task

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.model.loss(batch, self.task)


def wrap(model: torch.nn.Module, task, device: torch.device):
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    # a pretrained text model's pooler is the one part that trains but never takes part
    unused = any(".pooler." in name for name, p in model.named_parameters() if p.requires_grad)
    return DistributedDataParallel(LossOf(model, task), device_ids=ids, find_unused_parameters=unused)


def finish() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
