"""The Python API: `mmcli.load(RUN)` gives a predictor; `mmcli.train(...)` and
`mmcli.compare(...)` take the arguments of the commands and return their results.

    import mmcli
    predictor = mmcli.load("runs/my-run")
    predictor.predict([{"image": "cat.png", "text": "a cat on a mat"}])
    predictor.predict(dataframe)          # a pandas DataFrame: one example per row
    predictor.predict("new.csv")          # a manifest

The same core runs behind the commands: a prediction here equals `mmcli predict`'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from mmcli.errors import UsageError

Rows = Any  # a dict, a list of dicts, a pandas DataFrame, a manifest path, or a list of file paths
MANIFEST_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".ndjson")


class Predictor:
    """A run folder loaded once: predictions, embeddings, search and evaluation."""

    def __init__(self, run: Any, device: str = "auto", weights: str = "best") -> None:
        self.run = run  # mmcli.pipeline.LoadedRun
        self.device = device
        self.weights = weights
        self._indexes: dict[tuple, Any] = {}  # search: each index embedded once (mmcli.search.SearchIndex)

    @property
    def path(self) -> Path:
        return Path(self.run.path)

    @property
    def task(self) -> str:
        return str(self.run.task.name)

    @property
    def modalities(self) -> dict[str, str]:
        """Each modality the run reads, with its kind."""
        return {n: s.kind for n, s in self.run.specs.items()}

    @property
    def labels(self) -> list[str]:
        return list(self.run.labels)

    def info(self) -> dict[str, Any]:
        """What the run is: its task, modalities (name, kind, column), labels and saved test scores."""
        from mmcli.inference import run_info

        return run_info(self.run, self.weights)

    def records(self, rows: Rows, source: str = "python", extra_fields: bool = False) -> list:
        """`rows` as the records predict reads (mmcli.inference.Record); `extra_fields`: fields
        the run does not read are expected (kept columns), not warned of."""
        from mmcli.inference import records_from_dicts, records_from_manifest

        if isinstance(rows, (str, Path)) and Path(rows).suffix.lower() in MANIFEST_SUFFIXES:
            return records_from_manifest(self.run, Path(rows))
        return records_from_dicts(self.run, _as_dicts(rows, self.run), Path.cwd(), source, extra_fields=extra_fields)

    def predict(self, rows: Rows, top_k: int = 5, explain: bool = False, beam: int | None = None,
                keep_columns: bool = False) -> list[dict[str, Any]]:
        """One answer per example, as `mmcli predict` writes them: labels with their
        probabilities, values, or captions (`beam`: captioning's beam width)."""
        return self.predict_records(self.records(rows, extra_fields=keep_columns), top_k, explain, beam, keep_columns)

    def predict_records(self, records: list, top_k: int = 5, explain: bool = False, beam: int | None = None,
                        keep_columns: bool = False) -> list[dict[str, Any]]:
        """`predict` of examples already read (`records`); the beam holds for this call only."""
        from mmcli.inference import predict_records

        if self.task == "retrieval":
            raise UsageError("a retrieval run has no labels to predict: use .search(...) or .embed(...)")
        task = self.run.task
        if beam is not None and not task.beam_search:
            raise UsageError(f"beam is for captioning and transcription runs; this one is {self.task}")
        if beam is None or not task.beam_search:
            return predict_records(self.run, records, top_k, explain, self.device, keep_columns)
        task.set_beam(self.run.model, beam)
        try:
            return predict_records(self.run, records, top_k, explain, self.device, keep_columns)
        finally:  # this call's beam, not the next one's
            task.set_beam(self.run.model, int(task.option("beam_size")))

    def embed(self, rows: Rows) -> list[dict[str, Any]]:
        """One vector per modality of each example (retrieval runs: the aligned unit vectors)."""
        from mmcli.search import embedding_rows

        return embedding_rows(self.run, self.records(rows), self.device)

    def search(self, queries: str | Sequence[str], index: str | Path, kind: str | None = None,
               top_k: int = 5) -> list[dict[str, Any]]:
        """A retrieval run's `top_k` nearest items of `index` (a manifest, embedded on the first
        search and kept while the file is unchanged, or a folder of `mmcli index build`) for
        each query, as `mmcli predict
        --query-KIND ... --index` lists them; `kind`
        (text, image, ...) is the queries' kind, by default that of the run's first modality whose
        values are typed rather than files (its text)."""
        from mmcli.index_files import RECORD, is_index
        from mmcli.search import SearchIndex, default_query_kind

        asked = [queries] if isinstance(queries, str) else [str(q) for q in queries]
        path = Path(index).resolve()
        stat = (path / RECORD if is_index(path) else path).stat()
        key = (str(path), stat.st_mtime_ns, stat.st_size)  # a changed manifest (or index) is read again
        if key not in self._indexes:
            self._indexes = {key: SearchIndex(self.run, path, self.device)}
        found = self._indexes[key].search(self.run, kind or default_query_kind(self.run), asked, top_k, self.device)
        return [{"query": q, **item} for q, items in zip(asked, found) for item in items]

    def verify(self, a: str | Path | Mapping[str, Any], b: str | Path | Mapping[str, Any]) -> dict[str, Any]:
        """A verification run's cosine score of two examples (files, or dicts naming each
        modality's file) and its decision at the run's threshold, as `predict --verify A B`."""
        from mmcli import gallery

        gallery.check_run(self.run)
        return gallery.verify(self.run, _example(a), _example(b), self.device)

    def enroll(self, data: str | Path, gallery: str | Path | None = None) -> dict[str, Any]:
        """Enrol a manifest's rows (with the identity column) into a gallery file (default:
        RUN/gallery.npz), as `predict --enroll`."""
        from mmcli import gallery as gal

        gal.check_run(self.run)
        return gal.enroll(self.run, str(data), Path(gallery) if gallery else gal.default_path(self.run), self.device)

    def identify(self, probes: str | Path | Mapping[str, Any], gallery: str | Path | None = None,
                 top_k: int = 5) -> list[dict[str, Any]]:
        """Each probe's `top_k` gallery identities by score, as `predict --identify`."""
        from mmcli import gallery as gal

        gal.check_run(self.run)
        path = Path(gallery) if gallery else gal.default_path(self.run)
        return gal.identify(self.run, _example(probes), path, top_k, self.device)

    def evaluate(self, data: str | Path | None = None, split: str | None = None, save: bool = False,
                 cache_dir: str | None = None) -> dict[str, Any]:
        """The task's metrics on `data` (default: the run's own test split), as `mmcli evaluate`
        gives them; `save` also writes eval-<split>.json into the run folder."""
        from mmcli.evaluation.api import evaluate_run

        return evaluate_run(self.path, None if data is None else str(data), split, cache_dir, self.weights,
                            save=save, device=self.device)

    def __repr__(self) -> str:
        mods = ", ".join(f"{n} ({k})" for n, k in self.modalities.items())
        return f"Predictor({str(self.path)!r}: {self.task} on {mods})"


def load(run: str | Path, weights: str = "best", device: str = "auto") -> Predictor:
    """A run folder written by `mmcli train`, loaded once (every file checked as it is read)."""
    from mmcli.pipeline import load_run

    if weights not in ("best", "last"):
        raise UsageError(f"weights must be best or last, not '{weights}'")
    return Predictor(load_run(Path(run), weights), device, weights)


def _example(value: str | Path | Mapping[str, Any]) -> str:
    """One example as predict's --verify and --identify take it: a path, or a JSON object."""
    import json

    return json.dumps(dict(value)) if isinstance(value, Mapping) else str(value)


def _as_dicts(rows: Rows, run: Any) -> list[dict[str, Any]]:
    """Examples as JSON-like dicts: a dict, a list of dicts, a DataFrame's rows, or file paths
    (each the one modality of a unimodal run)."""
    if isinstance(rows, Mapping):
        return [dict(rows)]
    if hasattr(rows, "to_dict") and hasattr(rows, "columns"):  # a pandas DataFrame, without importing pandas
        return [{k: v for k, v in r.items() if not _missing(v)} for r in rows.to_dict(orient="records")]
    if isinstance(rows, (str, Path)):
        rows = [rows]
    if not isinstance(rows, Iterable):
        raise UsageError(f"rows: give a dict, a list of dicts, a pandas DataFrame or paths, not {type(rows).__name__}")
    out = []
    for i, row in enumerate(rows):
        if isinstance(row, Mapping):
            out.append(dict(row))
        elif isinstance(row, (str, Path)) and len(run.specs) == 1:
            out.append({next(iter(run.specs)): str(row), "id": str(row)})
        else:
            raise UsageError(f"rows[{i}]: a {type(row).__name__}; give a dict of fields by modality"
                             + ("" if len(run.specs) == 1 else f" ({', '.join(run.specs)})"))
    return out


def _missing(value: Any) -> bool:
    """A DataFrame's empty cell (NaN or None)."""
    return value is None or (isinstance(value, float) and value != value)


@dataclass
class TrainResult:
    """What `mmcli train` prints, as an object; `.load()` gives the run's predictor."""

    run: Path
    metric: str
    best_epoch: int
    val_score: float | None
    test_scores: dict[str, Any] = field(default_factory=dict)
    parameters: int = 0
    seconds: float = 0.0

    def load(self, weights: str = "best", device: str = "auto") -> Predictor:
        return load(self.run, weights, device)


def _flags(data: str | Path | None, modalities: str | Sequence[str] | None, encoders: Mapping[str, str] | Sequence[str] | None,
           **values: Any) -> dict[str, Any]:
    """The command's options as the config keys they set (None: not given)."""
    from mmcli.cli.common import encoder_flags, split_list

    mods = split_list(modalities) if isinstance(modalities, str) else (list(modalities) if modalities else None)
    pairs = [f"{m}={e}" for m, e in encoders.items()] if isinstance(encoders, Mapping) else list(encoders or [])
    return {"data.manifest": None if data is None else str(data), "model.modalities": mods, **values, **encoder_flags(pairs)}


def train(data: str | Path | None = None, *, config: str | Path | None = None, modalities: str | Sequence[str] | None = None,
          fusion: str | None = None, encoders: Mapping[str, str] | Sequence[str] | None = None, task: str | None = None,
          epochs: int | None = None, batch_size: int | None = None, lr: float | None = None, seed: int | None = None,
          device: str | None = None, precision: str | None = None, out: str | Path | None = None, overwrite: bool = False,
          set: Sequence[str] | None = None, cache_dir: str | Path | None = None, workers: int = 1) -> TrainResult:
    """`mmcli train` in Python: the same arguments (`set`: the --set overrides, KEY=VALUE)."""
    from mmcli.cli.common import resolve_config
    from mmcli.training.api import train as run_train

    flags = _flags(data, modalities, encoders, **{"model.fusion": fusion, "model.task": task, "train.epochs": epochs,
                                                   "train.batch_size": batch_size, "train.lr": lr, "train.seed": seed,
                                                   "train.device": device, "train.precision": precision})
    cfg = resolve_config(None if config is None else Path(config), flags, list(set or []))
    outcome = run_train(cfg, None if out is None else Path(out), overwrite, None if cache_dir is None else str(cache_dir), workers)
    result = outcome.result
    return TrainResult(Path(outcome.run_dir), result.metric, result.best_epoch, result.best_metric,
                       dict(outcome.test_scores or {}), outcome.parameters, round(result.seconds, 1))


def compare(items: Sequence[str] | None = None, *, data: str | Path | None = None, modalities: str | Sequence[str] | None = None,
            config: str | Path | None = None, task: str | None = None, encoders: Mapping[str, str] | Sequence[str] | None = None,
            seeds: int = 1, epochs: int | None = None, metric: str | None = None, reference: str | None = None,
            warm_start: bool = True, ensemble_folds: int | None = None, corrupt: Sequence[str] | None = None,
            seed: int | None = None,
            out: str | Path | None = None, overwrite: bool = False, jobs: int = 1, set: Sequence[str] | None = None,
            cache_dir: str | Path | None = None, workers: int = 1):
    """`mmcli compare` in Python: the same arguments; returns mmcli.compare.collect.CompareResult
    (`.summary`: one dict per variant with mean, interval, delta and p-value; `.results`: one per run)."""
    from datetime import datetime

    from mmcli.cli.common import resolve_config
    from mmcli.compare.runner import run_compare

    if seeds < 1 or jobs < 1:
        raise UsageError("seeds and jobs: give 1 or more")
    flags = _flags(data, modalities, encoders, **{"train.epochs": epochs, "train.seed": seed, "model.task": task})
    cfg = resolve_config(None if config is None else Path(config), flags, list(set or []))
    folder = Path(out) if out is not None else Path("runs") / f"compare-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    return run_compare(cfg, list(items or []), seeds, folder, metric, None if cache_dir is None else str(cache_dir),
                       overwrite, workers, jobs=jobs, command="mmcli.compare(...)", reference=reference,
                       warm_start=warm_start, corruptions=list(corrupt or []), folds=ensemble_folds)
