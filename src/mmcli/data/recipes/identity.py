"""Identity recipes, for verification (is this the same person?): `speakers` and `av-identity`.

- `speakers`: LibriSpeech clips as Resemblyzer's repository keeps them (audio_data/:
  `librispeech_test-other/SPEAKER/*.flac`, 10 speakers x 10 clips, and
  `librispeech_train-clean-100/*.flac`, 251 speakers x 1 clip; ../shared/data holds them cut
  to their first 8 s), each cut into non-overlapping segments of `segment_seconds` (a
  trailing piece shorter than a segment is dropped) as 16-bit WAV. `label` is the speaker;
  train-clean-100 speakers are `train`, test-other speakers `test`: the two sets share no
  speaker, and the task draws its validation speakers from the training ones.
- `av-identity`: a SYNTHETIC audio-visual identity set, as AV-MNIST pairs digits: identity
  k (1..40) is ORL person s{k}'s face with the voice of one LibriSpeech train-clean-100
  speaker, drawn from the seed (random.Random(seed).sample of 40 of the speakers, by
  numeric id, whose clip lasts at least 8 s). The face and the voice never met; the pairing
  only says which voice stands for which face. Row j of an identity is photo j with segment
  j of the first 8 s of that speaker's clip cut into `per_identity` equal pieces, so no
  photo or segment serves two rows. No split column: the task keeps identities disjoint.

The manifests hold only the media, `label` and `split`: the clip, subset, person and
speaker of each row are in `segments.csv` / `pairs.csv` beside it, since any other column
of a manifest is detected as a modality, and these would hand the model its label.
"""

from __future__ import annotations

import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from mmcli.data.recipes import write_manifest, write_provenance
from mmcli.data.recipes.download import tree_digest
from mmcli.errors import BadRow, DataError, UsageError

Progress = Optional[Callable[[int, int], None]]
SUBSETS = {"train-clean-100": "train", "test-other": "test"}  # subset -> split
RATE = 16000
NAME = re.compile(r"^(\d+)-(\d+)-(\d+)\.flac$")
VOICE_SECONDS = 8.0  # av-identity cuts the first 8 s of a speaker's clip
PEOPLE = 40
LIBRISPEECH_HOME = ("no download: take the folder audio_data/ of github.com/resemble-ai/Resemblyzer "
                    "(librispeech_test-other/, librispeech_train-clean-100/; LibriSpeech, CC BY 4.0, "
                    "openslr.org/12), or a folder holding librispeech-speakers/ laid out as ../shared/data")
ORL_HOME = ("the ORL (AT&T) face database, AT&T Laboratories Cambridge (free for research use): folders s1..s40 "
            "of photos 1.pgm..10.pgm, in orl-faces/att_faces/ or orl-faces/ as in ../shared/data")


@dataclass(frozen=True)
class Utterance:
    path: Path
    speaker: str
    subset: str

    @property
    def clip(self) -> str:
        return self.path.stem


def find_librispeech(source: Optional[Path]) -> Path:
    """The folder holding librispeech_train-clean-100/ and librispeech_test-other/."""
    if source is None:
        raise UsageError(f"--source DIR is required: {LIBRISPEECH_HOME}")
    source = Path(source)
    if not source.is_dir():
        raise UsageError(f"{source}: no such folder; {LIBRISPEECH_HOME}")
    for folder in (source, source / "librispeech-speakers"):
        if any((folder / f"librispeech_{s}").is_dir() for s in SUBSETS):
            missing = [f"librispeech_{s}" for s in SUBSETS if not (folder / f"librispeech_{s}").is_dir()]
            if missing:
                raise UsageError(f"{folder}: {', '.join(missing)}/ is missing ({LIBRISPEECH_HOME})")
            return folder
    raise UsageError(f"{source}: no LibriSpeech speakers found (librispeech_test-other/ and librispeech_train-clean-100/ "
                     f"in {source} or {source / 'librispeech-speakers'}); {LIBRISPEECH_HOME}")


def utterances(folder: Path, subsets: tuple[str, ...] = tuple(SUBSETS)) -> list[Utterance]:
    """Every clip of the subsets, by subset then name; the speaker comes from the file name."""
    found, bad = [], []
    for subset in subsets:
        for path in sorted((folder / f"librispeech_{subset}").rglob("*.flac")):
            match = NAME.match(path.name)
            if match is None:
                bad.append(BadRow(path.relative_to(folder).as_posix(), None, None,
                                  "name is not {speaker}-{chapter}-{utterance}.flac"))
                continue
            found.append(Utterance(path, match.group(1), subset))
    if bad:
        raise DataError(f"{folder}: clips with names LibriSpeech does not use", bad)
    if not found:
        raise UsageError(f"{folder}: no .flac clips in {', '.join(f'librispeech_{s}/' for s in subsets)}")
    return found


def read_voice(path: Path):
    """The clip's 16-bit samples (mono, 16 kHz, as LibriSpeech is)."""
    import soundfile as sf

    data, rate = sf.read(path, dtype="int16", always_2d=True)
    if rate != RATE or data.shape[1] != 1:
        raise DataError(f"{path}: expected mono audio at {RATE} Hz as in LibriSpeech",
                        [BadRow(path.name, None, None, f"{data.shape[1]} channel(s) at {rate} Hz")])
    return data[:, 0]


def write_voice(path: Path, samples) -> None:
    import soundfile as sf

    sf.write(path, samples, RATE, subtype="PCM_16", format="WAV")


def build_speakers(out: Path, folder: Path, source_text: str, segment_seconds: float = 2.0,
                   progress: Progress = None) -> int:
    if not 0.1 <= segment_seconds <= 60:
        raise UsageError(f"--segment-seconds {segment_seconds}: must be between 0.1 and 60")
    found = utterances(folder)
    size = round(segment_seconds * RATE)
    (out / "audio").mkdir()
    rows: list[dict[str, str]] = []
    too_short = []
    for i, utt in enumerate(found, start=1):
        samples = read_voice(utt.path)
        pieces = len(samples) // size
        if pieces == 0:
            too_short.append(utt.clip)
        for p in range(pieces):
            ex_id = f"{utt.clip}-{p:02d}"
            write_voice(out / "audio" / f"{ex_id}.wav", samples[p * size:(p + 1) * size])
            rows.append({"id": ex_id, "audio": f"audio/{ex_id}.wav", "label": utt.speaker, "split": SUBSETS[utt.subset],
                         "clip": utt.clip, "subset": utt.subset, "start": f"{p * size / RATE:g}",
                         "end": f"{(p + 1) * size / RATE:g}"})
        if progress is not None and (i % 25 == 0 or i == len(found)):
            progress(i, len(found))
    if not rows:
        raise UsageError(f"{folder}: no clip lasts {segment_seconds:g} s; choose a shorter --segment-seconds")
    write_manifest(out, ["id", "audio", "label", "split"], rows)
    write_manifest(out, ["id", "clip", "subset", "start", "end"], rows, name="segments.csv")
    write_provenance(out, "speakers", {"segment_seconds": segment_seconds}, {
        "source": source_text, "clips": {s: sum(u.subset == s for u in found) for s in SUBSETS},
        "speakers": {s: len({u.speaker for u in found if u.subset == s}) for s in SUBSETS},
        "clips_shorter_than_a_segment": too_short, "segments": len(rows),
        "flac_digest": tree_digest([u.path for u in found], folder)})
    return len(rows)


def find_faces(source: Path) -> Path:
    """The folder holding s1/ .. s40/ of the ORL faces."""
    for folder in (source / "orl-faces" / "att_faces", source / "orl-faces", source / "att_faces", source):
        if (folder / "s1").is_dir():
            return folder
    raise UsageError(f"{source}: no ORL faces found (folders s1..s40 in {source / 'orl-faces' / 'att_faces'}, "
                     f"{source / 'orl-faces'} or {source}); get {ORL_HOME}")


def find_av(source: Optional[Path]) -> tuple[Path, Path]:
    if source is None:
        raise UsageError(f"--source DIR is required (no download): a folder holding orl-faces/ and "
                         f"librispeech-speakers/ as ../shared/data. Faces: {ORL_HOME}. Voices: {LIBRISPEECH_HOME}")
    source = Path(source)
    if not source.is_dir():
        raise UsageError(f"{source}: no such folder; it should hold orl-faces/ and librispeech-speakers/ "
                         f"as ../shared/data does")
    return find_faces(source), find_librispeech(source)


def photos(faces: Path, per_identity: int) -> dict[str, list[Path]]:
    """person (s1..s40) -> their first `per_identity` photos, numbered 1, 2, ... (numeric order)."""
    out, bad = {}, []
    for k in range(1, PEOPLE + 1):
        person = f"s{k}"
        found = {int(p.stem): p for p in (faces / person).glob("*.pgm") if p.stem.isdigit()}
        wanted = list(range(1, per_identity + 1))
        if any(j not in found for j in wanted):
            bad.append(BadRow(person, None, None, f"lacks photos {', '.join(f'{j}.pgm' for j in wanted if j not in found)}"))
            continue
        out[person] = [found[j] for j in wanted]
    if bad:
        raise DataError(f"{faces}: the ORL faces are incomplete ({ORL_HOME})", bad)
    return out


def pick_voices(folder: Path, seed: int) -> tuple[list[Utterance], int]:
    """40 train-clean-100 speakers (one clip each, at least 8 s long) drawn from the seed, and
    how many speakers were left out for a shorter clip."""
    import soundfile as sf

    first: dict[str, Utterance] = {}
    for utt in utterances(folder, ("train-clean-100",)):
        first.setdefault(utt.speaker, utt)
    eligible = sorted((s for s, u in first.items() if sf.info(u.path).frames >= VOICE_SECONDS * RATE), key=int)
    if len(eligible) < PEOPLE:
        raise UsageError(f"{folder}: only {len(eligible)} train-clean-100 speakers have a clip of {VOICE_SECONDS:g} s; "
                         f"av-identity needs {PEOPLE}")
    chosen = random.Random(seed).sample(eligible, PEOPLE)
    return [first[s] for s in chosen], len(first) - len(eligible)


def build_av_identity(out: Path, faces: Path, voices: Path, source_text: str, per_identity: int = 10, seed: int = 0,
                      progress: Progress = None) -> int:
    if not 2 <= per_identity <= 10:
        raise UsageError(f"--per-identity {per_identity}: must be between 2 and 10 (ORL has 10 photos a person)")
    people = photos(faces, per_identity)
    speakers, left_out = pick_voices(voices, seed)
    size = int(VOICE_SECONDS * RATE) // per_identity
    (out / "face").mkdir()
    (out / "voice").mkdir()
    rows: list[dict[str, str]] = []
    for k, utt in enumerate(speakers, start=1):
        label, person = f"id{k:02d}", f"s{k}"
        samples = read_voice(utt.path)
        for j, photo in enumerate(people[person], start=1):
            ex_id = f"{label}-{j:02d}"
            shutil.copyfile(photo, out / "face" / f"{ex_id}.pgm")
            write_voice(out / "voice" / f"{ex_id}.wav", samples[(j - 1) * size:j * size])
            rows.append({"id": ex_id, "face": f"face/{ex_id}.pgm", "voice": f"voice/{ex_id}.wav", "label": label,
                         "person": person, "speaker": utt.speaker, "photo": photo.name, "clip": utt.clip,
                         "start": f"{(j - 1) * size / RATE:g}", "end": f"{j * size / RATE:g}"})
        if progress is not None:
            progress(k, PEOPLE)
    write_manifest(out, ["id", "face", "voice", "label"], rows)
    write_manifest(out, ["id", "label", "person", "speaker", "photo", "clip", "start", "end"], rows, name="pairs.csv")
    write_provenance(out, "av-identity", {"per_identity": per_identity, "seed": seed}, {
        "source": source_text, "synthetic_pairing": True,
        "identities": {f"id{k:02d}": {"person": f"s{k}", "speaker": u.speaker, "clip": u.clip}
                       for k, u in enumerate(speakers, start=1)},
        "speakers_left_out_for_a_clip_shorter_than_8s": left_out,
        "faces_digest": tree_digest([p for ps in people.values() for p in ps], faces),
        "voices_digest": tree_digest([u.path for u in speakers], voices)})
    return len(rows)
