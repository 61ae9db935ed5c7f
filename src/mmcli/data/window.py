"""Part of a recording: a clip's window, in seconds from the start of the file.

A cell of a kind read by time (video, audio) may name part of its file, two ways:

- columns of the manifest, declared as `data.modalities.NAME.start` / `.end` (detected
  when the manifest has numeric columns named `start` and `end` beside such a column);
- a temporal fragment after the path, as W3C Media Fragments write one:
  `clip.mp4#t=12.5,14` (from 12.5 s to 14 s), `clip.mp4#t=12.5` (from 12.5 s on),
  `clip.mp4#t=,14` (the first 14 s); the times in seconds, or as `mm:ss` / `hh:mm:ss`.
  This is also how `predict --video` and `--audio` take a part of a file.

Inside mmcli a cell with its window travels as one string, the path with its fragment
(`with_window`), and the decoders split it (`split`)."""

from __future__ import annotations

import math
import re
from typing import Optional

Window = tuple[Optional[float], Optional[float]]

_FRAGMENT = re.compile(r"^(?P<path>.*)#t=(?:npt:)?(?P<start>[^,#]*)(?:,(?P<end>[^,#]*))?$")


def seconds(text: str) -> Optional[float]:
    """`12.5`, `1:02.5` or `0:01:02.5` as seconds; empty: None. ValueError with the reason."""
    text = text.strip()
    if not text:
        return None
    parts = text.split(":")
    if len(parts) > 3:
        raise ValueError(f"'{text}' is not a time (seconds, mm:ss or hh:mm:ss)")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise ValueError(f"'{text}' is not a time (seconds, mm:ss or hh:mm:ss)") from None
    if not all(math.isfinite(v) and v >= 0 for v in values) or any(v >= 60 for v in values[1:-1]):
        raise ValueError(f"'{text}' is not a time (seconds, mm:ss or hh:mm:ss, at least 0)")
    total = 0.0
    for v in values:
        total = total * 60 + v
    return total


def check(start: Optional[float], end: Optional[float]) -> None:
    if start is not None and end is not None and end <= start:
        raise ValueError(f"the clip ends ({end:g} s) before it starts ({start:g} s)")


def split(cell: str) -> tuple[str, Optional[Window]]:
    """A cell into its path and its window (None: the whole file). ValueError with the
    reason when the fragment is not a window."""
    match = _FRAGMENT.match(cell)
    if match is None:
        return cell, None
    start, end = seconds(match["start"]), seconds(match["end"] or "")
    check(start, end)
    return match["path"], (start, end)


def path_of(cell: str) -> str:
    """The file a cell names, with or without a fragment (checked or not): what detection
    reads the file's type from."""
    match = _FRAGMENT.match(cell)
    return cell if match is None else match["path"]


def with_window(path: str, start: str, end: str) -> str:
    """A path with the window of two cells (seconds, either may be empty) as its fragment,
    as written: `split` checks it when the cell is read."""
    start, end = start.strip(), end.strip()
    if not start and not end:
        return path
    return f"{path}#t={start}" + (f",{end}" if end else "")
