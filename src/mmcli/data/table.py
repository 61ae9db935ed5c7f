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

import torch

from mmcli.config import ModalityConfig
from mmcli.errors import BadRow, UsageError

TABLE_FORMAT = 2
DTYPES = {"uint8": torch.uint8, "float16": torch.float16, "float32": torch.float32, "int64": torch.int64}


@dataclass
class Table:
    ids: list[str]
    labels: list[str] | None
    given_splits: list[str] | None  # from the manifest's split column, if any
    modalities: dict[str, ModalityConfig]
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)  # name, name.lengths
    present: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> bool [N]
    texts: dict[str, list[str]] = field(default_factory=dict)
    key: str = ""
    source: str = ""
    bad_rows: list[BadRow] = field(default_factory=list)

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
    try:
        meta = json.loads((folder / "table.json").read_text(encoding="utf-8"))
        if meta.get("format") != TABLE_FORMAT:
            raise UsageError(f"{folder}: cache format {meta.get('format')} is not {TABLE_FORMAT}; run mmcli cache clean")
        tensors = {k: map_array(array_file(folder, k), a["dtype"], a["shape"]) for k, a in meta["arrays"].items()}
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise UsageError(f"{folder}: not a readable mmcli cache ({exc})") from None
    present = {k[: -len(".present")]: v.bool() for k, v in tensors.items() if k.endswith(".present")}
    return Table(
        ids=meta["ids"],
        labels=meta["labels"],
        given_splits=meta["given_splits"],
        modalities={k: ModalityConfig(**v) for k, v in meta["modalities"].items()},
        tensors={k: v for k, v in tensors.items() if not k.endswith(".present")},
        present=present,
        texts=meta["texts"],
        key=meta["key"],
        source=meta["source"],
        bad_rows=[BadRow(**r) for r in meta["bad_rows"]],
    )
