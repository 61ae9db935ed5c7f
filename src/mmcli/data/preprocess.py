"""manifest -> validated rows -> decoded tensors -> cached `Table`.

Every row is checked before any decoding, and every problem is reported at once (file,
row, column, reason). Decoding failures are collected the same way. With
`on_error: skip` bad rows are left out and written to `bad_rows.csv` in the cache entry.
"""

from __future__ import annotations

import csv
import logging
import os
import shutil
from pathlib import Path
from typing import Callable

import torch

from mmcli.config import DataConfig, ModalityConfig
from mmcli.data import cache, stream, tabular
from mmcli.data.manifest import Manifest, detect_modalities, read_manifest
from mmcli.data.table import Table, is_table, load_table
from mmcli.errors import BadRow, DataError

Progress = Callable[[int, int], None]
BUILTIN_PREFIX = "builtin:"

LOG = logging.getLogger("mmcli")


def resolve_source(data: str | Path | None, cache_root: Path) -> Path:
    """A path to a manifest or a cache folder; `None` or `builtin:toy` is the toy set,
    `builtin:toy-captions` its images paired with captions of what they show."""
    if data is None or str(data) in (f"{BUILTIN_PREFIX}toy", f"{BUILTIN_PREFIX}toy-captions"):
        from mmcli.data.builtin import toy_manifest
        from mmcli.data.toy import CAPTIONS

        manifest = toy_manifest(cache_root)
        return manifest.parent / CAPTIONS if str(data).endswith("-captions") else manifest
    return Path(data)


def preprocess(data: str | Path | None, config: DataConfig, cache_dir: str | Path | None = None,
               workers: int = 1, progress: Progress | None = None,
               require_label: bool = True) -> Table:
    """Load `data` (manifest, folder or cache) as a Table, through the cache."""
    root = cache.cache_root(cache_dir)
    source = resolve_source(data, root)
    if source.is_dir() and is_table(source):
        return load_table(source)
    manifest = read_manifest(source)
    modalities = detect_modalities(manifest, config)
    files = _referenced_files(manifest, modalities)
    key = cache.data_key(manifest.path, [f for f in files if f is not None], modalities, config, require_label)
    folder = cache.tensor_dir(root) / key
    if is_table(folder):
        LOG.info("cache hit: %s (%d files referenced) is in %s", manifest.path, len(files), folder)
        table = load_table(folder)
        table.source = _source_name(data)
        return table
    with stream.building(folder):
        if not is_table(folder):  # else another process made it while this one waited
            LOG.info("cache miss: decoding %d rows of %s into %s", len(manifest.rows), manifest.path, folder)
            table = build_table(manifest, modalities, config, workers, progress, require_label, folder)
            table.key = key
            table.source = _source_name(data)
            stream.publish(table, folder)
            if table.bad_rows:
                write_bad_rows(table.bad_rows, folder / "bad_rows.csv")
    table = load_table(folder)
    table.source = _source_name(data)
    return table


def _source_name(data: str | Path | None) -> str:
    return str(data) if data is not None else f"{BUILTIN_PREFIX}toy"


def _referenced_files(manifest: Manifest, modalities: dict[str, ModalityConfig]) -> list[Path | None]:
    out: list[Path | None] = []
    for row in manifest.rows:
        for m in modalities.values():
            if m.kind in ("image", "audio") and row.get(m.column):
                out.append(manifest.root / row[m.column])
    return out


def check_rows(manifest: Manifest, modalities: dict[str, ModalityConfig], config: DataConfig,
               require_label: bool) -> dict[int, list[BadRow]]:
    """Cheap checks on every row, before any decoding."""
    bad: dict[int, list[BadRow]] = {}
    if require_label and config.label not in manifest.columns:
        raise DataError(
            f"{manifest.path}: no label column '{config.label}' (columns: {', '.join(manifest.columns)}); "
            "name it with --set data.label=COLUMN",
            [BadRow(manifest.path.name, None, config.label, "column missing")],
        )
    seen: dict[str, int] = {}
    for i, row in enumerate(manifest.rows):
        problems = []
        if require_label and not row.get(config.label, ""):
            problems.append(manifest.bad(i, config.label, "label is empty"))
        ident = row.get(config.id_column)
        if ident:
            if ident in seen:
                problems.append(manifest.bad(i, config.id_column, f"id '{ident}' repeats row {seen[ident] + 1}"))
            seen.setdefault(ident, i)
        for name, m in modalities.items():
            problems.extend(_check_cell(manifest, i, m))
        if problems:
            bad[i] = problems
    return bad


def _check_cell(manifest: Manifest, i: int, m: ModalityConfig) -> list[BadRow]:
    if m.kind == "tabular":  # empty cells are missing values; others must be numbers where numbers belong
        return [manifest.bad(i, column, reason) for column, reason in tabular.cell_problems(manifest.rows[i], m)]
    value = manifest.rows[i].get(m.column, "")
    if not value.strip():
        return [manifest.bad(i, m.column, f"{m.kind} is empty")]
    if m.kind == "text":
        return []
    path = Path(value)
    if path.is_absolute():
        return [manifest.bad(i, m.column, f"path '{value}' is absolute; paths are relative to the manifest's folder")]
    # checked on the text of the path, so symlinked folders inside the data folder work
    if os.path.normpath(value).split(os.sep)[0] == os.pardir:
        return [manifest.bad(i, m.column, f"path '{value}' leads outside the manifest's folder")]
    full = manifest.root / path
    if not full.is_file():
        return [manifest.bad(i, m.column, f"file not found: {value}")]
    return []


def build_table(manifest: Manifest, modalities: dict[str, ModalityConfig], config: DataConfig,
                workers: int, progress: Progress | None, require_label: bool, folder: Path) -> Table:
    """Decode the rows chunk by chunk (in `workers` processes), appending each chunk to the
    tensor files of a partial entry beside `folder` as it comes (`mmcli.data.stream`):
    memory holds a few chunks, not the data set, and an interrupted run resumes where it
    stopped. The returned table's tensors are mapped from the partial entry; `publish`
    renames it into place."""
    bad = check_rows(manifest, modalities, config, require_label)
    good = [i for i in range(len(manifest.rows)) if i not in bad]
    partial = stream.partial_dir(folder)
    # the rows that passed the checks are decoded before failing, so that one message lists
    # every problem (a corrupt image beside a missing file) instead of one per attempt
    decode_bad = stream.decode_into(partial, manifest, good, modalities, config, workers, progress)
    for i, problems in decode_bad.items():
        bad.setdefault(i, []).extend(problems)
    rows = [r for i in sorted(bad) for r in bad[i]]
    if bad and config.on_error == "fail":
        shutil.rmtree(partial, ignore_errors=True)
        raise DataError(f"{manifest.path}: {len(bad)} bad rows (use --on-error skip to leave them out)", rows)
    keep = [i for i in good if i not in decode_bad]
    if not keep:
        shutil.rmtree(partial, ignore_errors=True)
        raise DataError(f"{manifest.path}: no usable rows", rows)
    table = _assemble(manifest, keep, modalities, config)
    table.bad_rows = rows
    table.tensors = stream.finish(partial, good, keep, modalities, config)
    return table


def _assemble(manifest: Manifest, keep: list[int], modalities: dict[str, ModalityConfig], config: DataConfig) -> Table:
    rows = [manifest.rows[i] for i in keep]
    has_label = config.label in manifest.columns
    has_split = config.split_column in manifest.columns
    table = Table(
        ids=[r.get(config.id_column) or str(i + 1) for i, r in zip(keep, rows)],
        labels=[r.get(config.label, "") for r in rows] if has_label else None,
        given_splits=[r.get(config.split_column, "") for r in rows] if has_split else None,
        modalities=dict(modalities),
    )
    for name, m in modalities.items():
        table.present[name] = torch.ones(len(rows), dtype=torch.bool)
        if m.kind == "text":
            table.texts[name] = [r[m.column] for r in rows]
        elif m.kind == "tabular":
            table.texts[name] = tabular.cells(rows, m)
    return table


def write_bad_rows(rows: list[BadRow], path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "row", "line", "column", "reason"])
        for r in rows:
            writer.writerow([r.file, r.row, r.line, r.column, r.reason])
