"""Batches for training and scoring, assembled in this process or by worker processes.

`Loader` is what the training loop iterates once per epoch. Each epoch the batch order
is drawn here, in the training process, from the run's generator (shuffled, or weighted
with replacement). Each batch's rows are then sliced from the memory-mapped cache
(`gather_batch`: images still uint8, audio float16) either right here (`workers=0`) or
by `workers` processes of torch's DataLoader, which keep `prefetch` batches each ready
ahead of the model and stay alive from epoch to epoch (persistent). The batch is copied
to the device (from pinned, page-locked memory on a GPU, so that the copy can overlap
the step) and only there normalised (`finish_batch`): a GPU does that in no time, and the
copy moves a quarter of the bytes of float32 images. Since the order never depends on
the workers, the batches are the same, in the same order, with any number of workers.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any, Callable, Iterator

import torch

from mmcli.config import DataConfig
from mmcli.data.dataset import Batch, Encoded, batch_order, finish_batch, gather_batch

AUTO_WORKERS = 4  # loader workers with a GPU, when train.loader_workers is not set


def auto_workers(requested: int | None, device: torch.device) -> int:
    """train.loader_workers, or by default: none on the CPU (the model needs the cores),
    up to AUTO_WORKERS on a GPU, leaving one core to the training process."""
    if requested is not None:
        workers = requested
    elif device.type != "cuda":
        workers = 0
    else:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        workers = max(0, min(AUTO_WORKERS, cores - 1))
    return workers if workers == 0 or sockets_fit() else 0


SOCKET_PATH_MAX = 103 if sys.platform == "darwin" else 107  # bytes of an AF_UNIX address
SHORT_TEMP = ("/tmp", "/var/tmp", "/usr/tmp")
_TEMP_LOCK = threading.Lock()
_TEMP_SHORTENED = False  # once per process: multiprocessing keeps the folder it made


def sockets_fit() -> bool:
    """Whether loader workers can hand this process their batches; if not, say so.

    torch passes a tensor between processes as a file descriptor, sent over a Unix socket
    that multiprocessing opens at TMPDIR/pymp-XXXXXXXX/listener-XXXXXXXX. Past the bytes
    an AF_UNIX address holds (a TMPDIR of more than 75 characters on Linux), that socket
    failed in a background thread and training waited forever for its first batch. So
    multiprocessing's folder goes to a short temporary folder instead (Python 3.12 does the
    same); where none fits, the batches are assembled in this process.
    """
    global _TEMP_SHORTENED
    import logging
    import tempfile
    from multiprocessing import util

    def fits(folder: str, suffix: str) -> bool:
        return len(os.fsencode(os.path.join(folder, suffix))) <= SOCKET_PATH_MAX

    if sys.platform == "win32":
        return True
    with _TEMP_LOCK:  # tempfile's folder is the process's: changed for the moment, one thread at a time
        if not _TEMP_SHORTENED and not fits(tempfile.gettempdir(), "pymp-XXXXXXXX/listener-XXXXXXXX"):
            short = [d for d in SHORT_TEMP if os.path.isdir(d) and os.access(d, os.W_OK | os.X_OK)]
            before = tempfile.tempdir
            try:  # multiprocessing makes its folder once, under tempfile's, and keeps it
                tempfile.tempdir = short[0] if short else before
                util.get_temp_dir()
            finally:
                tempfile.tempdir = before
            _TEMP_SHORTENED = True
    if fits(util.get_temp_dir(), "listener-XXXXXXXX"):
        return True
    logging.getLogger("mmcli").warning(
        "the temporary folder %s is too long a path for the Unix sockets that loader workers hand their batches "
        "through: the batches are assembled in the training process instead; set TMPDIR to a shorter folder to use "
        "train.loader_workers", tempfile.gettempdir())
    return False


def to_device(batch: Batch, device: torch.device | None) -> Batch:
    """The batch's tensors on `device` (asynchronously from pinned memory)."""
    if device is None or device.type == "cpu":
        return batch
    return batch.map(lambda t: t.to(device, non_blocking=True))


ALIGN = 16  # bytes: every tensor of a packed batch starts at a multiple of this


def pack(batch: Batch | dict) -> tuple[torch.Tensor, list]:
    """A batch's tensors as one byte buffer and where each lies in it. A worker sends one
    buffer instead of a dozen tensors (each tensor sent costs a shared-memory segment,
    about 0.35 ms on both sides), and a GPU gets one copy per batch."""
    layout, parts, offset = [], [], 0
    for key, sub, tensor in Batch.of(batch).tensors():
        raw = tensor.contiguous().view(-1).view(torch.uint8)
        pad = -offset % ALIGN
        if pad:
            parts.append(torch.zeros(pad, dtype=torch.uint8))
        offset += pad
        layout.append((key, sub, str(tensor.dtype).removeprefix("torch."), tuple(tensor.shape), offset, raw.numel()))
        parts.append(raw)
        offset += raw.numel()
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.uint8), layout


def unpack(buffer: torch.Tensor, layout: list) -> Batch:
    """The batch of `pack`, as views of `buffer` (wherever it is) without copies."""
    return Batch.from_tensors((key, sub, buffer[offset:offset + size].view(getattr(torch, dtype)).view(shape))
                              for key, sub, dtype, shape, offset, size in layout)


class _Batches(torch.utils.data.Dataset):
    """dataset[index tensor] is that batch, gathered and packed (what each worker computes)."""

    def __init__(self, data: Encoded) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: torch.Tensor) -> tuple[torch.Tensor, list]:
        return pack(gather_batch(self.data, index))


class _Order(torch.utils.data.Sampler):
    """Yields each batch's indices; every pass draws a new order from the generator."""

    def __init__(self, n: int, batch_size: int, **order) -> None:
        self.n, self.batch_size, self.order = n, batch_size, order

    def __iter__(self) -> Iterator[torch.Tensor]:
        return batch_order(self.n, self.batch_size, **self.order)

    def __len__(self) -> int:
        return (self.n + self.batch_size - 1) // self.batch_size


def _keep(packed: Any) -> Any:
    return packed  # no collation: a worker's batch is already whole


class Loader:
    """Iterate it once per epoch for that epoch's batches (see the module's docstring)."""

    def __init__(self, data: Encoded, config: DataConfig, batch_size: int, *, shuffle: bool = False,
                 generator: torch.Generator | None = None, weights: torch.Tensor | None = None,
                 shard: Callable | None = None, workers: int = 0, prefetch: int = 2, pin_memory: bool = False,
                 device: torch.device | None = None, degrade: Callable[[Batch], Batch] | None = None) -> None:
        self.data, self.config, self.device, self.degrade = data, config, device, degrade
        self.sampler = _Order(len(data), batch_size, shuffle=shuffle, generator=generator, weights=weights, shard=shard)
        self._loader = None
        if workers > 0 or pin_memory:
            self._loader = torch.utils.data.DataLoader(
                _Batches(data), batch_size=None, sampler=self.sampler, collate_fn=_keep,
                num_workers=workers, pin_memory=pin_memory, persistent_workers=workers > 0,
                prefetch_factor=prefetch if workers > 0 else None,
                generator=torch.Generator().manual_seed(0))  # its worker seeds: never from torch's global RNG

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[Batch]:
        """Each batch on `device`, normalised."""
        if self._loader is None:
            gathered = (to_device(self._degraded(gather_batch(self.data, index)), self.device) for index in self.sampler)
        elif self.degrade is not None:  # degraded on the CPU, where the corruptions draw, then moved
            gathered = (to_device(self._degraded(unpack(buffer, layout)), self.device) for buffer, layout in self._loader)
        else:  # one buffer per batch, pinned on a GPU: one copy to the device
            gathered = (unpack(buffer if self.device is None else buffer.to(self.device, non_blocking=True), layout)
                        for buffer, layout in self._loader)
        for batch in gathered:
            yield finish_batch(batch, self.data.kinds, self.config)

    def _degraded(self, batch: Batch) -> Batch:
        """The training batch with train.corrupt applied (mmcli.training.degrade), before normalising."""
        return batch if self.degrade is None else self.degrade(batch)

    def close(self) -> None:
        """Let the worker processes go (DataLoader stops them when it is collected);
        later passes assemble the batches in this process."""
        self._loader = None
