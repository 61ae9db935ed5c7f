"""Identity recipes (issue 22): `speakers` (LibriSpeech speakers cut into segments),
`av-identity` (ORL faces paired with LibriSpeech voices, a synthetic pairing) and
`fsdd --target speaker`, built from ../shared/data through the CLI."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from conftest import SHARED_DATA
from test_datasets import rows_of

LIBRI = SHARED_DATA / "librispeech-speakers"
ORL = SHARED_DATA / "orl-faces" / "att_faces"
needs_libri = pytest.mark.skipif(not (LIBRI / "librispeech_test-other").is_dir(),
                                 reason="../shared/data/librispeech-speakers is absent")
needs_fsdd = pytest.mark.skipif(not (SHARED_DATA / "fsdd" / "recordings").is_dir(),
                                reason="../shared/data/fsdd is absent")


def build(out: Path, *args: str) -> Path:
    from typer.testing import CliRunner

    from mmcli.cli import app

    result = CliRunner().invoke(app, ["datasets", "get", *args[:1], str(out), "--source", str(SHARED_DATA),
                                      "--quiet", *args[1:]])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def speakers(tmp_path_factory) -> Path:
    if not (LIBRI / "librispeech_test-other").is_dir():
        pytest.skip("../shared/data/librispeech-speakers is absent")
    return build(tmp_path_factory.mktemp("speakers") / "speakers", "speakers")


@pytest.fixture(scope="module")
def av_identity(tmp_path_factory) -> Path:
    if not (LIBRI / "librispeech_train-clean-100").is_dir() or not ORL.is_dir():
        pytest.skip("../shared/data/librispeech-speakers or orl-faces is absent")
    return build(tmp_path_factory.mktemp("av") / "av", "av-identity")


def test_list_names_the_identity_recipes(cli):
    result = cli("datasets", "list")
    assert result.exit_code == 0, result.output
    table = {r["name"]: r for r in csv.DictReader(io.StringIO(result.stdout))}
    assert {"speakers", "av-identity"} <= set(table)
    assert "synthetic" in table["av-identity"]["what"].lower()
    assert all(table[n]["license"] and table[n]["source"] for n in ("speakers", "av-identity"))


# --- speakers --------------------------------------------------------------------------------

def test_speakers_segments_cover_every_clip_in_2s_pieces(speakers):
    rows = rows_of(speakers / "manifest.csv")
    assert list(rows[0]) == ["id", "audio", "label", "split"]
    expected = {"train": 0, "test": 0}
    for flac in LIBRI.glob("librispeech_*/**/*.flac"):
        split = "test" if "librispeech_test-other" in flac.parts else "train"
        expected[split] += sf.info(flac).frames // 32000  # 2 s at 16 kHz; a shorter tail is dropped
    assert Counter(r["split"] for r in rows) == expected
    test = [r for r in rows if r["split"] == "test"]
    assert len({r["label"] for r in test}) == 10 and len(test) <= 10 * 10 * 4
    assert not {r["label"] for r in test} & {r["label"] for r in rows if r["split"] == "train"}
    for r in rows[::97] + test[::17]:
        info = sf.info(speakers / r["audio"])
        assert (info.samplerate, info.channels, info.subtype, info.format) == (16000, 1, "PCM_16", "WAV")
        assert info.frames == 32000


def test_speakers_side_file_and_content(speakers):
    rows = {r["id"]: r for r in rows_of(speakers / "manifest.csv")}
    side = rows_of(speakers / "segments.csv")
    assert [s["id"] for s in side] == list(rows)
    for s in side[::53]:
        row = rows[s["id"]]
        assert s["clip"].split("-")[0] == row["label"]
        assert {"train-clean-100": "train", "test-other": "test"}[s["subset"]] == row["split"]
        source = next(LIBRI.glob(f"librispeech_{s['subset']}/**/{s['clip']}.flac"))
        start, end = (int(float(s[k]) * 16000) for k in ("start", "end"))
        original, _ = sf.read(source, dtype="int16")
        segment, _ = sf.read(speakers / row["audio"], dtype="int16")
        assert np.array_equal(segment, original[start:end])
    recipe = json.loads((speakers / "recipe.json").read_text())
    assert recipe["recipe"] == "speakers" and recipe["options"] == {"segment_seconds": 2.0}


@needs_libri
def test_speakers_segment_seconds(cli, tmp_path):
    result = cli("datasets", "get", "speakers", tmp_path / "s", "--source", LIBRI, "--segment-seconds", "4", "-q")
    assert result.exit_code == 0, result.output
    rows = rows_of(tmp_path / "s" / "manifest.csv")
    assert sum(r["split"] == "test" for r in rows) == sum(
        sf.info(f).frames // 64000 for f in (LIBRI / "librispeech_test-other").rglob("*.flac"))
    assert sf.info(tmp_path / "s" / rows[0]["audio"]).duration == 4.0


# --- av-identity -----------------------------------------------------------------------------

def test_av_identity_rows_labels_and_no_split(av_identity):
    rows = rows_of(av_identity / "manifest.csv")
    assert list(rows[0]) == ["id", "face", "voice", "label"]  # no split: the task keeps identities disjoint
    assert len(rows) == 400
    counts = Counter(r["label"] for r in rows)
    assert len(counts) == 40 and set(counts.values()) == {10}
    assert len({r["voice"] for r in rows}) == 400 and len({r["face"] for r in rows}) == 400
    digests = {hashlib.sha256((av_identity / r["voice"]).read_bytes()).hexdigest() for r in rows}
    assert len(digests) == 400  # no voice segment used twice


def test_av_identity_faces_and_voices_are_the_rows_people(av_identity):
    pairs = {p["id"]: p for p in rows_of(av_identity / "pairs.csv")}
    speaker_of: dict[str, str] = {}
    clips = {f.stem: f for f in (LIBRI / "librispeech_train-clean-100").glob("*.flac")}
    for r in rows_of(av_identity / "manifest.csv"):
        p = pairs[r["id"]]
        k, j = int(r["label"][2:]), int(r["id"].rsplit("-", 1)[1])
        assert p["person"] == f"s{k}" and p["photo"] == f"{j}.pgm"
        assert (av_identity / r["face"]).read_bytes() == (ORL / f"s{k}" / f"{j}.pgm").read_bytes()
        with Image.open(av_identity / r["face"]) as im:
            assert im.size == (92, 112)
        assert speaker_of.setdefault(r["label"], p["speaker"]) == p["speaker"]  # one voice per identity
        assert p["clip"].split("-")[0] == p["speaker"]
        info = sf.info(av_identity / r["voice"])
        assert (info.samplerate, info.channels, info.frames) == (16000, 1, 12800)  # 0.8 s
        original, _ = sf.read(clips[p["clip"]], dtype="int16")
        voice, _ = sf.read(av_identity / r["voice"], dtype="int16")
        assert np.array_equal(voice, original[(j - 1) * 12800:j * 12800])
    assert len(set(speaker_of.values())) == 40
    recipe = json.loads((av_identity / "recipe.json").read_text())
    assert recipe["inputs"]["synthetic_pairing"] is True
    assert {k: v["speaker"] for k, v in recipe["inputs"]["identities"].items()} == speaker_of


def test_av_identity_seed_decides_the_pairing(av_identity, tmp_path):
    again = build(tmp_path / "again", "av-identity", "--seed", "0")
    for name in ("manifest.csv", "pairs.csv"):
        assert (again / name).read_bytes() == (av_identity / name).read_bytes()
    voice = rows_of(again / "manifest.csv")[123]["voice"]
    assert (again / voice).read_bytes() == (av_identity / voice).read_bytes()
    other = build(tmp_path / "other", "av-identity", "--seed", "1", "--per-identity", "2")
    speakers = {p["label"]: p["speaker"] for p in rows_of(other / "pairs.csv")}
    assert len(rows_of(other / "manifest.csv")) == 80
    assert speakers != {p["label"]: p["speaker"] for p in rows_of(av_identity / "pairs.csv")}
    assert sf.info(other / rows_of(other / "manifest.csv")[0]["voice"]).duration == 4.0


@needs_libri
def test_av_identity_per_identity_is_checked(cli, tmp_path):
    for bad in ("1", "11"):
        result = cli("datasets", "get", "av-identity", tmp_path / "x", "--source", SHARED_DATA, "--per-identity", bad)
        assert result.exit_code == 2 and "--per-identity" in result.output
    assert not any(tmp_path.iterdir())


# --- fsdd --target speaker -------------------------------------------------------------------

@needs_fsdd
def test_fsdd_speaker_target_has_no_split(cli, tmp_path):
    result = cli("datasets", "get", "fsdd", tmp_path / "f", "--source", SHARED_DATA, "--target", "speaker", "-q")
    assert result.exit_code == 0, result.output
    rows = rows_of(tmp_path / "f" / "manifest.csv")
    assert len(rows) == 3000 and list(rows[0]) == ["id", "audio", "label"]
    assert {r["label"] for r in rows} == {"george", "jackson", "lucas", "nicolas", "theo", "yweweler"}
    assert all(r["id"].split("_")[1] == r["label"] for r in rows)
    assert json.loads((tmp_path / "f" / "recipe.json").read_text())["options"]["target"] == "speaker"
    for extra in (["--target", "name"], ["--target", "speaker", "--holdout-speaker", "theo"]):
        result = cli("datasets", "get", "fsdd", tmp_path / "g", "--source", SHARED_DATA, *extra)
        assert result.exit_code == 2 and "--target" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


# --- errors ----------------------------------------------------------------------------------

@pytest.mark.parametrize("recipe", ["speakers", "av-identity"])
def test_missing_source_is_a_usage_error(cli, tmp_path, recipe):
    result = cli("datasets", "get", recipe, tmp_path / "out", "--source", tmp_path / "nowhere")
    assert result.exit_code == 2 and "nowhere" in result.output
    result = cli("datasets", "get", recipe, tmp_path / "out")
    assert result.exit_code == 2 and "Resemblyzer" in result.output and "LibriSpeech" in result.output
    empty = tmp_path / "empty"
    empty.mkdir()
    result = cli("datasets", "get", recipe, tmp_path / "out", "--source", empty)
    assert result.exit_code == 2 and str(empty) in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


@needs_libri
@pytest.mark.parametrize("recipe", ["speakers", "av-identity"])
def test_existing_out_is_left_alone(cli, tmp_path, recipe):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    result = cli("datasets", "get", recipe, out, "--source", SHARED_DATA)
    assert result.exit_code == 2 and "not empty" in result.output
    assert [p.name for p in out.iterdir()] == ["mine.txt"] and (out / "mine.txt").read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
