"""`mmcli serve`: a run folder behind an HTTP JSON server (FastAPI on uvicorn, `pip install 'mmcli[serve]'`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from typing_extensions import Annotated

from mmcli.cli.common import QuietOpt, handles_errors, set_quiet


@handles_errors
def serve(
    run: Annotated[Path, typer.Argument(help="Run folder written by mmcli train (it may have been copied elsewhere).")],
    host: Annotated[str, typer.Option("--host", help="Address to listen on: 127.0.0.1 for this machine only, 0.0.0.0 for every network (the server reads files by path: think before opening it to others).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", "-p", min=0, max=65535, help="Port to listen on (0: any free one, named in the start-up line).")] = 8000,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Server processes, each with the run loaded and torch's threads shared out between them.")] = 1,
    index: Annotated[Optional[Path], typer.Option("--index", help="Retrieval runs: what POST /search searches: a manifest (embedded once at start-up) or a folder of mmcli index build.", show_default=False)] = None,
    batch_wait_ms: Annotated[float, typer.Option("--batch-wait-ms", min=0.0, help="How long a /predict request waits for others being received at the same time to share its model call (a lone request does not wait; 0: never wait; requests that arrive while the model works are batched anyway).")] = 2.0,
    max_batch: Annotated[int, typer.Option("--max-batch", min=1, help="Most examples in one model call (a larger request is a call of its own).")] = 32,
    max_body_mb: Annotated[float, typer.Option("--max-body-mb", min=0.001, help="Largest request body, in MB (files in base64 included); a larger one is answered 413.")] = 16.0,
    weights: Annotated[str, typer.Option("--weights", help="best or last.")] = "best",
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or mps (not the device the run was trained on).")] = "auto",
    quiet: QuietOpt = False,
) -> None:
    """Serve a run over HTTP until stopped: POST /predict (one example as a JSON object, or an
    array of them; files by path or base64), /embed, /search (retrieval runs, with --index) or
    /caption (captioning runs); GET /health and /info. See docs/serve.md."""
    from mmcli.errors import UsageError
    from mmcli.reporting.console import log

    set_quiet(quiet)
    if weights not in ("best", "last"):
        raise UsageError(f"--weights must be best or last, not '{weights}'")
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise UsageError(f"mmcli serve needs FastAPI and uvicorn ({exc}): pip install 'mmcli[serve]'") from None
    from mmcli.serve import Settings
    from mmcli.serve.server import run_server

    settings = Settings(str(run), host, port, workers, weights, device, None if index is None else str(index),
                        batch_wait_ms, max_batch, max_body_mb)
    try:
        run_server(settings, log)
    except KeyboardInterrupt:
        log("stopped")
