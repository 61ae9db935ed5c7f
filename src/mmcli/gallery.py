"""Verification runs at work (issue 22): `predict --verify A B` (one trial, decided at the
run's threshold), `--enroll DATA` (an identity gallery: each identity's template is the
normalised mean of its examples' embeddings) and `--identify PROBE` (the gallery's
identities ranked by cosine to each probe).

A gallery is an .npz file (`mmcli-gallery` format 1): the examples' embeddings, ids and
identities, the run it was made with and its embedding size. It is written whole (a
temporary file renamed into place), and a file that is not an mmcli gallery is never
overwritten.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from mmcli.errors import BadRow, DataError, UsageError

FORMAT = "mmcli-gallery-1"
MANIFEST_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json")


def check_run(loaded) -> None:
    if not loaded.task.disjoint_labels:
        raise UsageError(f"--verify, --enroll and --identify need a verification run (--task verification); "
                         f"this one is {loaded.task.name}")


def records(loaded, given: str, what: str) -> list:
    """A manifest's rows, a JSON object's example, or one file for a run that reads one modality."""
    from mmcli.inference import records_from_dicts, records_from_manifest

    text = given.strip()
    if text.startswith("{"):
        try:
            item = json.loads(text)
        except ValueError as exc:
            raise UsageError(f"{what}: not a JSON object ({exc})") from None
        return records_from_dicts(loaded, [item], Path.cwd(), what)
    path = Path(given)
    if not path.exists():
        raise UsageError(f"{what}: {given}: no such file")
    if path.suffix.lower() in MANIFEST_SUFFIXES:
        return records_from_manifest(loaded, path)
    names = list(loaded.specs)
    if len(names) != 1:
        raise UsageError(f"{what}: this run reads {', '.join(names)}; give each example as a JSON object naming "
                         f"its files, e.g. '{json.dumps({n: '...' for n in names})}'")
    return records_from_dicts(loaded, [{names[0]: str(path)}], Path.cwd(), what)


def embed(loaded, recs: list, device: str) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Unit embeddings [N, D] and the predictions they came from (ids, modalities used)."""
    from mmcli.inference import predict_records

    answers = predict_records(loaded, recs, 1, False, device)
    vectors = np.asarray([a["embedding"] for a in answers], dtype=np.float32).reshape(len(answers), -1)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12), answers


def threshold(loaded) -> float | None:
    value = loaded.task.state.get("threshold")
    return None if value is None else float(value)


def verify(loaded, a: str, b: str, device: str) -> dict[str, Any]:
    """The cosine score of two examples and the decision at the run's threshold."""
    first, second = records(loaded, a, "--verify A"), records(loaded, b, "--verify B")
    if len(first) != 1 or len(second) != 1:
        raise UsageError("--verify compares two examples: give two files or two JSON objects, not manifests")
    return verify_records(loaded, first[0], second[0], device)


def verify_records(loaded, first, second, device: str) -> dict[str, Any]:
    """The trial of two of predict's records (serve's POST /verify)."""
    vectors, answers = embed(loaded, [first, second], device)
    score = float(vectors[0] @ vectors[1])
    at = threshold(loaded)
    return {"a": answers[0]["id"], "b": answers[1]["id"], "score": round(score, 6),
            "same": None if at is None else score >= at, "threshold": at,
            "modalities_used": {"a": answers[0]["modalities_used"], "b": answers[1]["modalities_used"]}}


def default_path(loaded) -> Path:
    return Path(loaded.path) / "gallery.npz"


def enroll(loaded, data: str, path: Path, device: str) -> dict[str, Any]:
    """Embed every row of a manifest with an identity and save the gallery to `path`."""
    recs = records(loaded, data, "--enroll")
    column = loaded.config.data.label
    missing = [BadRow(r.source, r.row, column, "no identity") for r in recs if not str(r.columns.get(column) or "").strip()]
    if missing:
        raise DataError(f"{data}: --enroll needs every row's identity in column '{column}'", missing)
    if not recs:
        raise DataError(f"{data}: no rows to enroll")
    _check_writable(path)
    vectors, answers = embed(loaded, recs, device)
    identities = [str(r.columns[column]).strip() for r in recs]
    meta = {"format": FORMAT, "run": str(Path(loaded.path).resolve()), "embed_dim": int(vectors.shape[1]),
            "label": column}
    tmp = path.with_name(f".{path.name}.partial")
    try:
        with open(tmp, "wb") as fh:
            np.savez(fh, embeddings=vectors, ids=np.asarray([a["id"] for a in answers]),
                     identities=np.asarray(identities), meta=np.asarray(json.dumps(meta)))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return {"gallery": str(path), "examples": len(recs), "identities": len(set(identities))}


def _check_writable(path: Path) -> None:
    if path.exists():
        try:
            load(path)
        except UsageError:
            raise UsageError(f"{path}: exists and is not an mmcli gallery; choose another --gallery (nothing was "
                             f"written)") from None
    elif not path.parent.is_dir():
        raise UsageError(f"--gallery {path}: its folder {path.parent} does not exist")


def load(path: Path) -> dict[str, Any]:
    try:
        saved = np.load(path, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 (any file: empty, another format, unreadable)
        raise UsageError(f"{path}: not an mmcli gallery (made by predict --enroll): {type(exc).__name__}") from None
    try:
        if not isinstance(saved, np.lib.npyio.NpzFile):
            raise ValueError("not an .npz archive")
        meta = json.loads(str(saved["meta"]))
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ValueError("no mmcli gallery format mark")
        return {"meta": meta, "embeddings": np.asarray(saved["embeddings"], dtype=np.float32),
                "identities": [str(v) for v in saved["identities"]]}
    except Exception as exc:  # noqa: BLE001
        raise UsageError(f"{path}: not an mmcli gallery (made by predict --enroll): {exc}") from None
    finally:
        if isinstance(saved, np.lib.npyio.NpzFile):
            saved.close()


def templates(gallery: dict[str, Any]) -> tuple[list[str], np.ndarray]:
    """Each identity's template: the normalised mean of its enrolled embeddings."""
    names = sorted(set(gallery["identities"]))
    ids = np.asarray(gallery["identities"])
    means = np.stack([gallery["embeddings"][ids == n].mean(axis=0) for n in names])
    return names, means / np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)


def identify(loaded, probe: str, path: Path, top_k: int, device: str) -> list[dict[str, Any]]:
    """Each probe's top-k gallery identities by cosine to their templates."""
    if not path.exists():
        raise UsageError(f"{path}: no gallery; make one with predict RUN --enroll DATA (or give --gallery FILE)")
    gallery = load(path)
    recs = records(loaded, probe, "--identify")
    vectors, answers = embed(loaded, recs, device)
    if vectors.shape[1] != gallery["meta"]["embed_dim"]:
        raise UsageError(f"{path}: its embeddings have {gallery['meta']['embed_dim']} numbers, this run's "
                         f"{vectors.shape[1]}: it was enrolled with another run ({gallery['meta']['run']})")
    made_by = gallery["meta"].get("run")
    if made_by != str(Path(loaded.path).resolve()):
        import logging

        logging.getLogger("mmcli").warning("%s was enrolled with the run %s, not this one (%s): its embeddings are "
                                           "comparable only if this is a copy of that run", path, made_by, loaded.path)
    names, means = templates(gallery)
    scores = vectors @ means.T
    at = threshold(loaded)
    out = []
    for answer, row in zip(answers, scores):
        order = np.argsort(-row, kind="stable")[:max(1, top_k)]
        best = float(row[order[0]])
        out.append({"id": answer["id"], "identity": names[order[0]], "score": round(best, 6),
                    "accepted": None if at is None else best >= at,
                    "candidates": [{"identity": names[j], "score": round(float(row[j]), 6)} for j in order],
                    "modalities_used": answer["modalities_used"]})
    return out
