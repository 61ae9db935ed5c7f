"""manifest -> validated rows -> decoded tensors -> cached `Table`.

Every row is checked before any decoding, and every problem is reported at once (file,
row, column, reason). Decoding failures are collected the same way. With
`on_error: skip` bad rows are left out and written to `bad_rows.csv` in the cache entry.
"""

from __future__ import annotations

import csv
import logging
import shutil
from pathlib import Path
from typing import Callable

import torch

from mmcli import kinds
from mmcli.config import DataConfig, ModalityConfig
from mmcli.data import cache, lengths, stream
from mmcli.data.manifest import Manifest, detect_modalities, media_path, read_manifest
from mmcli.data.window import path_of
from mmcli.data.table import Table, check_settings, is_table, load_table
from mmcli.errors import BadRow, DataError, MmcliError, writing

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
               require_label: bool = True, percentile: float = lengths.PERCENTILE) -> Table:
    """Load `data` (manifest, folder or cache) as a Table, through the cache. An unset
    `config.max_seconds` is derived from the data first and set on `config` (mmcli.data.lengths):
    the spectrograms' length and the cache key depend on it (`percentile`: the task's
    `length_percentile`)."""
    root = cache.cache_root(cache_dir)
    source = resolve_source(data, root)
    if source.is_dir() and is_table(source):
        table = load_table(source)
        lengths.resolve_cached_seconds(config, table)
        return _done(check_settings(table, config, source), progress)
    manifest = read_manifest(source)
    modalities = detect_modalities(manifest, config)
    lengths.resolve_seconds(config, manifest, modalities, percentile)
    files = _referenced_files(manifest, modalities)
    key = cache.data_key(manifest.path, [f for f in files if f is not None], modalities, config, require_label)
    folder = cache.tensor_dir(root) / key
    if is_table(folder):
        LOG.info("cache hit: %s (%d files referenced) is in %s", manifest.path, len(files), folder)
        table = load_table(folder)
        table.source = _source_name(data)
        return _done(table, progress)
    with writing(folder), stream.building(folder):  # a full disk names the cache entry
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
    return _done(table, progress)


def _done(table: Table, progress: Progress | None) -> Table:
    """The bar says the rows are ready (a cache hit decodes none), and its clock stops."""
    if progress is not None:
        progress(len(table), len(table))
    return table


def _source_name(data: str | Path | None) -> str:
    return str(data) if data is not None else f"{BUILTIN_PREFIX}toy"


def _referenced_files(manifest: Manifest, modalities: dict[str, ModalityConfig]) -> list[Path | None]:
    out: list[Path | None] = []
    for row in manifest.rows:
        for m in modalities.values():
            kind = kinds.get(m.kind)
            if kind.from_files and row.get(m.column):
                out.append(media_path(manifest.root, path_of(row[m.column]) if kind.windowed else row[m.column]))
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
    known = {config.label, config.id_column, config.split_column, config.group_column}
    known |= {c for m in modalities.values() for c in [m.column, *m.columns]}
    for i, row in enumerate(manifest.rows):
        problems = []
        if require_label and not row.get(config.label, ""):
            problems.append(manifest.bad(i, config.label, _empty(manifest, i, config.label, "label is empty", known)))
        ident = row.get(config.id_column)
        if ident:
            if ident in seen:
                problems.append(manifest.bad(i, config.id_column, f"id '{ident}' repeats row {seen[ident] + 1}"))
            seen.setdefault(ident, i)
        problems.extend(_modality_problems(manifest, i, modalities, config, known))
        if problems:
            bad[i] = problems
    return bad


def is_absent(row: dict[str, str], m: ModalityConfig) -> bool:
    """The row lacks the modality (an empty cell or a missing key; a tabular modality is
    never absent: its empty cells are missing values, filled in by its statistics)."""
    return kinds.get(m.kind).absent(row, m)


def _modality_problems(manifest: Manifest, i: int, modalities: dict[str, ModalityConfig], config: DataConfig,
                       known: set[str]) -> list[BadRow]:
    """An absent modality makes a bad row with data.missing=fail; with allow the row is kept
    and the modality masked, as predict does, unless the row has none of its modalities."""
    absent = [n for n, m in modalities.items() if is_absent(manifest.rows[i], m)]
    problems = []
    for name, m in modalities.items():
        if name not in absent:
            problems.extend(_check_cell(manifest, i, m))
        elif config.missing == "fail":
            problems.append(manifest.bad(i, m.column, _empty(manifest, i, m.column, f"{m.kind} is empty", known)))
    if config.missing == "allow" and len(absent) == len(modalities):
        columns = ", ".join(f"'{modalities[n].column}'" for n in absent)
        problems.append(manifest.bad(i, None, f"has none of its modalities: {columns} all empty"))
    return problems


def _empty(manifest: Manifest, i: int, column: str, reason: str, known: set[str]) -> str:
    """Why a cell is empty; a JSONL row may lack the key, and hold another that no column
    reads (a mistyped key): the row is blamed, not the rows that spell it right."""
    if manifest.keys is None or column in manifest.keys[i]:
        return reason
    stray = sorted(manifest.keys[i] - known)
    return f"has no key '{column}'" + (f" (it has {', '.join(repr(k) for k in stray)}, which mmcli does not read: a typo?)"
                                       if stray else "")


def _check_cell(manifest: Manifest, i: int, m: ModalityConfig) -> list[BadRow]:
    return kinds.get(m.kind).cell_problems(manifest, i, m)


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
        lacking = config.missing == "fail" and any(is_absent(manifest.rows[i], m) for i in bad for m in modalities.values())
        raise DataError(f"{manifest.path}: {len(bad)} bad rows (use --on-error skip to leave them out"
                        + (", or --set data.missing=allow to keep the rows that lack a modality" if lacking else "") + ")", rows)
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
    has_group = bool(config.group_column) and config.group_column in manifest.columns
    table = Table(
        ids=[r.get(config.id_column) or str(i + 1) for i, r in zip(keep, rows)],
        labels=[r.get(config.label, "") for r in rows] if has_label else None,
        given_splits=[r.get(config.split_column, "") for r in rows] if has_split else None,
        given_groups=[r.get(config.group_column, "") for r in rows] if has_group else None,
        modalities=dict(modalities),
    )
    for name, m in modalities.items():
        table.present[name] = torch.tensor([not is_absent(r, m) for r in rows], dtype=torch.bool)
        texts = kinds.get(m.kind).texts(rows, m)
        if texts is not None:
            table.texts[name] = texts
    return table


def skipped_message(table: Table, cache_dir: str | Path | None) -> str | None:
    """What `preprocess` and `train` say about the rows data.on_error=skip left out (None: none)."""
    if not table.bad_rows:
        return None
    listed = cache.tensor_dir(cache.cache_root(cache_dir)) / table.key / "bad_rows.csv"
    return f"skipped {len({r.row for r in table.bad_rows})} bad rows, listed in {listed}"


def warn_skipped(table: Table, cache_dir: str | Path | None, classes: list[str] | None, label: str) -> None:
    """Before training: the rows skipped, and loudly when so many went that the model is not
    the one the data describes: more than half the rows, or every row of a class (`classes`:
    the labels of the rows kept, None for tasks without classes)."""
    message = skipped_message(table, cache_dir)
    if message is None:
        return
    LOG.warning(message)
    skipped = len({r.row for r in table.bad_rows})
    if 2 * skipped > skipped + len(table):
        first = table.bad_rows[0]
        LOG.warning("%s: %d of %d rows are bad and were skipped, so the model learns from %d; the first: row %s, "
                    "column '%s': %s", table.source, skipped, skipped + len(table), len(table), first.row,
                    first.column, first.reason)
    lost = _skipped_classes(table, classes, label)
    if lost:
        LOG.warning("%s: every row of class %s was skipped as bad, so the model will never predict it",
                    table.source, ", ".join(f"'{c}'" for c in lost))


def _skipped_classes(table: Table, classes: list[str] | None, label: str) -> list[str]:
    """Labels of skipped rows that no row kept has (read again from the manifest)."""
    if classes is None:
        return []
    try:
        manifest = read_manifest(table.source)
    except (MmcliError, OSError):  # data given as a cache folder: its manifest may be gone
        return []
    rows = {r.row for r in table.bad_rows if isinstance(r.row, int) and 0 < r.row <= len(manifest.rows)}
    labels = {manifest.rows[i - 1].get(label, "") for i in rows}
    return sorted(v for v in labels - set(classes) if v.strip())


def write_bad_rows(rows: list[BadRow], path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "row", "line", "column", "reason"])
        for r in rows:
            writer.writerow([r.file, r.row, r.line, r.column, r.reason])
