"""The routes of `mmcli serve` (FastAPI): JSON in, JSON out, a 4xx naming the field at
fault for a bad request, never a traceback.

    GET  /health    {"status": "ok"}, also while the model predicts
    GET  /info      the run: task, modalities, labels, saved test scores; the server's settings
    POST /predict   one example (an object) or a batch (an array): ?top_k=5&explain=false
    POST /caption   captioning runs: the same, with ?beam=N
    POST /transcribe transcription runs: the same, with ?beam=N
    POST /embed     one example or a batch: a vector per modality
    POST /search    retrieval runs started with --index: {"query": Q} or {"queries": [...]}, ?top_k=5&kind=text
"""

from __future__ import annotations

import asyncio
import logging
import math
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Awaitable, Callable

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response

from mmcli.errors import MmcliError
from mmcli.serve.batching import MicroBatcher
from mmcli.serve.bodies import HttpError, Uploads, examples, json_type, options, parse_json, prepare, problems, read_body
from mmcli.serve.service import PredictOptions, Service

LOG = logging.getLogger("mmcli")
INLINE_BYTES = 64 * 1024  # a body this small is checked (and its base64 written) on the event loop
SEARCH_BODY = 'the body must be {"query": Q} or {"queries": [Q, ...]}, each Q a text, or a file (a path or base64)'


class JSON(JSONResponse):
    """A JSON answer; a value JSON cannot hold (NaN, infinity: a diverged regression's
    output, a saved score) is written as null rather than failing the answer."""

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except ValueError:
            return super().render(_finite(content))


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def build_app(service: Service, ready: Callable[[], None] | None = None) -> FastAPI:
    """The ASGI app of a loaded run; `ready()` is called once it is about to accept requests."""
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mmcli-model")
    settings = service.settings
    routes = Routes(service, executor)
    batcher = routes.batcher = MicroBatcher(service.predict_jobs, executor, settings.batch_wait_ms / 1000.0,
                                            settings.max_batch, lambda: routes.coming)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        if ready is not None:
            ready()
        try:
            yield
        finally:
            await batcher.stop()
            executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="mmcli serve", lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None)
    app.add_api_route("/health", routes.health, methods=["GET"])
    app.add_api_route("/info", routes.info, methods=["GET"])
    for path, handler in (("/predict", routes.predict), ("/caption", routes.caption), ("/transcribe", routes.transcribe),
                          ("/embed", routes.embed),
                          ("/search", routes.search), ("/verify", routes.verify)):
        app.add_api_route(path, handler, methods=["POST"])
    app.add_exception_handler(StarletteHTTPException, routes.http_error)  # type: ignore[arg-type]
    return app


class Routes:
    """The handlers: each answers JSON, and every error is an answer of its own."""

    batcher: MicroBatcher

    def __init__(self, service: Service, executor: ThreadPoolExecutor) -> None:
        self.service, self.executor = service, executor
        self.coming = 0  # /predict requests being read and checked: the batcher waits for them
        self.limit = service.settings.max_body_bytes
        self.about = service.describe()

    async def health(self, request: Request) -> Response:
        return JSON({"status": "ok", "task": self.service.task})

    async def info(self, request: Request) -> Response:
        return JSON({**self.about, "batches": self.batcher.calls, "largest_batch": self.batcher.largest})

    async def predict(self, request: Request) -> Response:
        return await self._answer(request, "/predict", self._predict)

    async def caption(self, request: Request) -> Response:
        return await self._answer(request, "/caption", self._predict)

    async def transcribe(self, request: Request) -> Response:
        return await self._answer(request, "/transcribe", self._predict)

    async def embed(self, request: Request) -> Response:
        return await self._answer(request, "/embed", self._embed)

    async def search(self, request: Request) -> Response:
        return await self._answer(request, "/search", self._search)

    async def verify(self, request: Request) -> Response:
        return await self._answer(request, "/verify", self._verify)

    async def http_error(self, request: Request, exc: StarletteHTTPException) -> Response:
        """Unknown routes and methods, as JSON that lists what this server answers."""
        where = f"{request.method} {request.url.path}"
        offered = ", ".join(self.service.routes())
        message = {404: f"no route {where}; this server answers {offered}",
                   405: f"{where}: method not allowed; this server answers {offered}"}.get(exc.status_code, f"{where}: {exc.detail}")
        return JSON({"error": message}, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    async def _answer(self, request: Request, route: str, compute: Callable[[Request, Uploads], Awaitable[Any]]) -> Response:
        """`compute`'s answer as JSON; every error an answer of its own (4xx: the request's fault)."""
        uploads = Uploads()
        try:
            why = self.service.unavailable(route)
            if why is not None:
                raise HttpError(404, why)
            return JSON(await compute(request, uploads))
        except HttpError as exc:
            return JSON(exc.body(), status_code=exc.status)
        except MmcliError as exc:
            found = problems(exc, uploads)
            return JSON({"error": uploads.hide(str(exc)), **({"problems": found} if found else {})}, status_code=400)
        except OSError as exc:
            where = f"{exc.filename}: " if exc.filename else ""
            return JSON({"error": uploads.hide(f"{where}{exc.strerror or exc}")}, status_code=400)
        except Exception as exc:  # noqa: BLE001 (a bug: said in one line, the server goes on)
            LOG.error("internal error on %s %s: %s: %s", request.method, route, type(exc).__name__, exc)
            return JSON({"error": f"internal error: {type(exc).__name__}: {exc}; please report it"}, status_code=500)
        finally:
            uploads.close()

    async def _examples(self, request: Request, uploads: Uploads) -> tuple[list, bool]:
        """The body's examples as predict's records (files in base64 written), and whether it was one example."""
        body = await read_body(request, self.limit)
        items, single = examples(parse_json(body))
        if len(body) > INLINE_BYTES:  # base64 files to decode and write: not on the event loop
            prepared = await asyncio.to_thread(prepare, self.service.run, items, uploads)
        else:  # a thread hop costs more than this (milliseconds on a busy machine)
            prepared = prepare(self.service.run, items, uploads)
        return self.service.records(prepared), single

    async def _predict(self, request: Request, uploads: Uploads) -> Any:
        opts = options(request.query_params, {"top_k": 5, "explain": False, "beam": None})
        if opts["beam"] is not None and self.service.default_beam is None:
            raise HttpError(400, f"query parameter 'beam' is for captioning and transcription runs; this one is {self.service.task}")
        self.coming += 1
        try:
            records, single = await self._examples(request, uploads)
        finally:
            self.coming -= 1
        answers = await self.batcher.submit(records, PredictOptions(**opts)) if records else []
        return answers[0] if single else answers

    async def _embed(self, request: Request, uploads: Uploads) -> Any:
        options(request.query_params, {})
        records, single = await self._examples(request, uploads)
        loop = asyncio.get_running_loop()
        answers = await loop.run_in_executor(self.executor, self.service.embed, records) if records else []
        return answers[0] if single else answers

    async def _verify(self, request: Request, uploads: Uploads) -> Any:
        """{"a": example, "b": example}: their score and the decision at the run's threshold."""
        options(request.query_params, {})
        body = parse_json(await read_body(request, self.limit))
        if not isinstance(body, dict) or set(body) != {"a", "b"}:
            got = f"the keys {', '.join(sorted(body))}" if isinstance(body, dict) else json_type(body)
            raise HttpError(400, f'send {{"a": EXAMPLE, "b": EXAMPLE}}, each an object of fields as /predict takes; got {got}')
        items = await asyncio.to_thread(prepare, self.service.run, [body["a"], body["b"]], uploads)
        records = self.service.records(items)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, self.service.verify, records)

    async def _search(self, request: Request, uploads: Uploads) -> Any:
        from mmcli.search import default_query_kind

        opts = options(request.query_params, {"top_k": 5, "kind": ""})
        body = parse_json(await read_body(request, self.limit))
        keys = set(body) if isinstance(body, dict) else set()
        if len(keys) != 1 or not keys <= {"query", "queries"}:
            raise HttpError(400, SEARCH_BODY + (f"; got the keys {', '.join(sorted(keys))}" if keys else f"; got {json_type(body)}"))
        single = "query" in keys
        asked = [body["query"]] if single else body["queries"]
        if not isinstance(asked, list) or not asked:
            raise HttpError(400, f"'queries' must be a non-empty list; {SEARCH_BODY}")
        run = self.service.run
        kind = opts["kind"] or default_query_kind(run)
        name = next((n for n, s in run.specs.items() if s.kind == kind), None)
        if name is None:
            raise HttpError(400, f"query parameter 'kind': this run aligns {', '.join(f'{n} ({s.kind})' for n, s in run.specs.items())}")
        items = await asyncio.to_thread(prepare, run, [{name: q} for q in asked], uploads)
        queries = [str(item.get(name) or "") for item in items]
        loop = asyncio.get_running_loop()
        found = await loop.run_in_executor(self.executor, self.service.search, queries, kind, opts["top_k"])
        shown = [q if isinstance(q, str) and not q[:5].lower() == "data:" else "(base64)" for q in asked]
        answers = [{"query": q, "results": r} for q, r in zip(shown, found)]
        return answers[0] if single else answers
