"""Reading manifests (CSV, TSV, JSONL) and finding their modalities.

A manifest has one row per example; columns hold an image path, an audio path or text.
A path is absolute, `~/...`, or relative to the manifest's folder. Modalities are
detected from the columns (file extensions, strings) unless the config declares them.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from mmcli import kinds
from mmcli.config import DataConfig, ModalityConfig
from mmcli.data.window import path_of
from mmcli.errors import BadRow, DataError, UsageError


LOG = logging.getLogger("mmcli")
_TOLD: set[tuple] = set()  # sparse columns already warned about: detection runs several times a command


@dataclass
class Manifest:
    path: Path
    columns: list[str]
    rows: list[dict[str, str]]
    lines: list[int]  # the line in the file where each row starts
    keys: list[set[str]] | None = None  # JSONL: the keys each row has (a CSV row has every column)

    @property
    def root(self) -> Path:
        return self.path.parent

    def bad(self, index: int, column: str | None, reason: str) -> BadRow:
        return BadRow(self.path.name, index + 1, column, reason, self.lines[index])


def media_path(root: Path, value: str) -> Path:
    """The file a manifest cell names: an absolute path, `~/...`, or a path relative to
    the manifest's folder (`root`), which may lead out of it (`../photos/a.jpg`)."""
    path = Path(value)
    if value.startswith("~"):
        try:
            path = path.expanduser()
        except RuntimeError:  # ~someone who does not exist: a relative name that starts with ~
            pass
    return root / path  # an absolute `path` replaces `root`


def find_manifest(data: str | Path) -> Path:
    path = Path(data)
    if path.is_dir():
        for name in ("manifest.csv", "manifest.tsv", "manifest.jsonl"):
            if (path / name).is_file():
                return path / name
        raise UsageError(f"{path}: folder holds no manifest.csv, manifest.tsv or manifest.jsonl")
    if not path.exists():
        raise UsageError(f"{path}: no such file or folder")
    if not path.is_file():  # a FIFO would block the read below; a device would never end
        raise UsageError(f"{path}: not a regular file (a manifest is a CSV, TSV or JSONL file)")
    return path


def read_manifest(data: str | Path) -> Manifest:
    path = find_manifest(data)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(f"{path}: not UTF-8 text", [BadRow(path.name, None, None, f"line {line}: byte {raw[exc.start]:#x} is not UTF-8")]) from None
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        manifest = _read_jsonl(path, text)
    else:
        manifest = _read_delimited(path, text, "\t" if path.suffix.lower() == ".tsv" else ",")
    if not manifest.rows:
        raise DataError(f"{path}: the manifest has no rows")
    return manifest


def _read_delimited(path: Path, text: str, delimiter: str) -> Manifest:
    # lines end at \n or \r only: str.splitlines would also cut at \v, \f, \x1c-\x1e, U+2028 inside a caption
    # a cell may be as long as the file: JSONL takes a text of any length, so CSV must too
    # (Python's csv refuses fields over 131,072 characters by default)
    csv.field_size_limit(max(csv.field_size_limit(), len(text) + 1))
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        raise DataError(f"{path}: the manifest is empty") from None
    except csv.Error as exc:
        raise DataError(f"{path}: line 1: {exc}") from None
    header = [h.strip() for h in header]
    if len(header) == 1 and delimiter == "," and ("\t" in header[0] or ";" in header[0]):
        raise DataError(f"{path}: header has one column '{header[0]}': is the delimiter a comma?")
    bad = [BadRow(path.name, None, name or f"#{i + 1}", "empty or repeated column name")
           for i, name in enumerate(header) if not name or header.count(name) > 1]
    if bad:
        raise DataError(f"{path}: bad header", bad)
    rows: list[dict[str, str]] = []
    lines: list[int] = []
    problems: list[BadRow] = []
    while True:
        line = reader.line_num + 1  # where the next record starts (a quoted field may span lines)
        try:
            values = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise DataError(f"{path}: cannot read", [BadRow(path.name, len(rows) + 1, None, str(exc), line)]) from None
        if not any(v.strip() for v in values):
            continue
        if len(values) != len(header):
            problems.append(BadRow(path.name, len(rows) + 1, None, f"has {len(values)} fields, the header has {len(header)}", line))
        rows.append(dict(zip(header, (v.strip() for v in values))))
        lines.append(line)
    if problems:
        raise DataError(f"{path}: rows with the wrong number of fields", problems)
    return Manifest(path, header, rows, lines)


def _read_jsonl(path: Path, text: str) -> Manifest:
    rows: list[dict[str, str]] = []
    lines: list[int] = []
    problems: list[BadRow] = []
    columns: dict[str, None] = {}
    for number, line in enumerate((part.rstrip("\r") for part in text.split("\n")), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(BadRow(path.name, len(rows) + 1, None, f"not JSON: {exc.msg}", number))
            continue
        if not isinstance(obj, dict):
            problems.append(BadRow(path.name, len(rows) + 1, None, "not a JSON object", number))
            continue
        row = {str(k): "" if v is None else (v if isinstance(v, str) else json.dumps(v)) for k, v in obj.items()}
        columns.update(dict.fromkeys(row))
        rows.append(row)
        lines.append(number)
    if problems:
        raise DataError(f"{path}: lines that are not JSON objects", problems)
    return Manifest(path, list(columns), [{c: r.get(c, "") for c in columns} for r in rows], lines,
                    [set(r) for r in rows])


def detect_modalities(manifest: Manifest, config: DataConfig) -> dict[str, ModalityConfig]:
    """Declared modalities, checked against the columns; else detected from the values."""
    if config.modalities:
        missing = [BadRow(manifest.path.name, None, column, f"modality '{name}' is declared on this column, which the manifest lacks")
                   for name, m in config.modalities.items() for column in kinds.get(m.kind).columns(m)
                   if column not in manifest.columns]
        if missing:
            raise DataError(f"{manifest.path}: declared columns are missing", missing)
        return dict(config.modalities)
    reserved = {config.label, config.id_column, config.split_column, config.group_column}
    found: dict[str, ModalityConfig] = {}
    numbers, sparse = [], []
    for column in manifest.columns:
        if column in reserved:
            continue
        values = [row[column] for row in manifest.rows if row[column].strip()]
        if values and 2 * len(values) < len(manifest.rows):
            sparse.append(column)  # filled in a few rows: notes, or one row's stray key, not what every row has
            _tell_sparse(manifest, column, len(values))
            continue
        kind = _column_kind(values)
        if kind == "number":
            numbers.append(column)
        elif kind is not None:
            found[column] = ModalityConfig(column=column, kind=kind)
            paths = [media_path(manifest.root, path_of(v)) for v in values[:20]] if kinds.get(kind).from_files else []
            found.update({n: c for n, c in kinds.get(kind).companions(column, found[column], paths).items()
                          if n not in manifest.columns})
    numbers = _clip_windows(manifest, found, numbers)
    if numbers:  # the numeric columns together are one modality (of the tabular kind)
        kind = kinds.with_trait("detects_numbers")[0]
        name = next(n for n in (kind, "numbers", f"{kind}_columns") if n not in found)
        found[name] = ModalityConfig(kind=kind, columns=numbers)
    if not found:
        raise DataError(
            f"{manifest.path}: no {', '.join(_detected_kinds())} "
            f"or numeric column found among {manifest.columns}"
            + (f" (filled in fewer than half the rows, so not detected: {', '.join(sparse)})" if sparse else "")
            + "; declare them under data.modalities in the config"
        )
    return found


def _clip_windows(manifest: Manifest, found: dict[str, ModalityConfig], numbers: list[str]) -> list[str]:
    """Columns named `start` and `end` beside recordings (video, audio) are the clips'
    windows (mmcli.data.window), not features (a cell that is not a time is then a bad row,
    not a reason to read the column as text); the other numeric columns are returned."""
    timed = [n for n, m in found.items() if kinds.get(m.kind).windowed]
    window = {part: part for part in ("start", "end") if part in numbers
              or (part in found and found[part].column == part and kinds.get(found[part].kind).fallback)}
    if not window or not timed:
        return numbers
    for part in window:
        found.pop(part, None)
    for name in timed:
        found[name].start, found[name].end = window.get("start", ""), window.get("end", "")
    LOG.info("%s: column(s) %s taken as the clip window of %s (seconds); to use them as numbers instead, declare "
             "the modalities under data.modalities", manifest.path.name, " and ".join(window), ", ".join(timed))
    return [c for c in numbers if c not in window]


def _tell_sparse(manifest: Manifest, column: str, filled: int) -> None:
    told = (str(manifest.path), column, filled, len(manifest.rows))
    if told in _TOLD:
        return
    _TOLD.add(told)
    LOG.warning("%s: column '%s' is filled in only %d of %d rows, so it is not used as a modality; to use it, "
                "declare it under data.modalities (and set data.missing=allow to keep the rows that leave it empty)",
                manifest.path.name, column, filled, len(manifest.rows))


def _detected_kinds() -> list[str]:
    """The kinds detection can find, in the order it tries them."""
    return [k.name for k in sorted(kinds.KINDS.values(), key=lambda k: k.detect_rank) if not k.detects_numbers]


def _column_kind(values: list[str]) -> str | None:
    """The kind whose files most of the values name, else "number" when all are numbers,
    else the fallback kind (text)."""
    if not values:
        return None
    suffixes = [Path(path_of(v)).suffix.lower() for v in values[:200]]  # clip.mp4#t=1,2 is a video
    for name in _detected_kinds():
        if kinds.get(name).matches(suffixes):
            return name
    if all(_is_number(v) for v in values):
        return "number"
    return kinds.with_trait("fallback")[0]


def _is_number(value: str) -> bool:
    from mmcli.data.tabular import is_number

    return is_number(value)
