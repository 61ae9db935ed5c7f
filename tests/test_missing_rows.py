"""Rows that lack a modality, sparse columns and skipped rows (issue 23, items 5 and 7).

A column filled in fewer than half the rows is not a modality (a warning says so and how
to declare it); an empty cell of a modality is a missing value: a bad row by default
(`data.missing: fail`), kept and masked as at prediction time with `data.missing: allow`.
A mistyped JSONL key is blamed on its row. `train` says what `data.on_error: skip` left
out, and warns when that is most of the data or a whole class.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from conftest import write_own_manifest

N = 12  # rows of every manifest here: labels cat, dog, bird in turn (row i: label of i % 3)


def edit_csv(manifest: Path, change) -> None:
    with open(manifest, newline="") as handle:
        rows = list(csv.DictReader(handle))
    change(rows)
    columns = list(dict.fromkeys(k for r in rows for k in r))
    with open(manifest, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)


def edit_jsonl(manifest: Path, change) -> None:
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    change(rows)
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))


def blank(*columns: str, row: int = 1):
    def change(rows):
        for column in columns:
            rows[row][column] = ""
    return change


def fill(column: str, rows_filled: set[int], value: str = "blurry, taken at night"):
    def change(rows):
        for i, r in enumerate(rows):
            r[column] = value if i in rows_filled else ""
    return change


def rename_key(old: str, new: str, row: int = 3):
    def change(rows):
        rows[row][new] = rows[row].pop(old)
    return change


def extra_key(key: str, value, row: int = 5):
    def change(rows):
        rows[row][key] = value
    return change


def only_notes(rows):
    for i, r in enumerate(rows):
        for key in ("photo", "sound", "caption"):
            r.pop(key)
        r["notes"] = "x" if i == 0 else ""


ALLOW = ("--set", "data.missing=allow")
DECLARE_NOTES = ("--set", "data.modalities={photo: {column: photo, kind: image}, notes: {column: notes, kind: text}}")

# id, manifest format, change, extra arguments of `preprocess`, exit code, needles, needles that must not appear
CASES = [
    ("missing-text-fails-by-default", "csv", blank("caption"), (), 2,
     ["1 bad rows", "row 2 (line 3), column 'caption': text is empty", "--set data.missing=allow"], []),
    ("missing-image-fails-by-default", "csv", blank("photo"), (), 2, ["row 2", "column 'photo': image is empty"], []),
    ("missing-text-allowed", "csv", blank("caption"), ALLOW, 0,
     [f"{N} examples", "caption (text, column caption) missing in 1 rows"], ["bad rows"]),
    ("missing-image-allowed", "csv", blank("photo"), ALLOW, 0, ["photo (image, column photo) missing in 1 rows"], []),
    ("missing-audio-allowed", "csv", blank("sound"), ALLOW, 0, ["sound (audio, column sound) missing in 1 rows"], []),
    ("every-modality-missing", "csv", blank("photo", "sound", "caption"), ALLOW, 2,
     ["1 bad rows", "row 2 (line 3)", "has none of its modalities"], []),
    ("missing-label-allowed-still-bad", "csv", blank("label"), ALLOW, 2, ["row 2", "column 'label': label is empty"], []),
    ("missing-file-is-not-missing", "csv", lambda rows: rows[1].update(photo="pics/gone.png"), ALLOW, 2,
     ["row 2", "file not found: pics/gone.png"], []),
    ("missing-bad-value", "csv", blank(), ("--set", "data.missing=maybe"), 2, ["data.missing", "'fail' or 'allow'"], []),
    ("sparse-csv-column", "csv", fill("notes", {2}), (), 0,
     ["column 'notes' is filled in only 1 of 12 rows", "declare it under data.modalities", f"{N} examples"],
     ["notes (text"]),
    ("sparse-jsonl-key", "jsonl", extra_key("notes", "blurry"), (), 0,
     ["column 'notes' is filled in only 1 of 12 rows", f"{N} examples"], ["notes (text", "bad rows"]),
    ("sparse-jsonl-number", "jsonl", extra_key("rating", 4), (), 0,
     ["column 'rating' is filled in only 1 of 12 rows", f"{N} examples"], ["tabular"]),
    ("half-filled-column-is-a-modality", "csv", fill("notes", {0, 1, 2, 3, 4, 5, 6}), (), 2,
     ["5 bad rows", "column 'notes': text is empty", "data.missing=allow"], []),
    ("half-filled-column-allowed", "csv", fill("notes", {0, 1, 2, 3, 4, 5, 6}), ALLOW, 0,
     ["notes (text, column notes) missing in 5 rows"], []),
    ("declared-sparse-column-allowed", "csv", fill("notes", {2}), (*DECLARE_NOTES, *ALLOW), 0,
     ["notes (text, column notes) missing in 11 rows", f"{N} examples"], ["is filled in only"]),
    ("only-sparse-columns", "jsonl", only_notes, (), 2, ["not detected: notes", "data.modalities"], []),
    ("jsonl-mistyped-key", "jsonl", rename_key("caption", "captoin"), (), 2,
     ["1 bad rows", "row 4 (line 4), column 'caption': has no key 'caption' (it has 'captoin'", "a typo?"],
     ["row 1 ", "row 5 ", "column 'captoin': "]),
    ("jsonl-mistyped-label", "jsonl", rename_key("label", "lable"), (), 2,
     ["1 bad rows", "row 4 (line 4), column 'label': has no key 'label' (it has 'lable'"], []),
    ("jsonl-mistyped-key-allowed", "jsonl", rename_key("caption", "captoin"), ALLOW, 0,
     ["caption (text, column caption) missing in 1 rows", f"{N} examples"], []),
    ("jsonl-null-value", "jsonl", lambda rows: rows[3].update(caption=None), (), 2,
     ["row 4 (line 4), column 'caption': text is empty"], ["has no key"]),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_rows(cli, tmp_path, case):
    _, fmt, change, args, code, needles, absent = case
    manifest = write_own_manifest(tmp_path, n=N, fmt=fmt)
    (edit_jsonl if fmt == "jsonl" else edit_csv)(manifest, change)
    result = cli("preprocess", manifest, *args)
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output and "internal error" not in result.output
    for needle in needles:
        assert needle in result.output, f"{needle!r} not in:\n{result.output}"
    for needle in absent:
        assert needle not in result.output, f"{needle!r} in:\n{result.output}"


def test_train_uses_rows_with_a_missing_modality(cli, tmp_path):
    """With data.missing=allow every row trains, and the rows lacking a modality have it
    masked (mask 0, input zeros), as predict masks it; evaluate scores such rows too."""
    from mmcli.config import from_dict, load_yaml
    from mmcli.data.dataset import make_batch
    from mmcli.pipeline import prepare_training

    manifest = write_own_manifest(tmp_path, n=N)
    lacking = {"ex1": "caption", "ex4": "photo", "ex7": "sound", "ex9": "caption"}

    def spoil(rows):
        for r in rows:
            if r["id"] in lacking:
                r[lacking[r["id"]]] = ""

    edit_csv(manifest, spoil)
    run = tmp_path / "run"
    result = cli("train", manifest, "--epochs", "1", "--out", run, *ALLOW)
    assert result.exit_code == 0, result.output
    counts = json.loads((run / "data.json").read_text())["splits"]
    assert sum(counts.values()) == N  # no row was left out

    config = from_dict(load_yaml(run / "config.yaml"))
    assert config.data.missing == "allow"
    config.data.manifest = str(manifest)
    data = prepare_training(config)
    seen = set()
    for split in ("train", "val", "test"):
        part = data.part(split)
        batch = make_batch(part, torch.arange(len(part)), config.data)
        for i, ident in enumerate(part.ids):
            seen.add(ident)
            for name in ("photo", "sound", "caption"):
                assert bool(batch["mask"][name][i]) == (lacking.get(ident) != name), (ident, name)
            if lacking.get(ident) == "photo":
                assert float(batch["photo"][i].abs().sum()) == 0.0  # zeros where the image is missing
    assert set(lacking) <= seen
    assert sum(1 for i in data.part("train").ids if i in lacking) >= 2  # some trained on, not only scored

    evaluated = cli("evaluate", run, "--json")
    assert evaluated.exit_code == 0, evaluated.output
    scores = json.loads(evaluated.stdout.strip().splitlines()[-1])
    assert sum(c["support"] for c in scores["per_class"].values()) == counts["test"]


def test_missing_enters_the_cache_key(cli, tmp_path):
    """The same data with data.missing=allow is another cache entry, not the entry
    that on_error=skip made without the rows that lack a modality."""
    manifest = write_own_manifest(tmp_path, n=N)
    edit_csv(manifest, blank("caption"))
    skipped = cli("preprocess", manifest, "--on-error", "skip")
    assert skipped.exit_code == 0 and f"{N - 1} examples" in skipped.output, skipped.output
    allowed = cli("preprocess", manifest, "--on-error", "skip", *ALLOW)
    assert allowed.exit_code == 0 and f"{N} examples" in allowed.output, allowed.output


def _skip_line(output: str) -> str:
    lines = [line for line in output.splitlines() if "skipped" in line and "bad rows, listed in" in line]
    assert len(lines) == 1, output
    return lines[0][lines[0].index("skipped"):]


def test_train_reports_skipped_rows(cli, tmp_path):
    """`train` with on_error=skip says how many rows it left out and where they are
    listed, in the words of `preprocess`."""
    manifest = write_own_manifest(tmp_path, n=N)
    for i in (2, 6):
        (tmp_path / "pics" / f"p{i}.png").unlink()
    trained = cli("train", manifest, "--epochs", "1", "--out", tmp_path / "run", "--set", "data.on_error=skip")
    assert trained.exit_code == 0, trained.output
    line = _skip_line(trained.output)
    assert line.startswith("skipped 2 bad rows, listed in ")
    listed = Path(line.removeprefix("skipped 2 bad rows, listed in ").strip())
    assert listed.name == "bad_rows.csv" and listed.is_file()
    assert {r["row"] for r in csv.DictReader(open(listed))} == {"3", "7"}
    assert "more than half" not in trained.output and "every row of class" not in trained.output
    preprocessed = cli("preprocess", manifest, "--on-error", "skip")
    assert _skip_line(preprocessed.output) == line


@pytest.mark.parametrize("case", ["most-rows-skipped", "class-skipped"])
def test_train_warns_when_skipping_collapses_the_data(cli, tmp_path, case):
    """Skipping more than half the rows, or every row of a class, is said loudly."""
    manifest = write_own_manifest(tmp_path, n=N)
    gone = range(7) if case == "most-rows-skipped" else range(2, N, 3)  # rows 2, 5, 8, 11 are the birds
    for i in gone:
        (tmp_path / "clips" / f"c{i}.wav").unlink()
    result = cli("train", manifest, "--epochs", "1", "--out", tmp_path / "run", "--set", "data.on_error=skip")
    assert result.exit_code == 0, result.output
    if case == "most-rows-skipped":
        assert "warning: " in result.output and "7 of 12 rows are bad and were skipped" in result.output, result.output
        assert "column 'sound'" in result.output
    else:
        assert "every row of class 'bird' was skipped as bad" in result.output, result.output
        labels = json.loads((tmp_path / "run" / "labels.json").read_text())
        assert "bird" not in labels


def test_evaluate_other_data_with_a_missing_modality(cli, tmp_path):
    """A run trained on complete rows scores other data whose rows lack a modality as
    predict would: that modality masked, the row scored, not refused."""
    manifest = write_own_manifest(tmp_path / "own", n=N)
    run = tmp_path / "run"
    assert cli("train", manifest, "--epochs", "1", "--out", run).exit_code == 0
    other = write_own_manifest(tmp_path / "other", n=N)

    def change(rows):
        for r in rows:  # other examples than the training rows, which evaluate leaves out
            r["caption"] = f"{r['caption']} seen again"
        rows[4]["caption"] = ""

    edit_csv(other, change)
    result = cli("evaluate", run, "--data", other, "--json")
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout.strip().splitlines()[-1])
    assert sum(c["support"] for c in scores["per_class"].values()) == N
