"""A search index on disk (`mmcli index build RUN DATA --out INDEX`): a retrieval run's
embeddings of a data set, computed once and read by `predict --query-* --index INDEX`,
`mmcli serve --index INDEX` and `mmcli.load(RUN).search(..., index=INDEX)` instead of
embedding the data again at every call.

The folder holds, per modality of the run that the data has ("side"), `sideN.npy` (the
items' unit vectors, float32 [items, dim], read without pickle) and `sideN.json` (each
item's id and value, in the same order), and `index.json`, written last: the format, the
run and the SHA-256 of the weights that embedded the items, the data file and its SHA-256,
each side's column, item count and dimension, and the files written (so that
`--overwrite` replaces only those). An index is read only with the run and weights that
built it: other weights put queries in another space, and their nearest items would be
meaningless, so that is an error that says to build it again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from mmcli.errors import UsageError
from mmcli.ledger import file_sha256 as sha256

RECORD = "index.json"
FORMAT = 1


def is_index(path: Path) -> bool:
    return path.is_dir() and (path / RECORD).is_file()


def save(sides: dict[str, tuple[list[tuple[str, str]], Any]], run, data: Path, out: Path, overwrite: bool) -> dict[str, Any]:
    """Write `sides` (name -> ([(id, value)], [N, D] tensor of unit vectors)) as an index
    folder at `out` (new or empty, or an earlier index's with `overwrite`); its record."""
    from mmcli import __version__
    from mmcli.export import outdir

    old = outdir.check(out, overwrite, RECORD, "mmcli index build")
    record: dict[str, Any] = {"format": FORMAT, "mmcli": __version__, "run": str(Path(run.path).resolve()),
                              "weights": run.weights_file.name, "weights_sha256": sha256(run.weights_file),
                              "data": str(data.resolve()), "data_sha256": sha256(data), "sides": {}, "files": []}
    with outdir.staging(out) as folder:
        for i, (name, (items, vectors)) in enumerate(sides.items()):
            stem = f"side{i}"
            np.save(folder / f"{stem}.npy", vectors.float().cpu().numpy(), allow_pickle=False)
            (folder / f"{stem}.json").write_text(json.dumps([[a, b] for a, b in items]), encoding="utf-8")
            record["sides"][name] = {"column": run.columns[name], "items": len(items), "dim": int(vectors.shape[1]),
                                     "file": stem}
            record["files"] += [f"{stem}.npy", f"{stem}.json"]
        (folder / RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        outdir.place(folder, out, old, RECORD)
    return record


def load(path: Path, run, wanted: list[str] | None = None) -> dict[str, tuple[list[tuple[str, str]], Any]]:
    """The sides of the index folder `path` (those in `wanted`, or all), checked against `run`."""
    import torch

    record = _record(path)
    if record.get("weights_sha256") != sha256(run.weights_file):
        raise UsageError(f"{path}: this index was built from the weights {record.get('weights')} of {record.get('run')}, "
                         f"not from {run.weights_file}: their vectors are in another space; build it again with "
                         f"mmcli index build {run.path} {record.get('data', 'DATA')} --out {path} --overwrite")
    sides = {}
    for name, side in record["sides"].items():
        if wanted is not None and name not in wanted:
            continue
        if name not in run.specs:
            raise UsageError(f"{path}: the index has modality '{name}', which {run.path} does not have")
        vectors = _array(path / f"{side['file']}.npy", side)
        items = _items(path / f"{side['file']}.json", side)
        sides[name] = (items, torch.from_numpy(vectors))
    return sides


def _record(path: Path) -> dict[str, Any]:
    try:
        record = json.loads((path / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path / RECORD}: cannot be read as an index record ({exc})") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT or not isinstance(record.get("sides"), dict):
        raise UsageError(f"{path / RECORD}: not an index of format {FORMAT} that mmcli index build writes")
    for name, side in record["sides"].items():
        ok = isinstance(side, dict) and isinstance(side.get("file"), str) and side["file"].startswith("side") \
            and side["file"][4:].isdigit() and all(isinstance(side.get(k), int) for k in ("items", "dim"))
        if not ok:
            raise UsageError(f"{path / RECORD}: side '{name}' is damaged")
    return record


def _array(path: Path, side: dict[str, Any]) -> np.ndarray:
    try:
        vectors = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: cannot be read ({exc})") from None
    if vectors.dtype != np.float32 or vectors.shape != (side["items"], side["dim"]) or not np.isfinite(vectors).all():
        raise UsageError(f"{path}: holds {vectors.dtype} {tuple(vectors.shape)}, not the finite float32 "
                         f"({side['items']}, {side['dim']}) that {RECORD} says")
    return vectors


def _items(path: Path, side: dict[str, Any]) -> list[tuple[str, str]]:
    try:
        items = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: cannot be read ({exc})") from None
    ok = isinstance(items, list) and len(items) == side["items"] and all(
        isinstance(i, list) and len(i) == 2 and all(isinstance(x, str) for x in i) for i in items)
    if not ok:
        raise UsageError(f"{path}: not the {side['items']} [id, value] pairs that {RECORD} says")
    return [(a, b) for a, b in items]
