"""A bad manifest exits with code 2 and row-level messages, no traceback."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import write_own_manifest
from mmcli.cli import app

RUNNER = CliRunner()


def rewrite(manifest: Path, change) -> None:
    with open(manifest, newline="") as handle:
        rows = list(csv.DictReader(handle))
    rows = change(rows) or rows
    with open(manifest, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def check(result, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in result.output, f"{needle!r} not in:\n{result.output}"


@pytest.mark.parametrize("command", ["preprocess", "train"])
def test_missing_file(tmp_path, command):
    manifest = write_own_manifest(tmp_path, n=12)
    (tmp_path / "pics" / "p4.png").unlink()
    check(RUNNER.invoke(app, [command, str(manifest)]), "data.csv, row 5 (line 6), column 'photo'", "file not found: pics/p4.png")


def test_corrupt_image(tmp_path):
    manifest = write_own_manifest(tmp_path, n=12)
    (tmp_path / "pics" / "p2.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a picture")
    check(RUNNER.invoke(app, ["preprocess", str(manifest)]), "row 3", "column 'photo'", "pics/p2.png")


def test_empty_text(tmp_path):
    manifest = write_own_manifest(tmp_path, n=12)

    def blank(rows):
        rows[7]["caption"] = "  "

    rewrite(manifest, blank)
    check(RUNNER.invoke(app, ["preprocess", str(manifest)]), "row 8", "column 'caption'", "text is empty")


def test_missing_label_column(tmp_path):
    manifest = write_own_manifest(tmp_path, n=12)

    def drop(rows):
        return [{k: v for k, v in r.items() if k != "label"} for r in rows]

    rewrite(manifest, drop)
    check(RUNNER.invoke(app, ["train", str(manifest)]), "no label column 'label'", "--set data.label=")


def test_all_problems_reported_at_once_and_skip_keeps_the_rest(tmp_path):
    manifest = write_own_manifest(tmp_path, n=12)
    (tmp_path / "clips" / "c1.wav").unlink()

    def spoil(rows):
        rows[3]["label"] = ""
        rows[5]["caption"] = ""

    rewrite(manifest, spoil)
    result = RUNNER.invoke(app, ["preprocess", str(manifest)])
    check(result, "row 2", "row 4", "row 6", "column 'sound'", "column 'label'", "column 'caption'")
    skipped = RUNNER.invoke(app, ["preprocess", str(manifest), "--on-error", "skip"])
    assert skipped.exit_code == 0, skipped.output
    assert "skipped 3 bad rows" in skipped.output
    total = [r for r in csv.reader(skipped.stdout.splitlines()) if r and r[0] == "all"][0]
    assert total[4] == "9"
