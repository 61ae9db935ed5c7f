"""`predict`: a saved run applied to new examples (a manifest, JSON lines, or one example).

An example may lack some of the run's modalities (an empty field or a missing key);
the model then sees that modality as absent through its mask, and the output says which
modalities were used. An example with none of the run's modalities is an error.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
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


def records_from_manifest(run: LoadedRun, path: Path) -> list[Record]:
    from mmcli.data.manifest import read_manifest

    manifest = read_manifest(path)
    id_col = run.config.data.id_column
    out = []
    for i, row in enumerate(manifest.rows):
        fields = {name: _field(row, m) for name, m in run.sources.items()}
        out.append(Record(row.get(id_col) or str(i + 1), fields, manifest.root, manifest.path.name, i + 1, manifest.lines[i]))
    return out


def records_from_dicts(run: LoadedRun, items: Iterable[dict[str, Any]], base: Path, source: str) -> list[Record]:
    """JSON objects keyed by modality name (or by the training column name)."""
    out = []
    for i, item in enumerate(items):
        fields = {name: KINDS[m.kind].from_json(item, name, m) for name, m in run.sources.items()}
        out.append(Record(str(item.get("id", i + 1)), fields, base, source, i + 1))
    return out


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
                    device: str = "auto") -> list[dict[str, Any]]:
    """One dict per record; with `explain`, the fusion's per-modality weights too (for
    fusions that weigh modalities: weighted, attention, gated, late)."""
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
        out.append(item)
    return out
