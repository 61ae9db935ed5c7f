"""The preprocessed form of a data set: decoded tensors plus ids, labels and texts.

A `Table` is what the cache stores and what training, evaluation and comparison read.
It is saved as `tensors.safetensors` (no pickle: loading never runs code) beside a
`table.json` that holds everything that is not a tensor.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mmcli.config import ModalityConfig
from mmcli.errors import BadRow, UsageError

TABLE_FORMAT = 1


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


def save_table(table: Table, folder: Path) -> None:
    """Write atomically: into a temporary sibling folder, then rename into place."""
    from safetensors.torch import save_file

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    from mmcli.runs import open_up

    open_up(tmp)
    try:
        tensors = dict(table.tensors)
        tensors.update({f"{k}.present": v.to(torch.uint8) for k, v in table.present.items()})
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / "tensors.safetensors"))
        meta = {
            "format": TABLE_FORMAT,
            "key": table.key,
            "source": table.source,
            "ids": table.ids,
            "labels": table.labels,
            "given_splits": table.given_splits,
            "modalities": {k: dataclasses.asdict(m) for k, m in table.modalities.items()},
            "texts": table.texts,
            "bad_rows": [vars(r) for r in table.bad_rows],
        }
        (tmp / "table.json").write_text(json.dumps(meta), encoding="utf-8")
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def is_table(folder: Path) -> bool:
    return (folder / "table.json").is_file() and (folder / "tensors.safetensors").is_file()


def load_table(folder: Path) -> Table:
    from safetensors.torch import load_file

    try:
        meta = json.loads((folder / "table.json").read_text(encoding="utf-8"))
        tensors = load_file(str(folder / "tensors.safetensors"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"{folder}: not a readable mmcli cache ({exc})") from None
    if meta.get("format") != TABLE_FORMAT:
        raise UsageError(f"{folder}: cache format {meta.get('format')} is not {TABLE_FORMAT}; run mmcli cache clean")
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
