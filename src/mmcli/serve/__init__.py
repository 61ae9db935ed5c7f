"""`mmcli serve`: a run folder behind an HTTP JSON server (FastAPI on uvicorn).

The run is loaded once per process; `POST /predict` answers one example (a JSON object)
or a batch (an array of them) with the fields of `mmcli predict`'s JSON lines, a media
field being a path on the server or the file itself in base64. Concurrent requests that
arrive within a few milliseconds of each other are predicted in one model call
(`batching.py`); the model runs in a thread of its own, so `GET /health` answers while it
predicts. A bad request is a 4xx JSON answer that names the field at fault, never a 500.

Modules: `bodies` (reading and checking request bodies, base64 uploads), `batching` (the
micro-batcher), `service` (the loaded run: predict, embed, search, info; no HTTP),
`index` (a retrieval index embedded once at start-up), `app` (the routes), `server`
(sockets, uvicorn, worker processes).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from typing import Optional

SETTINGS_ENV = "MMCLI_SERVE_SETTINGS"  # how worker processes (`--workers N`) receive the settings


@dataclass(frozen=True)
class Settings:
    """What `mmcli serve` was asked for."""

    run: str
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    weights: str = "best"
    device: str = "auto"
    index: Optional[str] = None  # a retrieval run's manifest to search, embedded at start-up
    batch_wait_ms: float = 2.0  # how long the first request of a batch waits for others
    max_batch: int = 32  # examples in one model call (a larger request is one call of its own)
    max_body_mb: float = 16.0

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> "Settings":
        return cls(**json.loads(os.environ[SETTINGS_ENV]))
