"""A validation split too small to choose on is named: the kept epoch, early stopping and
`compare --tune` choose on it (on COCO-mini's 8 validation photos the image model scored
50-67 % and 20 % on the test photos)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

from conftest import write_own_manifest
from mmcli.data.splits import FEW_VALIDATION, warn_small_validation


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_sources_not_rows_are_counted(caplog):
    caplog.set_level(logging.WARNING, logger="mmcli")
    splits = ["train"] * 100 + ["val"] * 40 + ["test"] * 20
    photo = [i // 5 for i in range(len(splits))]  # five caption rows per photo: 8 validation photos
    warn_small_validation(splits, photo, 0.1, "captions.csv")
    (message,) = _warnings(caplog)
    assert "captions.csv: the validation split holds 8 sources" in message
    assert "±35 points" in message and "data.val_fraction=0.1" in message
    caplog.clear()
    warn_small_validation(splits, None, 0.1, "captions.csv")  # the same 40 rows, each its own source
    assert _warnings(caplog) == []


def test_the_threshold_and_an_empty_validation_split(caplog):
    caplog.set_level(logging.WARNING, logger="mmcli")
    for n, warned in ((FEW_VALIDATION - 1, True), (FEW_VALIDATION, False), (0, False)):
        caplog.clear()
        warn_small_validation(["train"] * 50 + ["val"] * n, None, 0.1, "data.csv")
        assert bool(_warnings(caplog)) == warned, n


def test_train_says_it_once_for_a_small_set(tmp_path):
    manifest = write_own_manifest(tmp_path / "own", n=36)
    result = subprocess.run([sys.executable, "-m", "mmcli", "train", str(manifest), "--modalities", "photo",
                             "--epochs", "1", "--out", str(tmp_path / "run")],
                            capture_output=True, text=True, env={**os.environ, "MMCLI_NO_PROGRESS": "1"})
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("the validation split holds") == 1, result.stderr
    assert "examples; the kept epoch" in result.stderr


def test_verification_counts_its_validation_identities(caplog):
    """Three validation speakers with 20 clips each are 3, not 60."""
    caplog.set_level(logging.WARNING, logger="mmcli")
    splits = ["train"] * 100 + ["val"] * 60
    speaker = [i // 20 for i in range(len(splits))]
    warn_small_validation(splits, speaker, 0.1, "voices.csv", "identities")
    (message,) = _warnings(caplog)
    assert "voices.csv: the validation split holds 3 identities" in message
