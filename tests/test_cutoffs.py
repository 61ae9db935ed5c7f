"""Length limits say what they cut: a data.max_seconds or data.text_max_len that cuts
training examples is logged with how many of them it cuts (issue 19, the cut-offs)."""

from __future__ import annotations

from conftest import write_own_manifest


def test_a_limit_that_cuts_training_examples_says_how_many(tmp_path, cli):
    manifest = write_own_manifest(tmp_path / "own", n=24)  # 0.5 s clips, captions of 6 to 8 words
    result = cli("train", manifest, "--epochs", "1", "--modalities", "sound,caption", "--out", tmp_path / "cut",
                 "--set", "data.max_seconds=0.25", "--set", "data.text_max_len=4")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "cut there" in line]
    assert any(line.startswith("warning: sound:") and "data.max_seconds=0.25 s" in line for line in lines), result.output
    assert any(line.startswith("warning: caption:") and "data.text_max_len=4 tokens" in line for line in lines)
    train_rows = next(int(w.split(" of the ")[1].split()[0]) for w in lines if "sound" in w)
    assert f"sound: {train_rows} of the {train_rows} training examples" in result.output  # every clip is longer


def test_limits_that_cut_nothing_say_nothing(tmp_path, cli):
    manifest = write_own_manifest(tmp_path / "own", n=24)
    result = cli("train", manifest, "--epochs", "1", "--modalities", "sound,caption", "--out", tmp_path / "whole",
                 "--set", "data.max_seconds=1", "--set", "data.text_max_len=32")
    assert result.exit_code == 0, result.output
    assert "cut there" not in result.output
