"""Which examples were in which split: `splits.json` in every run folder.

`evaluate RUN` on the run's own data must score the rows that training held out, not a
split drawn again from the manifest as it is today: a row added since training would
reshuffle the stratified split and move training rows into the test split. So training
records, per split, each row's id and a fingerprint of what the model read from it (its
target and its preprocessed inputs). Evaluation then

- selects the recorded rows by id, refusing when some are gone or their content changed
  (the score would not be measured on the held-out rows), and says so when rows were added;
- on other data (`--data`), leaves out the rows the run was trained or validated on (same
  id and fingerprint), so a test file that repeats training rows cannot flatter it, and
  counts in a warning the rows that only share a training row's content.

A fingerprint hashes the target and, per modality of the run, the presence flag and the
text or the tensor row: what the model sees, whatever path or id a manifest gives the row.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from mmcli.errors import DataError
from mmcli.data.table import Table

FILE = "splits.json"
FORMAT = 1
SEEN = ("train", "val")  # what training used: its rows cannot test the run


def fingerprints(table: Table, modalities: list[str], targets: list[str] | None,
                 rows: list[int] | None = None) -> dict[int, str]:
    """A 16-hex-digit hash per row of `table` (of `rows` only, when given: the others are
    not read from the memory-mapped cache)."""
    out = {}
    for i in range(len(table)) if rows is None else rows:
        digest = hashlib.blake2b(digest_size=8)
        digest.update(("" if targets is None else str(targets[i])).encode("utf-8", "surrogatepass") + b"\0")
        for name in sorted(modalities):
            present = bool(table.present[name][i]) if name in table.present else True
            digest.update(name.encode() + (b"\1" if present else b"\0"))
            if not present:
                continue
            if name in table.texts:  # a string, or a tabular row's list of cells
                cell = table.texts[name][i]
                text = cell if isinstance(cell, str) else json.dumps(cell, ensure_ascii=False)
                digest.update(text.encode("utf-8", "surrogatepass"))
            if name in table.tensors:
                digest.update(table.tensors[name][i].contiguous().numpy().tobytes())
            if f"{name}.lengths" in table.tensors:
                digest.update(str(int(table.tensors[f"{name}.lengths"][i])).encode())
        out[i] = digest.hexdigest()
    return out


def record(table: Table, splits: list[str], modalities: list[str], targets: list[str] | None) -> dict:
    """What `splits.json` holds: per split, the rows' ids and fingerprints, in table order."""
    prints = fingerprints(table, modalities, targets)
    by_split: dict[str, dict[str, list[str]]] = {}
    for name in ("train", "val", "test"):
        rows = [i for i, s in enumerate(splits) if s == name]
        by_split[name] = {"ids": [table.ids[i] for i in rows], "rows": [prints[i] for i in rows]}
    return {"format": FORMAT, "fingerprint": "blake2b-64 of the target and the run's modalities' inputs",
            "splits": by_split}


@dataclass
class Selection:
    """The rows to score, and what the user must be told about them."""

    rows: list[int]
    warnings: list[str] = field(default_factory=list)
    left_out: int = 0  # rows of other data that the run was trained or validated on


def read_record(run_dir: Path) -> dict | None:
    """The run's `splits.json`, or None for a run folder written before it existed."""
    from mmcli import runs

    path = run_dir / FILE
    if not path.is_file():
        return None
    value = runs.read_json(path)
    try:
        splits = value["splits"]
        for name in ("train", "val", "test"):
            ids, prints = splits[name]["ids"], splits[name]["rows"]
            if not (isinstance(ids, list) and isinstance(prints, list) and len(ids) == len(prints)):
                raise ValueError(f"split '{name}': ids and rows differ in length")
            if not all(isinstance(x, str) for x in ids + prints):
                raise ValueError(f"split '{name}': ids and rows must be strings")
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{path}: damaged ({exc}); train the run again, or delete the file to redraw the split") from None
    return value


def own_rows(rec: dict, table: Table, fingerprint, split: str, drawn: list[int], source: str,
             run_dir: Path) -> Selection:
    """The rows of `split` recorded at training, found again in `table` by id;
    `fingerprint(rows)` hashes the rows it is given. Without an id column the ids are row
    numbers, which inserting, deleting or sorting rows shifts: the rows are then found by
    their content, when every one of them is still there."""
    wanted = rec["splits"][split]
    where = {row_id: i for i, row_id in enumerate(table.ids)}
    gone = [row_id for row_id in wanted["ids"] if row_id not in where]
    rows = [where[row_id] for row_id in wanted["ids"] if row_id in where]
    prints = fingerprint(rows)
    changed = [row_id for row_id, fp in zip(wanted["ids"], wanted["rows"]) if row_id in where and prints[where[row_id]] != fp]
    numbered = all(row_id == str(i + 1) for i, row_id in enumerate(table.ids))
    moved = _by_content(wanted["rows"], table, fingerprint) if (gone or changed) and numbered else None
    if moved is not None:
        selection = Selection(moved)
        selection.warnings.append(
            f"{source}: rows moved since training (no id column, so rows are numbered): the {len(moved)} rows of the "
            f"{split} split recorded in {run_dir / FILE} were found again by their target and inputs")
        return selection
    if gone:
        raise DataError(
            f"{source}: changed since training: {len(gone)} of the {len(wanted['ids'])} rows of the {split} split "
            f"recorded in {run_dir / FILE} are no longer in it (ids {_few(gone)}); the run cannot be scored on the "
            f"rows it held out. Evaluate other data with --data FILE")
    if changed:
        raise DataError(
            f"{source}: changed since training: {len(changed)} of the {len(rows)} rows of the {split} split have "
            f"another label or other inputs than at training (ids {_few(changed)}"
            f"{'; without an id column rows are numbered, and no row has their content either' if numbered else ''}). "
            f"Train again on the data as it is "
            f"now, or evaluate it with --data FILE")
    selection = Selection(rows)
    if sorted(rows) != sorted(drawn):
        recorded = sum(len(rec["splits"][s]["ids"]) for s in ("train", "val", "test"))
        selection.warnings.append(
            f"{source} has {len(table)} rows, {len(table) - recorded:+d} since training: the {split} split is the "
            f"{len(rows)} rows recorded at training ({run_dir / FILE}); rows added since are in no split and not scored")
    return selection


def _by_content(recorded: list[str], table: Table, fingerprint) -> list[int] | None:
    """A row of `table` for each recorded fingerprint (rows of equal content are
    interchangeable: same inputs, same target, same score), or None when one is missing."""
    prints = fingerprint(list(range(len(table))))
    free: dict[str, list[int]] = {}
    for i in range(len(table)):
        free.setdefault(prints[i], []).append(i)
    rows = []
    for fp in recorded:
        if not free.get(fp):
            return None
        rows.append(free[fp].pop(0))
    return rows


def unseen_rows(rec: dict, table: Table, prints: dict[int, str], rows: list[int], source: str) -> Selection:
    """`rows` of other data, less those the run was trained or validated on: the same id
    with the same target and inputs. Content alone does not decide, since real data repeats
    itself (few distinct values, short texts): rows that only look like training rows are
    scored, and counted in a warning."""
    seen = {(row_id, fp) for s in SEEN for row_id, fp in zip(rec["splits"][s]["ids"], rec["splits"][s]["rows"])}
    keep = [i for i in rows if (table.ids[i], prints[i]) not in seen]
    selection = Selection(keep, left_out=len(rows) - len(keep))
    if selection.left_out:
        if not keep:
            raise DataError(f"{source}: every row to score is a row this run was trained or validated on "
                            f"(same id, target and inputs); there is nothing unseen to score")
        selection.warnings.append(
            f"{source}: left out {selection.left_out} of {len(rows)} rows that this run was trained or validated on "
            f"(same id, target and inputs as rows of its train or val split); scored the other {len(keep)}")
    alike = {fp for s in SEEN for fp in rec["splits"][s]["rows"]}
    lookalikes = sum(prints[i] in alike for i in keep)
    if lookalikes:
        selection.warnings.append(
            f"{source}: {lookalikes} of the {len(keep)} rows scored have the target and inputs of a training or "
            f"validation row under another id; if they are the same examples, the score is flattered")
    return selection


def _few(ids: list[str], n: int = 5) -> str:
    shown = ", ".join(ids[:n])
    return shown + (f" and {len(ids) - n} more" if len(ids) > n else "")
