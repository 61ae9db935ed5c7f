"""Streaming, resumable preprocessing: decoded rows go to disk chunk by chunk.

The rows that passed the cheap checks are cut into chunks of CHUNK rows, decoded in
order (by `workers` processes, each decoding whole chunks), and each chunk's tensors are
appended to one raw file per tensor in a partial entry `.KEY.partial` beside the cache
entry. After each chunk `progress.json` records how many chunks are on disk and the rows
that failed to decode, so memory holds only the chunks in flight, and a preprocess that
was interrupted (Ctrl-C, a kill) starts again at the first chunk not written. `finish`
drops the rows that failed (with `on_error: skip`) and writes the presence masks;
`publish` writes `table.json` and renames the partial entry into place.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from mmcli import kinds
from mmcli.config import DataConfig, ModalityConfig
from mmcli.data import decode
from mmcli.data.manifest import Manifest
from mmcli.data.table import Table, array_file, map_array, table_meta, write_array
from mmcli.errors import BadRow

CHUNK = 64  # rows per task: what a worker holds at a time
PROGRESS = "progress.json"
MAX_WARNINGS = 20  # decoder warnings logged per preprocess; a count of the rest follows
LOG = logging.getLogger("mmcli")


def partial_dir(folder: Path) -> Path:
    return folder.parent / f".{folder.name}.partial"


@contextlib.contextmanager
def building(folder: Path, wait: bool = True) -> Iterator[bool]:
    """One process at a time builds an entry: another one (a second command on the same
    data, compare's workers) waits here, then finds the entry made. The lock is the
    operating system's, so a killed process releases it. With `wait` False (cache clean),
    an entry being built is not waited for: the block gets False instead of the lock."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks
        yield True
        return
    locks = folder.parent.parent / "locks"  # beside tensors/, so that an entry's folder holds only entries
    locks.mkdir(parents=True, exist_ok=True)
    with open(locks / f"{folder.name}.lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _media(modalities: dict[str, ModalityConfig]) -> dict[str, ModalityConfig]:
    return {n: m for n, m in modalities.items() if kinds.get(m.kind).from_files}


def _arrays(name: str, kind: str) -> list[str]:
    """The arrays a modality's rows fill in a cache entry (its tensor, and lengths where its kind keeps them)."""
    return [name + suffix for suffix in kinds.get(kind).arrays()]


def decode_chunk(task: tuple[str, list[tuple[int, dict[str, str]]], dict[str, str], DataConfig]):
    """One chunk, in a worker: {tensor name: stacked tensor}, {row: [(modality, reason)]}
    for the rows that failed, and {row: [(modality, warning)]} for the decoders' warnings."""
    root, rows, kinds_of, config = task
    out: dict[str, list] = {}
    problems: dict[int, list[tuple[str, str]]] = {}
    notes: dict[int, list[tuple[str, str]]] = {}
    for i, cells in rows:
        for name, kind in kinds_of.items():
            value: Any = kinds.get(kind).blank(config)  # what a missing modality (data.missing=allow) keeps: its mask hides it
            if cells[name].strip():
                try:
                    *value, warned = kinds.get(kind).decode_cell(Path(root), cells[name], config)
                    notes.setdefault(i, []).extend((name, f"{cells[name]}: {w}") for w in warned)
                except decode.DecodeError as exc:
                    problems.setdefault(i, []).append((name, f"{cells[name]}: {exc}"))
            for array, part in zip(_arrays(name, kind), (value[0], torch.tensor(value[1]))):
                out.setdefault(array, []).append(part)
    return {k: torch.stack(v) for k, v in out.items()}, problems, {i: v for i, v in notes.items() if v}


def _chunks(manifest: Manifest, rows: list[int], media: dict[str, ModalityConfig], config: DataConfig, start: int):
    kinds_of = {n: m.kind for n, m in media.items()}
    for k in range(start * CHUNK, len(rows), CHUNK):
        part = [(i, {n: kinds.get(m.kind).field(manifest.rows[i], m) for n, m in media.items()}) for i in rows[k:k + CHUNK]]
        yield str(manifest.root), part, kinds_of, config


def _worker_init() -> None:
    """One thread per worker in every thread pool: torch's, and BLAS's (librosa's mel
    filters are a matrix product), whose threads otherwise spin against the other
    workers' for the same cores (measured: the product 50 times slower with 2 workers
    on 2 cores)."""
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    threadpool_limits(1)


def _decoded(tasks: Iterator, workers: int, names: set[str], config: DataConfig) -> Iterator:
    if workers <= 1:
        yield from map(decode_chunk, tasks)
        return
    decode.warm_up(names, config)  # before the fork: the workers start with the libraries loaded
    with ProcessPoolExecutor(max_workers=workers, initializer=_worker_init) as pool:
        yield from pool.map(decode_chunk, tasks)


def _resume(partial: Path, rows: list[int], names: list[str]) -> tuple[int, dict]:
    """Chunks already on disk (0: start over), and the problems recorded with them."""
    try:
        state = json.loads((partial / PROGRESS).read_text(encoding="utf-8"))
        if state["rows"] != rows or sorted(state["sizes"]) != sorted(names):
            raise ValueError("another run's partial entry")
        for name, size in state["sizes"].items():  # bytes written by a chunk that did not finish go
            with open(array_file(partial, name), "r+b") as handle:
                handle.truncate(size)
        return state["chunks"], {int(i): [tuple(p) for p in v] for i, v in state["problems"].items()}
    except (OSError, ValueError, KeyError, TypeError):
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        return 0, {}


def decode_into(partial: Path, manifest: Manifest, rows: list[int], modalities: dict[str, ModalityConfig],
                config: DataConfig, workers: int, progress: Callable[[int, int], None] | None) -> dict[int, list[BadRow]]:
    """Decode `rows`' files into `partial`, resuming a run that stopped; the rows that failed."""
    media = _media(modalities)
    names = [x for n, m in media.items() for x in _arrays(n, m.kind)]
    if not names:  # text and numbers only: nothing to decode
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        return {}
    done, problems = _resume(partial, rows, names)
    if done:
        LOG.info("resuming preprocessing at row %d of %d", min(done * CHUNK, len(rows)), len(rows))
    sizes = {n: array_file(partial, n).stat().st_size if array_file(partial, n).exists() else 0 for n in names}
    total = len(rows)
    columns = {n: m.column for n, m in media.items()}
    told = 0
    for k, (arrays, found, notes) in enumerate(_decoded(_chunks(manifest, rows, media, config, done), workers,
                                                               {m.kind for m in media.values()}, config), start=done):
        told = _tell_warnings(manifest, columns, notes, told)
        for name, tensor in arrays.items():
            with open(array_file(partial, name), "ab") as handle:
                handle.write(tensor.contiguous().numpy().tobytes())
                sizes[name] = handle.tell()
        problems.update(found)
        state = {"rows": rows, "chunks": k + 1, "sizes": sizes, "problems": {str(i): v for i, v in problems.items()}}
        tmp = partial / f"{PROGRESS}.tmp"
        tmp.write_text(json.dumps(state), encoding="utf-8")
        os.replace(tmp, partial / PROGRESS)
        if progress is not None:
            progress(min((k + 1) * CHUNK, total), total)
    if told > MAX_WARNINGS:
        LOG.warning("%s: %d more warnings of the decoders not shown", manifest.path.name, told - MAX_WARNINGS)
    return {i: [manifest.bad(i, columns[n], reason) for n, reason in v] for i, v in problems.items()}


def _tell_warnings(manifest: Manifest, columns: dict[str, str], notes: dict[int, list[tuple[str, str]]],
                   told: int) -> int:
    """Log the decoders' warnings as mmcli's own, each with its file, row and column (a
    library's warning names only its own source line); the first MAX_WARNINGS of a run."""
    for i in sorted(notes):
        for name, text in notes[i]:
            if told < MAX_WARNINGS:
                LOG.warning("%s", manifest.bad(i, columns[name], text))
            told += 1
    return told


def _shapes(modalities: dict[str, ModalityConfig], config: DataConfig) -> dict[str, tuple[str, list[int]]]:
    out = {}
    for name, m in _media(modalities).items():
        blank, _ = kinds.get(m.kind).blank(config)
        for suffix, (dtype, _dims) in kinds.get(m.kind).arrays().items():  # the input, then its lengths
            out[name + suffix] = (dtype, list(blank.shape) if not suffix else [])
    return out


def finish(partial: Path, rows: list[int], keep: list[int], modalities: dict[str, ModalityConfig],
           config: DataConfig) -> dict[str, torch.Tensor]:
    """The decoded tensors, mapped from `partial`, without the rows that failed to decode
    (their files are rewritten without them, a block at a time)."""
    position = {i: p for p, i in enumerate(rows)}
    out = {}
    for name, (dtype, row_shape) in _shapes(modalities, config).items():
        path = array_file(partial, name)
        if len(keep) != len(rows):
            full = map_array(path, dtype, [len(rows), *row_shape])
            kept = torch.tensor([position[i] for i in keep], dtype=torch.long)
            with open(partial / f"{name}.kept", "wb") as handle:
                for start in range(0, len(kept), 1024):
                    handle.write(full[kept[start:start + 1024]].contiguous().numpy().tobytes())
            del full
            os.replace(partial / f"{name}.kept", path)
        out[name] = map_array(path, dtype, [len(keep), *row_shape])
    return out


def publish(table: Table, folder: Path) -> None:
    """Write the presence masks and table.json into the partial entry, then rename it
    into place: a reader sees the whole entry or none."""
    partial = partial_dir(folder)
    arrays = {k: {"dtype": str(v.dtype).replace("torch.", ""), "shape": list(v.shape)} for k, v in table.tensors.items()}
    arrays.update({f"{k}.present": write_array(partial, f"{k}.present", v) for k, v in table.present.items()})
    (partial / "table.json").write_text(json.dumps(table_meta(table, arrays)), encoding="utf-8")
    (partial / PROGRESS).unlink(missing_ok=True)
    from mmcli.runs import open_up

    open_up(partial)
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(partial, folder)
