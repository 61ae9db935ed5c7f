"""GRID (Cooke et al., 2006) cut into words: one manifest row per spoken word, the video
file with the word's `start` and `end` from the corpus's alignments, so that a clip is the
word (its lips and its sound) and its label the word.

A GRID sentence is six slots, `command colour preposition letter digit adverb`
("bin blue at f two now"); an alignment file (`STEM.align`, beside the video `STEM.mpg`
or in any folder below the one given) lists each word's start and end in 1/1000 of a
video frame at 25 frames a second, with `sil` and `sp` for silence and short pauses.
`slots` chooses which words become rows: the four slots of four words each give a
16-word vocabulary with about 25 examples of every word in 100 sentences."""

from __future__ import annotations

import os
from pathlib import Path

from mmcli.data.recipes import refuse_existing, write_manifest
from mmcli.errors import BadRow, DataError, UsageError

SLOTS = ("command", "colour", "preposition", "letter", "digit", "adverb")
DEFAULT_SLOTS = ("command", "colour", "preposition", "adverb")
VIDEO_SUFFIXES = (".mpg", ".mpeg", ".mp4", ".avi", ".mov")
UNITS_PER_SECOND = 25 * 1000  # the alignments count 1/1000 of a frame at 25 frames a second
PAUSES = frozenset({"sil", "sp"})


def _words(path: Path) -> list[tuple[float, float, str]]:
    """(start s, end s, word) of an alignment file, pauses left out; ValueError with the line."""
    out = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit():
            raise ValueError(f"line {number} is not 'START END WORD': {line[:60]!r}")
        if parts[2] not in PAUSES:
            out.append((int(parts[0]) / UNITS_PER_SECOND, int(parts[1]) / UNITS_PER_SECOND, parts[2]))
    return out


def _videos(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.rglob("*")) if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file()}


def import_grid(folder: Path, out: Path, slots: tuple[str, ...] = DEFAULT_SLOTS) -> tuple[Path, int, int]:
    """Write the word manifest (`video,start,end,label`: no slot column, which would tell
    the model a quarter of the answer); (its path, words, sentences)."""
    unknown = [s for s in slots if s not in SLOTS]
    if unknown or not slots:
        raise UsageError(f"--slots: unknown slot(s) {', '.join(unknown) or '(none given)'} (GRID's: {', '.join(SLOTS)})")
    aligns = sorted(folder.rglob("*.align"))
    if not aligns:
        raise UsageError(f"{folder}: no alignment files (*.align) in it or below it")
    videos = _videos(folder)
    refuse_existing(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows, bad = [], []
    for align in aligns:
        video = videos.get(align.stem)
        try:
            words = _words(align)
        except (ValueError, UnicodeDecodeError) as exc:
            bad.append(BadRow(align.name, None, None, str(exc)))
            continue
        if video is None or len(words) != len(SLOTS):
            bad.append(BadRow(align.name, None, None, f"no video file {align.stem}.* beside it" if video is None
                              else f"{len(words)} words, not GRID's {len(SLOTS)}"))
            continue
        rel = Path(os.path.relpath(video.resolve(), out.parent.resolve())).as_posix()
        rows += [{"video": rel, "start": f"{a:g}", "end": f"{b:g}", "label": w}
                 for slot, (a, b, w) in zip(SLOTS, words) if slot in slots]
    if bad:
        raise DataError(f"{folder}: alignments that cannot be used (nothing was written)", bad)
    write_manifest(out.parent, ["video", "start", "end", "label"], rows, name=out.name)
    return out, len(rows), len(aligns)
