"""Free Spoken Digit Dataset (Jackson et al.): spoken digits, 8 kHz mono WAV, named
`{digit}_{speaker}_{take}.wav`.

The usual split puts takes 0-4 of every speaker and digit in the test set; the harder one
holds a speaker out. GitHub publishes no checksum of its release archive, so the download
is checked by what it unpacks to: one digest over every recording's name and content,
computed from release v1.0.10.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from mmcli.data.recipes import write_manifest, write_provenance
from mmcli.data.recipes.download import Remote, extract, fetch, tree_digest
from mmcli.errors import BadRow, DataError, UsageError

VERSION = "1.0.10"
REMOTE = Remote(f"https://github.com/Jakobovski/free-spoken-digit-dataset/archive/refs/tags/v{VERSION}.tar.gz")
RECORDINGS_DIGEST = "6a1aafacf40d8a7aeda379f079a39ca7e165fe03f4ed5d63a2ab25f3a8420685"
TEST_TAKES = range(5)
NAME = re.compile(r"^(\d)_([A-Za-z]+)_(\d+)\.wav$")
TARGETS = ("digit", "speaker")


@dataclass(frozen=True)
class Clip:
    path: Path
    digit: str
    speaker: str
    take: int

    @property
    def id(self) -> str:
        return self.path.stem


def download(folder: Path, mirror: Optional[str] = None, progress=None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    archive = fetch(REMOTE, folder, mirror, progress)
    extract(archive, folder)
    archive.unlink()
    recordings = find(folder)
    digest = tree_digest(sorted(recordings.glob("*.wav")), recordings.parent)
    if digest != RECORDINGS_DIGEST:
        raise UsageError(
            f"{REMOTE.url}: the recordings unpacked from it do not match release v{VERSION} "
            f"(content digest {digest[:16]}..., expected {RECORDINGS_DIGEST[:16]}...); nothing was kept"
        )
    return recordings


def find(source: Path) -> Path:
    candidates = [source / "fsdd" / "recordings", source / "recordings", source]
    candidates += sorted(source.glob("free-spoken-digit-dataset-*/recordings"))
    for folder in candidates:
        if folder.is_dir() and any(NAME.match(p.name) for p in folder.glob("*.wav")):
            return folder
    raise UsageError(f"{source}: no FSDD recordings found (files like 0_george_0.wav in "
                     f"{source / 'fsdd' / 'recordings'}, {source / 'recordings'} or {source})")


def clips(recordings: Path) -> list[Clip]:
    found, bad = [], []
    for path in sorted(recordings.glob("*.wav")):
        match = NAME.match(path.name)
        if match is None:
            bad.append(BadRow(path.name, None, None, "name is not {digit}_{speaker}_{take}.wav"))
            continue
        found.append(Clip(path, match.group(1), match.group(2), int(match.group(3))))
    if bad:
        raise DataError(f"{recordings}: recordings with names FSDD does not use", bad)
    return found


def split_of(clip: Clip, holdout_speaker: Optional[str]) -> str:
    if holdout_speaker is not None:
        return "test" if clip.speaker == holdout_speaker else "train"
    return "test" if clip.take in TEST_TAKES else "train"


def build(out: Path, recordings: Path, source_text: str, holdout_speaker: Optional[str] = None,
          progress: Optional[Callable[[int, int], None]] = None, target: str = "digit") -> int:
    """target "digit": the label is the digit, split by take (or --holdout-speaker); "speaker":
    the label is the speaker and there is no split column (a task that verifies speakers draws
    speaker-disjoint splits itself; the takes split would test on the training speakers)."""
    if target not in TARGETS:
        raise UsageError(f"--target {target}: must be one of {', '.join(TARGETS)}")
    if target == "speaker" and holdout_speaker is not None:
        raise UsageError("--holdout-speaker goes with --target digit: with --target speaker the manifest has no split")
    found = clips(recordings)
    speakers = sorted({c.speaker for c in found})
    if holdout_speaker is not None and holdout_speaker not in speakers:
        raise UsageError(f"--holdout-speaker {holdout_speaker}: no such speaker; the recordings have {', '.join(speakers)}")
    (out / "audio").mkdir()
    rows = []
    for i, clip in enumerate(found, start=1):
        shutil.copyfile(clip.path, out / "audio" / clip.path.name)
        rows.append({"id": clip.id, "audio": f"audio/{clip.path.name}",
                     "label": clip.digit if target == "digit" else clip.speaker,
                     "split": split_of(clip, holdout_speaker)})
        if progress is not None and (i % 200 == 0 or i == len(found)):
            progress(i, len(found))
    write_manifest(out, ["id", "audio", "label", "split"] if target == "digit" else ["id", "audio", "label"], rows)
    digest = tree_digest([c.path for c in found], recordings.parent)
    options: dict[str, Optional[str]] = {"holdout_speaker": holdout_speaker}
    if target != "digit":  # the default's recipe.json stays as it was
        options["target"] = target
    write_provenance(out, "fsdd", options,
                     {"source": source_text, "clips": len(found), "speakers": speakers, "recordings_digest": digest,
                      "matches_release": digest == RECORDINGS_DIGEST})
    return len(rows)
