"""`predict`: a saved run applied to new examples (a manifest, JSON lines, or one example).

An example may lack some of the run's modalities (an empty field or a missing key);
the model then sees that modality as absent through its mask, and the output says which
modalities were used. An example with none of the run's modalities is an error.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import torch

from mmcli.data.dataset import Encoded
from mmcli.errors import BadRow, DataError
from mmcli.kinds import KINDS
from mmcli.pipeline import LoadedRun
from mmcli.training.loop import predict_outputs
from mmcli.training.setup import pick_device

LOG = logging.getLogger("mmcli")


@dataclass
class Record:
    """One example to predict: its fields by modality name, and where it came from."""

    id: str
    fields: dict[str, str]
    base: Path  # folder that relative paths start from
    source: str
    row: int
    line: int | None = None
    columns: dict[str, Any] = field(default_factory=dict)  # the input as given (predict --keep-columns)


def records_from_manifest(run: LoadedRun, path: Path) -> list[Record]:
    from mmcli.data.manifest import read_manifest

    manifest = read_manifest(path)
    id_col = run.config.data.id_column
    if manifest.rows:
        check_fields(run, list(manifest.rows[0]), manifest.path.name, None, "column")
    out = []
    for i, row in enumerate(manifest.rows):
        fields = {name: _field(row, m) for name, m in run.sources.items()}
        out.append(Record(row.get(id_col) or default_id(run, fields, i + 1), fields, manifest.root, manifest.path.name,
                          i + 1, manifest.lines[i], dict(row)))
    return out


def records_from_dicts(run: LoadedRun, items: Iterable[dict[str, Any]], base: Path, source: str,
                       first: int = 1, extra_fields: bool = False) -> list[Record]:
    """JSON objects keyed by modality name (or by the training column name); `first`: the
    number of the first one (a stream's line); `extra_fields`: fields the run does not read
    are expected (predict --keep-columns) and not warned of."""
    out = []
    for i, item in enumerate(items, start=first):
        check_fields(run, list(item), source, i, "field", warn=not extra_fields)
        fields = {name: KINDS[m.kind].from_json(item, name, m) for name, m in run.sources.items()}
        given = item.get("id", item.get(run.config.data.id_column))
        out.append(Record(str(given) if given is not None else default_id(run, fields, i), fields, base, source, i,
                          columns=dict(item)))
    return out


def known_fields(run: LoadedRun) -> set[str]:
    """The names an example's fields may have: the modalities, their columns (a clip's start
    and end), the id, the label and the split."""
    names = {"id", run.config.data.id_column, run.config.data.label, run.config.data.split_column, run.config.data.group_column}
    for name, m in run.sources.items():
        names |= {name, m.column, *m.columns, m.start, m.end}
    return {n for n in names if n}


def check_fields(run: LoadedRun, given: list[str], source: str, row: int | None, what: str, warn: bool = True) -> None:
    """A field the run does not read that is close to the name of a modality missing from the
    example is that modality misspelt (`nmae` for `name`): an error naming both, not a silently
    absent modality. Another unknown field beside a missing modality is named in a warning."""
    import difflib

    known = known_fields(run)
    present = set(given)
    absent = [n for n, m in run.sources.items() if not ({n, m.column, *m.columns} & present)]
    if not absent:
        return
    wanted = sorted({run.columns[n] for n in absent} | set(absent))
    reads = ", ".join(sorted(set(run.columns.values())))
    for name in given:
        if name in known:
            continue
        close = difflib.get_close_matches(name, wanted, n=1, cutoff=0.6)
        if close:
            raise DataError(f"{source}: unknown {what} '{name}'", [BadRow(source, row, name, (
                f"unknown {what} '{name}': did you mean '{close[0]}'? this run reads {reads}; "
                f"to leave a modality out on purpose, give it empty"))])
        if warn and row is not None and len(absent) < len(run.sources) and name not in _WARNED:
            _WARNED.add(name)
            LOG.warning("%s, row %d: %s '%s' is not one this run reads (%s); %s is missing", source, row, what, name,
                        reads, ", ".join(run.columns[n] for n in absent))


_WARNED: set[str] = set()  # each unknown field is named once per process


def default_id(run: LoadedRun, fields: dict[str, str], number: int) -> str:
    """An example's id when none is given: the path of its first file (something a user can
    join on), else its number."""
    for name, m in run.sources.items():
        value = fields.get(name, "").strip()
        if value and KINDS[m.kind].from_files:
            return value
    return str(number)


def _field(row: dict[str, str], m) -> str:
    """A modality's field of a row: its column (a tabular modality's cells as JSON)."""
    return KINDS[m.kind].field(row, m)


def _decode_record(run: LoadedRun, rec: Record) -> tuple[dict[str, Any], list[BadRow]]:
    values: dict[str, Any] = {}
    problems: list[BadRow] = []
    for name, spec in run.specs.items():
        raw = rec.fields.get(name, "").strip()
        if not raw:
            continue
        column = run.columns[name]

        def warn(text: str, column: str = column) -> None:
            LOG.warning("%s", BadRow(rec.source, rec.row, column, text, rec.line))

        value, bad = KINDS[spec.kind].read(raw, rec.base, run.config.data, spec, run.sources[name], warn)
        problems += [BadRow(rec.source, rec.row, c, reason, rec.line) for c, reason in bad]
        if not bad:
            values[name] = value
    if not values and not problems:
        wanted = ", ".join(run.specs)
        problems.append(BadRow(rec.source, rec.row, None, f"has none of the modalities this model reads ({wanted})", rec.line))
    return values, problems


def encode_records(run: LoadedRun, records: list[Record]) -> tuple[Encoded, list[list[str]]]:
    decoded, bad = [], []
    for rec in records:
        values, problems = _decode_record(run, rec)
        decoded.append(values)
        bad.extend(problems)
    if bad:
        raise DataError(f"{len(bad)} problem(s) in the examples to predict", bad)
    inputs, lengths, present = {}, {}, {}
    for name, spec in run.specs.items():
        present[name] = torch.tensor([name in v for v in decoded], dtype=torch.bool)
        inputs[name], length = KINDS[spec.kind].stack([v.get(name) for v in decoded], spec, run.tokenizers.get(name),
                                                      run.config.data)
        if length is not None:
            lengths[name] = length
    kinds = {n: s.kind for n, s in run.specs.items()}
    used = [[m for m in run.specs if m in v] for v in decoded]
    return Encoded([r.id for r in records], inputs, lengths, present, None, kinds), used


def predict_records(run: LoadedRun, records: list[Record], top_k: int = 5, explain: bool = False,
                    device: str = "auto", keep_columns: bool = False) -> list[dict[str, Any]]:
    """One dict per record; with `explain`, the fusion's per-modality weights too (for
    fusions that weigh modalities: weighted, attention, gated, late); with `keep_columns`,
    the record's input columns first (one that a prediction's key takes is kept as input_NAME)."""
    if not records:
        return []
    encoded, used = encode_records(run, records)
    target = pick_device(device)  # where this machine runs it, not where it was trained
    run.model.to(target)
    logits, weights = predict_outputs(run.model, encoded, run.config, target)
    task = run.task
    out = []
    names = run.model.modalities
    for i, (rec, pred, mods) in enumerate(zip(records, task.predict(logits, run.labels, top_k), used)):
        item = {"id": rec.id, **pred, "modalities_used": mods}
        if explain:
            item["modality_weights"] = None if weights is None else {n: round(float(w), 6) for n, w in zip(names, weights[i])}
        out.append(with_columns(rec, item) if keep_columns else item)
    return out


def with_columns(rec: Record, item: dict[str, Any]) -> dict[str, Any]:
    """The record's input columns, then the answer's keys."""
    kept = {(f"input_{k}" if k in item else k): v for k, v in rec.columns.items()}
    return {**kept, **item}


def run_info(run: LoadedRun, weights: str = "best") -> dict[str, Any]:
    """What a run is (`mmcli serve`'s /info, the Python API's .info()): task, modalities,
    labels, the epoch of its weights and the test scores saved when it was trained."""
    import json

    scores: dict[str, Any] = {}
    saved = run.path / "eval-test.json"
    if saved.is_file():
        try:
            scores = {k: v for k, v in json.loads(saved.read_text(encoding="utf-8")).items()
                      if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "epoch"}
        except (OSError, ValueError):
            scores = {}
    return {"run": str(run.path), "task": run.task.name, "weights": weights, "epoch": int(run.weights_meta.get("epoch", 0)),
            "modalities": [{"name": n, "kind": s.kind, "column": run.columns[n]} for n, s in run.specs.items()],
            "labels": list(run.labels), "test_scores": scores}
