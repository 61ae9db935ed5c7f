"""Embeddings and cross-modal search with a saved run (`predict --embed`, `--query-*`).

A retrieval run embeds each modality into its shared space (unit vectors, so the dot
product is the cosine); any other run gives each modality's pooled encoder features.
A search embeds the queries with their modality's tower and the index's items with the
other tower, and lists each query's k nearest items by cosine similarity.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mmcli.errors import UsageError
from mmcli.inference import Record, encode_records, records_from_manifest
from mmcli.pipeline import LoadedRun
from mmcli.data.loader import to_device
from mmcli.training.setup import pick_device
from mmcli.heads.base import TaskHead


@torch.no_grad()
def embed(run: LoadedRun, records: list[Record], device: str = "auto") -> tuple[dict[str, torch.Tensor], list[list[str]]]:
    """[N, D] per modality (rows of examples without it are zeros), and each example's modalities."""
    from mmcli.data.dataset import iterate

    encoded, used = encode_records(run, records)
    target = pick_device(device)
    model = run.model.to(target).eval()
    parts: dict[str, list[torch.Tensor]] = {n: [] for n in model.modalities}
    for batch in iterate(encoded, run.config.data, run.config.eval.batch_size):
        features = model.encode(to_device(batch, target))
        own = model.head.embed_modalities(features) if isinstance(model.head, TaskHead) else None  # retrieval: aligned
        vectors = own if own is not None else {n: f.pooled for n, f in features.items()}
        for name in parts:
            parts[name].append((vectors[name].float() * batch.mask[name].unsqueeze(1).to(vectors[name].device)).cpu())
    return {n: torch.cat(v) for n, v in parts.items() if v}, used


def embedding_rows(run: LoadedRun, records: list[Record], device: str = "auto") -> list[dict[str, Any]]:
    """One dict per example: its id and one vector per modality it has."""
    vectors, used = embed(run, records, device)
    return [{"id": rec.id, **{m: [round(float(x), 6) for x in vectors[m][i]] for m in mods}}
            for i, (rec, mods) in enumerate(zip(records, used))]


def default_query_kind(run: LoadedRun) -> str:
    """The kind of queries when none is named: that of the run's first modality whose values
    are typed rather than files (a retrieval run's text), else its first modality's."""
    from mmcli.kinds import KINDS

    kinds = [s.kind for s in run.specs.values()]
    return next((k for k in kinds if not KINDS[k].from_files), kinds[0])


def query_modality(run: LoadedRun, kind: str) -> tuple[str, str]:
    """The run's modality of this kind (the query side) and the other one (the index side)."""
    if run.task.name != "retrieval":
        raise UsageError(f"--query-{kind} needs a run trained with --task retrieval (this one is {run.task.name})")
    names = [n for n, s in run.specs.items() if s.kind == kind]
    if not names:
        raise UsageError(f"--query-{kind}: this run aligns {', '.join(f'{n} ({s.kind})' for n, s in run.specs.items())}, "
                         f"no {kind} modality")
    query = names[0]
    return query, next(n for n in run.specs if n != query)


def search(run: LoadedRun, kind: str, queries: list[str], index: Path, top_k: int, device: str = "auto",
           base: Path | None = None) -> list[dict[str, Any]]:
    """For each query (a text, or a path), its `top_k` nearest items of the index's other
    modality; `index`: a manifest (embedded now) or a folder of `mmcli index build`."""
    other = query_modality(run, kind)[1]
    found = SearchIndex(run, index, device, [other]).search(run, kind, queries, top_k, device, base, "command line")
    return [{"query": q, **item} for q, items in zip(queries, found) for item in items]


def faiss_module():
    """FAISS where installed (pip install 'mmcli[index]'), else None: search is then a matrix
    product in torch. Both are exact (inner product over every item): the same ranking."""
    try:
        import faiss
    except ImportError:
        return None
    return faiss


class SearchIndex:
    """Per modality of the run: the index's items that have it, as (id, value), and their
    unit vectors; from a manifest (embedded here) or an index folder (mmcli.index_files).
    An item is a distinct value: a photo on five caption rows is one item (the first row's
    id), so that it is listed once, not five times in a row."""

    def __init__(self, run: LoadedRun, source: Path, device: str = "auto", sides: list[str] | None = None) -> None:
        from mmcli import index_files

        if run.task.name != "retrieval":
            raise UsageError(f"an index is the data a retrieval run searches; this run is {run.task.name}")
        self.manifest = source
        self.built = index_files.is_index(source)
        self.sides = index_files.load(source, run, sides) if self.built else self._embed(run, source, device, sides)
        if not self.sides:
            columns = [run.columns[n] for n in (sides or run.specs)]
            raise UsageError(f"{source}: no row has a value of {' or '.join(repr(c) for c in columns)} to search")
        self._faiss: dict[str, Any] = {}

    @staticmethod
    def _embed(run: LoadedRun, manifest: Path, device: str, wanted: list[str] | None) -> dict[str, tuple[list, torch.Tensor]]:
        from dataclasses import replace

        records = records_from_manifest(run, manifest)
        sides = {}
        for name in run.specs if wanted is None else wanted:
            firsts: dict[str, Record] = {}
            for r in records:
                if r.fields.get(name, "").strip():
                    firsts.setdefault(r.fields[name], r)
            items = [replace(r, fields={name: value}) for value, r in firsts.items()]
            if items:
                sides[name] = ([(r.id, r.fields[name]) for r in items], embed(run, items, device)[0][name])
        return sides

    def size(self) -> dict[str, int]:
        return {name: len(items) for name, (items, _) in self.sides.items()}

    def nearest(self, name: str, queries: torch.Tensor, k: int) -> tuple[list[list[float]], list[list[int]]]:
        """The scores and positions of each query's k nearest items of side `name`."""
        vectors = self.sides[name][1]
        faiss = faiss_module()
        if faiss is None:
            values, where = (queries.float() @ vectors.t().float()).topk(k, dim=1)
            return values.tolist(), where.tolist()
        if name not in self._faiss:
            self._faiss[name] = faiss.IndexFlatIP(vectors.shape[1])
            self._faiss[name].add(vectors.float().contiguous().numpy())
        values, where = self._faiss[name].search(queries.float().contiguous().numpy(), k)
        return values.tolist(), where.tolist()

    def search(self, run: LoadedRun, kind: str, queries: list[str], top_k: int, device: str = "auto",
               base: Path | None = None, source: str = "request") -> list[list[dict[str, Any]]]:
        """For each query (a text, or a path), its `top_k` nearest items of the other modality."""
        kinds = {s.kind for s in run.specs.values()}
        if kind not in kinds:
            raise UsageError(f"kind '{kind}': this run aligns {', '.join(f'{n} ({s.kind})' for n, s in run.specs.items())}")
        query, other = query_modality(run, kind)
        if other not in self.sides:
            raise UsageError(f"{self.manifest}: no row has a '{run.columns[other]}' value to search")
        items = self.sides[other][0]
        asked = [Record(str(i + 1), {query: q}, base or Path.cwd(), source, i + 1) for i, q in enumerate(queries)]
        values, where = self.nearest(other, embed(run, asked, device)[0][query], min(top_k, len(items)))
        return [[{"rank": rank, "id": items[j][0], "score": round(v, 6), run.columns[other]: items[j][1]}
                 for rank, (v, j) in enumerate(zip(row_v, row_i), start=1)]
                for row_v, row_i in zip(values, where)]
