"""The loaded run behind `mmcli serve`: what each route computes, without HTTP.

Every method that touches the model runs in the server's one model thread, so calls
never overlap (a captioning run's beam width is set per call).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmcli.errors import MmcliError
from mmcli.serve import Settings

LOG = logging.getLogger("mmcli")
TEXT_ROUTES = {"/caption": ("caption", "captioning"), "/transcribe": ("transcript", "transcription")}  # route: text_output, task


@dataclass(frozen=True)
class PredictOptions:
    """What must be equal for requests to share one model call."""

    top_k: int = 5
    explain: bool = False
    beam: int | None = None


class Service:
    """A run folder loaded once (mmcli.api.load), with its search index if one was given."""

    def __init__(self, settings: Settings) -> None:
        from mmcli.api import load

        self.settings = settings
        self.predictor = load(settings.run, settings.weights, settings.device)
        self.run = self.predictor.run
        self.task = self.predictor.task
        self.index = None
        if settings.index is not None:
            from mmcli.search import SearchIndex

            self.index = SearchIndex(self.run, Path(settings.index), settings.device)
        self.default_beam = int(self.run.task.option("beam_size")) if self.run.task.beam_search else None
        self.run.model.eval()
        from mmcli.kinds import KINDS

        for kind in dict.fromkeys(s.kind for s in self.run.specs.values()):
            KINDS[kind].warm_up(self.run.config.data)  # the decoders' imports: at start-up, not in the first request

    # -- what the server offers -------------------------------------------------------------
    def routes(self) -> list[str]:
        own = ["POST /embed"] + (["POST /search"] if self.task == "retrieval" else ["POST /predict"])
        if self.run.task.disjoint_labels:
            own.append("POST /verify")
        own += [f"POST {path}" for path, (field, _) in TEXT_ROUTES.items() if field == self.run.task.text_output]
        return ["GET /health", "GET /info"] + own

    def unavailable(self, route: str) -> str | None:
        """Why `route` does not apply to this run (a 404), or None."""
        if route == "/predict" and self.task == "retrieval":
            return "a retrieval run has no labels to predict: POST /search (queries) or /embed (examples)"
        if route in TEXT_ROUTES and self.run.task.text_output != TEXT_ROUTES[route][0]:
            return f"{route} is for {TEXT_ROUTES[route][1]} runs; this one is {self.task} (POST /predict)"
        if route == "/search" and self.task != "retrieval":
            return f"/search is for retrieval runs; this one is {self.task} (POST /predict)"
        if route == "/verify" and not self.run.task.disjoint_labels:
            return f"/verify is for verification runs; this one is {self.task} (POST /predict)"
        if route == "/search" and self.index is None:
            return "this server has no index to search: start it with mmcli serve RUN --index MANIFEST"
        return None

    def describe(self) -> dict[str, Any]:
        """GET /info: the run (task, modalities, labels, saved test scores) and the server's settings."""
        info = self.predictor.info()
        info["routes"] = self.routes()
        info["server"] = {"max_batch": self.settings.max_batch, "batch_wait_ms": self.settings.batch_wait_ms,
                          "max_body_mb": self.settings.max_body_mb, "workers": self.settings.workers}
        if self.index is not None:
            info["index"] = {"manifest": str(self.index.manifest), "built": self.index.built, "items": self.index.size()}
        return info

    # -- the model thread ----------------------------------------------------------------------
    def records(self, items: list[dict[str, Any]]) -> list:
        """Examples as predict's records; a misspelt field is a DataError naming it."""
        return self.predictor.records(items, source="request")

    def predict(self, records: list, options: PredictOptions) -> list[dict[str, Any]]:
        return self.predictor.predict_records(records, options.top_k, options.explain, options.beam)

    def predict_jobs(self, jobs: list[tuple[list, PredictOptions]]) -> list[Any]:
        """Each job's answers (or its exception): the jobs with the same options in one model
        call; if that call fails, each job of it alone, so one bad example fails only its request."""
        results: list[Any] = [None] * len(jobs)
        groups: dict[PredictOptions, list[int]] = {}
        for i, (_, opts) in enumerate(jobs):
            groups.setdefault(opts, []).append(i)
        for opts, members in groups.items():
            try:
                answers = self.predict([r for i in members for r in jobs[i][0]], opts)
            except (MmcliError, OSError) as exc:
                for i in members:
                    results[i] = exc if len(members) == 1 else self._alone(jobs[i][0], opts)
                continue
            except Exception as exc:  # noqa: BLE001 (a bug: each request answers it, none is left waiting)
                for i in members:
                    results[i] = exc
                continue
            start = 0
            for i in members:
                results[i] = answers[start: start + len(jobs[i][0])]
                start += len(jobs[i][0])
        return results

    def _alone(self, records: list, opts: PredictOptions) -> Any:
        try:
            return self.predict(records, opts)
        except Exception as exc:  # noqa: BLE001 (returned to the request it belongs to)
            return exc

    def embed(self, records: list) -> list[dict[str, Any]]:
        from mmcli.search import embedding_rows

        return embedding_rows(self.run, records, self.settings.device)

    def verify(self, records: list) -> dict[str, Any]:
        from mmcli.gallery import verify_records

        return verify_records(self.run, records[0], records[1], self.settings.device)

    def search(self, queries: list[str], kind: str | None, top_k: int) -> list[list[dict[str, Any]]]:
        assert self.index is not None
        from mmcli.search import default_query_kind

        return self.index.search(self.run, kind or default_query_kind(self.run), queries, top_k, self.settings.device)
