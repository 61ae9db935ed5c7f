"""Sockets, uvicorn and worker processes of `mmcli serve`.

The socket is bound here, before the run is loaded, so that a port in use is an error
that names it at once (and `--port 0` takes a free port, named in the start-up line).
With `--workers N`, uvicorn's supervisor starts N processes that share the socket, each
loading the run (the settings travel in an environment variable) and batching its own
requests; torch's threads are shared out between them.
"""

from __future__ import annotations

import copy
import errno
import os
import socket
from typing import Any, Callable

from mmcli.errors import UsageError
from mmcli.serve import SETTINGS_ENV, Settings


def bind(host: str, port: int) -> socket.socket:
    """A listening-ready socket on host:port; a UsageError that names the problem."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise UsageError(f"--host {host}: not an address this machine can listen on ({exc.strerror})") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise UsageError(f"--port {port}: another program listens there on {host}; choose another port (--port 0: any free one)") from None
        if exc.errno == errno.EACCES:
            raise UsageError(f"--port {port}: not allowed to listen there (ports below 1024 need privileges)") from None
        raise UsageError(f"--host {host} --port {port}: cannot listen there ({exc.strerror})") from None
    sock.set_inheritable(True)
    return sock


def url(sock: socket.socket, host: str) -> str:
    port = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def log_config(verbose: bool) -> dict[str, Any]:
    """uvicorn's logging, all of it on stderr (its access log goes to stdout by default):
    errors only, or every request with `mmcli --verbose`."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    for handler in config["handlers"].values():
        handler["stream"] = "ext://sys.stderr"
    level = "INFO" if verbose else "WARNING"
    for logger in config["loggers"].values():
        logger["level"] = level
    return config


def run_server(settings: Settings, say: Callable[[str], None]) -> None:
    """Serve until interrupted; `say` reports progress (stderr)."""
    import uvicorn

    from mmcli.serve.service import Service

    verbose = os.environ.get("MMCLI_VERBOSE") == "1"
    sock = bind(settings.host, settings.port)
    address = url(sock, settings.host)
    common: dict[str, Any] = dict(log_config=log_config(verbose), access_log=verbose, server_header=False,
                                  timeout_graceful_shutdown=10, lifespan="on")
    try:
        say(f"loading {settings.run}")
        service = Service(settings)  # with workers, the check that the run and index load before any starts
        if settings.workers == 1:
            from mmcli.serve.app import build_app

            task, routes = service.task, ", ".join(service.routes())
            app = build_app(service, lambda: say(f"serving {settings.run} ({task}) at {address}: {routes}; Ctrl-C stops"))
            uvicorn.Server(uvicorn.Config(app, **common)).run(sockets=[sock])
        else:
            del service  # each worker loads its own
            _workers(settings, sock, common, lambda: say(f"serving {settings.run} at {address}: starting {settings.workers} "
                                                          "worker processes, each loading the run; Ctrl-C stops"))
    finally:
        sock.close()


def _workers(settings: Settings, sock: socket.socket, common: dict[str, Any], ready: Callable[[], None]) -> None:
    """uvicorn's supervisor and `settings.workers` processes on one socket, each with its own model."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    os.environ[SETTINGS_ENV] = settings.to_env()
    config = uvicorn.Config("mmcli.serve.server:worker_app", factory=True, workers=settings.workers, **common)
    ready()
    Multiprocess(config, sockets=[sock]).run()


def worker_app() -> Any:
    """The app of one worker process (`--workers N`): the run loaded from the settings it inherits."""
    import torch

    from mmcli.serve.app import build_app
    from mmcli.serve.service import Service

    settings = Settings.from_env()
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // settings.workers))
    return build_app(Service(settings))
