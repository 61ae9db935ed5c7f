"""Request bodies of `mmcli serve`: read within a size limit, parsed as JSON, checked field
by field before anything is predicted, and files sent in base64 written to a temporary
folder that lives as long as the request.

A media field (a kind read from files) is a path on the server, a data URI
(`data:image/png;base64,...`) or `{"base64": "...", "suffix": ".png"}`; any other field
of a modality is a string (a tabular modality's cells are its own kind's business).
"""

from __future__ import annotations

import base64
import binascii
import json
import mimetypes
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping

from mmcli.errors import BadRow, DataError
from mmcli.kinds import KINDS

DRAIN_BYTES = 64 * 1024 * 1024  # read (and drop) this much past the limit, so the client hears the 413
SUFFIX = re.compile(r"^\.[A-Za-z0-9]{1,10}$")
MEDIA_HELP = 'a path (a string), a data URI, or {"base64": "...", "suffix": ".png"}'


class HttpError(Exception):
    """An answer other than 200: its status, a message, and the problems found (field by field)."""

    def __init__(self, status: int, message: str, problems: list[dict[str, Any]] | None = None):
        super().__init__(message)
        self.status, self.message, self.problems = status, message, list(problems or [])

    def body(self) -> dict[str, Any]:
        return {"error": self.message, **({"problems": self.problems} if self.problems else {})}


def json_type(value: Any) -> str:
    """What a JSON value is, in words ("a number", "a list")."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "a JSON object" if isinstance(value, dict) else type(value).__name__


async def read_body(request: Any, limit: int) -> bytes:
    """The body, or a 413 naming the limit (`--max-body-mb`); a body a little over the limit
    is read to its end and dropped, so that the client gets the answer, not a reset."""
    from starlette.requests import ClientDisconnect

    mb = f"{limit / 1024 / 1024:g} MB"
    declared = request.headers.get("content-length", "")
    too_big = HttpError(413, f"the body is larger than this server's limit of {mb} (mmcli serve --max-body-mb)")
    if declared.isdigit() and int(declared) > limit + DRAIN_BYTES:
        raise too_big
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit + DRAIN_BYTES:
                break
            if size <= limit:
                chunks.append(chunk)
    except ClientDisconnect:
        raise HttpError(400, "the client went away before the body was read") from None
    if size > limit:
        raise too_big
    return b"".join(chunks)


def parse_json(body: bytes) -> Any:
    if not body.strip():
        raise HttpError(400, "the body is empty: send a JSON object (one example) or an array of them")
    try:
        return json.loads(body)
    except UnicodeDecodeError as exc:
        raise HttpError(400, f"the body is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise HttpError(400, f"the body is not JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    except RecursionError:
        raise HttpError(400, "the body's JSON nests arrays or objects too deeply to read") from None


def examples(body: Any) -> tuple[list[Any], bool]:
    """The examples of a body and whether it was one (an object) rather than a batch (an array)."""
    if isinstance(body, dict):
        return [body], True
    if isinstance(body, list):
        return body, False
    raise HttpError(400, f"the body is {json_type(body)}: send a JSON object (one example) or an array of objects")


def options(given: Mapping[str, str], allowed: dict[str, Any]) -> dict[str, Any]:
    """Query parameters (`?top_k=3&explain=true`), checked against `allowed` (name -> default;
    the default's type is the parameter's: int >= 1, bool or str; None: an int >= 1)."""
    out = dict(allowed)
    for name, raw in given.items():
        if name not in allowed:
            raise HttpError(400, f"unknown query parameter '{name}': this route takes {', '.join(allowed) or 'none'}")
        default = allowed[name]
        if isinstance(default, bool):
            if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise HttpError(400, f"query parameter '{name}': expected true or false, got '{raw}'")
            out[name] = raw.lower() in ("true", "1", "yes")
        elif isinstance(default, str):
            out[name] = raw
        else:
            if not raw.strip().isdigit() or int(raw) < 1:
                raise HttpError(400, f"query parameter '{name}': expected a whole number of 1 or more, got '{raw}'")
            out[name] = int(raw)
    return out


class Uploads:
    """The files of one request sent in base64: a temporary folder removed by `close()`;
    `hide()` puts what a file stands for in place of its temporary path in a message."""

    def __init__(self) -> None:
        self.folder: Path | None = None
        self.names: dict[str, str] = {}

    def write(self, data: bytes, suffix: str, label: str) -> str:
        if self.folder is None:
            self.folder = Path(tempfile.mkdtemp(prefix="mmcli-serve-"))
        path = self.folder / f"{len(self.names) + 1}{suffix}"
        path.write_bytes(data)
        self.names[str(path)] = label
        return str(path)

    def hide(self, text: str) -> str:
        for path, label in self.names.items():
            text = text.replace(path, label)
        return text

    def close(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    def __enter__(self) -> "Uploads":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def decode_upload(value: Any) -> tuple[bytes, str]:
    """A data URI or {"base64": ..., "suffix": ...} into (bytes, suffix); ValueError says why not."""
    if isinstance(value, str):
        head, comma, data = value.partition(",")
        if not comma or not head.lower().endswith(";base64"):
            raise ValueError("a data URI must hold base64 (data:image/png;base64,...)")
        mime = head[5:].split(";")[0].strip().lower()
        suffix = (mimetypes.guess_extension(mime) or "") if mime else ""
    else:
        extra = sorted(set(value) - {"base64", "suffix"})
        if extra:
            raise ValueError(f"unknown key(s) {', '.join(extra)}: a file in base64 is {{\"base64\": \"...\", \"suffix\": \".png\"}}")
        data, suffix = value.get("base64"), value.get("suffix") or ""
        if not isinstance(data, str):
            raise ValueError(f"'base64' is {json_type(data)}; it must be a string of base64")
        if not isinstance(suffix, str) or not SUFFIX.match(suffix):
            raise ValueError(f"'suffix' must be a file suffix such as \".png\", not {json.dumps(suffix)}")
    text = "".join(data.split())
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_" if ("-" in text or "_" in text) else None,
                               validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"not valid base64 ({exc})") from None
    if not raw:
        raise ValueError("the base64 holds no bytes")
    return raw, suffix


def prepare(run: Any, items: list[Any], uploads: Uploads, source: str = "request") -> list[dict[str, Any]]:
    """The examples with each field checked, base64 files written to `uploads` (and an id
    given to an example that has one, so that no temporary path becomes its id); a
    DataError names every field at fault."""
    bad: list[BadRow] = []
    out = []
    id_keys = {"id", run.config.data.id_column}
    for number, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            bad.append(BadRow(source, number, None, f"is {json_type(item)}, not a JSON object of fields"))
            continue
        fixed = dict(item)
        for key in sorted(id_keys & set(item)):
            if item[key] is not None and not isinstance(item[key], (str, int, float)):
                bad.append(BadRow(source, number, key, f"{json_type(item[key])} where an id (a string or number) is expected"))
        uploaded = False
        for key, kind in _fields(run, item):
            value = item[key]
            if value is None or value == "":
                continue
            if kind.from_files and (isinstance(value, dict) or (isinstance(value, str) and value[:5].lower() == "data:")):
                try:
                    data, suffix = decode_upload(value)
                except ValueError as exc:
                    bad.append(BadRow(source, number, key, f"the file in base64: {exc}"))
                    continue
                fixed[key] = uploads.write(data, suffix, f"(the base64 {key} of example {number})")
                uploaded = True
            elif not isinstance(value, str):
                wanted = MEDIA_HELP if kind.from_files else "a string"
                bad.append(BadRow(source, number, key, f"{json_type(value)} where {wanted} is expected"))
        if uploaded and not id_keys & set(item):
            fixed["id"] = str(number)
        out.append(fixed)
    if bad:
        raise DataError(f"{len(bad)} problem(s) in the request", bad)
    return out


def _fields(run: Any, item: dict[str, Any]) -> list[tuple[str, Any]]:
    """(key, kind) of each field of `item` that holds one modality's value; a tabular
    modality's columns are checked by its kind."""
    found = []
    for name, m in run.sources.items():
        kind = KINDS[m.kind]
        if kind.many_columns:
            continue
        found += [(key, kind) for key in dict.fromkeys((name, m.column)) if key in item]
    return found


def problems(exc: Exception, uploads: Uploads) -> list[dict[str, Any]]:
    """A DataError's bad rows as JSON: example number, field and reason."""
    rows = getattr(exc, "rows", None) or []
    return [{"example": r.row, "field": r.column, "reason": uploads.hide(r.reason)} for r in rows]
