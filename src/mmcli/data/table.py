"""The preprocessed form of a data set: decoded tensors plus ids, labels and texts.

A `Table` is what the cache stores and what training, evaluation and comparison read.
It is saved as one raw file per tensor (`<name>.bin`: no pickle, so loading never runs
code) beside a `table.json` that holds everything else and each file's type and shape.
Loading maps the files into memory: a data set larger than memory still loads, and only
the rows that are read are paged in.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mmcli import kinds
from mmcli.config import ModalityConfig
from mmcli.data.cache import plain_name
from mmcli.errors import BadRow, UsageError

TABLE_FORMAT = 3  # 3: given_groups
DTYPES = {"uint8": torch.uint8, "float16": torch.float16, "float32": torch.float32, "int64": torch.int64}


@dataclass
class Table:
    ids: list[str]
    labels: list[str] | None
    given_splits: list[str] | None  # from the manifest's split column, if any
    modalities: dict[str, ModalityConfig]
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)  # name, name.lengths
    present: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> bool [N]
    texts: dict[str, list[Any]] = field(default_factory=dict)  # text: strings; tabular: each row's cells
    key: str = ""
    source: str = ""
    bad_rows: list[BadRow] = field(default_factory=list)
    given_groups: list[str] | None = None  # from the manifest's group column (data.group_column), if any

    def __len__(self) -> int:
        return len(self.ids)

    def kinds(self) -> dict[str, str]:
        return {name: m.kind for name, m in self.modalities.items()}

    def subset(self, index: list[int]) -> "Table":
        idx = torch.tensor(index, dtype=torch.long)
        pick = lambda seq: [seq[i] for i in index]  # noqa: E731
        return Table(
            ids=pick(self.ids),
            labels=pick(self.labels) if self.labels is not None else None,
            given_splits=pick(self.given_splits) if self.given_splits is not None else None,
            given_groups=pick(self.given_groups) if self.given_groups is not None else None,
            modalities=dict(self.modalities),
            tensors={k: v[idx] for k, v in self.tensors.items()},
            present={k: v[idx] for k, v in self.present.items()},
            texts={k: pick(v) for k, v in self.texts.items()},
            key=self.key,
            source=self.source,
        )


def table_meta(table: Table, arrays: dict[str, dict]) -> dict:
    """table.json: everything that is not a tensor, and each tensor's file, type and shape."""
    return {
        "format": TABLE_FORMAT,
        "key": table.key,
        "source": table.source,
        "ids": table.ids,
        "labels": table.labels,
        "given_splits": table.given_splits,
        "given_groups": table.given_groups,
        "modalities": {k: dataclasses.asdict(m) for k, m in table.modalities.items()},
        "texts": table.texts,
        "bad_rows": [vars(r) for r in table.bad_rows],
        "arrays": arrays,
    }


def array_file(folder: Path, name: str) -> Path:
    return folder / f"{name}.bin"


def write_array(folder: Path, name: str, tensor: torch.Tensor) -> dict:
    """Raw bytes in `<name>.bin` (what `load_table` maps into memory); its description."""
    if tensor.dtype == torch.bool:
        tensor = tensor.to(torch.uint8)
    with open(array_file(folder, name), "wb") as handle:
        handle.write(tensor.contiguous().numpy().tobytes())
    return {"dtype": str(tensor.dtype).replace("torch.", ""), "shape": list(tensor.shape)}


def save_table(table: Table, folder: Path) -> None:
    """Write atomically: into a temporary sibling folder, then rename into place."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    from mmcli.runs import open_up

    open_up(tmp)
    try:
        tensors = dict(table.tensors)
        tensors.update({f"{k}.present": v for k, v in table.present.items()})
        arrays = {k: write_array(tmp, k, v) for k, v in tensors.items()}
        (tmp / "table.json").write_text(json.dumps(table_meta(table, arrays)), encoding="utf-8")
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def is_table(folder: Path) -> bool:
    return (folder / "table.json").is_file()


def map_array(path: Path, dtype: str, shape: list[int]) -> torch.Tensor:
    """The file mapped into memory (copy-on-write: pages are read as they are touched,
    and nothing done to the tensor reaches the file)."""
    count = math.prod(shape)
    if count == 0:
        return torch.empty(shape, dtype=DTYPES[dtype])
    return torch.from_file(str(path), shared=False, size=count, dtype=DTYPES[dtype]).view(*shape)


def load_table(folder: Path) -> Table:
    """The table saved in `folder`; table.json is checked first (a cache folder may be
    given as DATA, and may come from elsewhere): a damaged one is a UsageError naming it."""
    path = folder / "table.json"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        raise UsageError(f"{folder}: not a readable mmcli cache ({str(exc)[:200]})") from None
    if not isinstance(meta, dict) or meta.get("format") != TABLE_FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise UsageError(f"{folder}: cache format {found} is not {TABLE_FORMAT}; run mmcli cache clean")
    problem = _meta_problem(meta)
    if problem:
        raise UsageError(f"{path}: damaged cache entry: {problem}; run mmcli cache clean (or preprocess again)")
    try:
        tensors = {k: map_array(array_file(folder, k), a["dtype"], a["shape"]) for k, a in meta["arrays"].items()}
    except (OSError, ValueError, RuntimeError) as exc:
        raise UsageError(f"{folder}: not a readable mmcli cache ({str(exc)[:200]})") from None
    for name in meta["modalities"]:
        lengths = tensors.get(f"{name}.lengths")
        if lengths is not None and len(lengths) and not 0 <= int(lengths.min()) <= int(lengths.max()) <= tensors[name].shape[-1]:
            raise UsageError(f"{path}: damaged cache entry: {name}.lengths are not in 0..{tensors[name].shape[-1]} frames")
    present = {k[: -len(".present")]: v.bool() for k, v in tensors.items() if k.endswith(".present")}
    return Table(
        ids=meta["ids"],
        labels=meta["labels"],
        given_splits=meta["given_splits"],
        given_groups=meta["given_groups"],
        modalities={k: ModalityConfig(**v) for k, v in meta["modalities"].items()},
        tensors={k: v for k, v in tensors.items() if not k.endswith(".present")},
        present=present,
        texts=meta["texts"],
        key=meta["key"],
        source=meta["source"],
        bad_rows=[BadRow(**r) for r in meta["bad_rows"]],
    )


def check_settings(table: Table, config, folder: Path) -> Table:
    """A cache folder given as DATA was made with some data settings: the config in force
    must have the same, or the model would be built (and the run saved) for other inputs
    than it trains on."""
    for name, m in table.modalities.items():
        shape = kinds.get(m.kind).cache_shape(config)
        if shape is None:
            continue
        want, keys = shape
        got = list(table.tensors[name].shape[1:])
        if got != want:
            raise UsageError(f"{folder}: this cache holds '{name}' of shape {got}, but {keys} {want}; set them as the cache "
                             f"was made (--set), or give the manifest instead")
    return table


def _strings(value: object, n: int | None = None, optional: bool = False) -> bool:
    if value is None:
        return optional
    return isinstance(value, list) and (n is None or len(value) == n) and all(isinstance(v, str) for v in value)


def _meta_problem(meta: dict) -> str | None:
    """What is wrong with table.json, or None: every key and type `table_meta` writes,
    one length for every per-row list and tensor, each modality's own tensors or texts."""
    keys = set(table_meta(Table([], None, None, {}), {}))
    if set(meta) != keys:
        return f"its keys are not {sorted(keys)}"
    if not (isinstance(meta["key"], str) and isinstance(meta["source"], str) and _strings(meta["ids"])):
        return "key, source and ids must be a text, a text and a list of texts"
    n = len(meta["ids"])
    if not (_strings(meta["labels"], n, True) and _strings(meta["given_splits"], n, True)
            and _strings(meta["given_groups"], n, True)):
        return f"labels, given_splits and given_groups must be null or {n} texts, one per id"
    fields, needed = {f.name for f in dataclasses.fields(BadRow)}, {"file", "row", "column", "reason"}
    if not isinstance(meta["bad_rows"], list) or \
            not all(isinstance(r, dict) and needed <= set(r) <= fields for r in meta["bad_rows"]):
        return "bad_rows must be a list of rows with file, row, column and reason"
    if not isinstance(meta["modalities"], dict) or not isinstance(meta["texts"], dict) or not isinstance(meta["arrays"], dict):
        return "modalities, texts and arrays must be objects"
    wanted: dict[str, tuple[str, int]] = {}
    for name, m in meta["modalities"].items():
        problem = _modality_problem(name, m, meta["texts"].get(name), n)
        if problem:
            return problem
        wanted[f"{name}.present"] = ("uint8", 0)
        wanted.update({name + suffix: spec for suffix, spec in kinds.get(m["kind"]).arrays().items()})
    if set(meta["texts"]) - set(meta["modalities"]) or set(meta["arrays"]) != set(wanted):
        return f"its arrays ({sorted(meta['arrays'])}) and texts are not those of its modalities ({sorted(wanted)})"
    outside = [name for name in wanted if not plain_name(f"{name}.bin")]
    if outside:  # a name from a stranger's table.json must not reach a file outside the entry
        return f"array name {outside[0]!r:.80} leads out of the entry"
    for name, (dtype, dims) in wanted.items():
        a = meta["arrays"][name]
        shape = a.get("shape") if isinstance(a, dict) else None
        if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape) or \
                a.get("dtype") != dtype or len(shape) != dims + 1 or shape[0] != n:
            return f"array '{name}' must be {dtype} of {dims + 1} dimensions with {n} rows, got {a!r:.80}"
    for name, m in meta["modalities"].items():
        problem = kinds.get(m["kind"]).array_problem(meta["arrays"][name]["shape"]) if name in meta["arrays"] else None
        if problem:
            return problem
    return None


def _modality_problem(name: str, m: object, texts: object, n: int) -> str | None:
    fields = [f.name for f in dataclasses.fields(ModalityConfig)]
    if not isinstance(m, dict) or not set(m) <= set(fields) or m.get("kind") not in kinds.KINDS or \
            not isinstance(m.get("column", ""), str) or not _strings(m.get("columns", [])) or \
            not _strings(m.get("categorical", [])):
        return f"modality '{name}' must have {', '.join(fields)} (kind one of {', '.join(kinds.names())})"
    return kinds.get(m["kind"]).texts_problem(name, texts, n, m)
