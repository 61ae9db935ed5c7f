"""`mmcli train --nproc 2`: real torch.distributed (gloo on the CPU) through torchrun's
launcher, on the toy data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ARGS = ["--epochs", "3", "--batch-size", "32", "--seed", "1", "--set", "train.patience=0"]


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


def _mmcli(*args, env=None) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "mmcli", *map(str, args)], capture_output=True, text=True,
                            env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_two_processes_train_like_one_with_the_same_global_batch(toy_small, tmp_path):
    scratch = tmp_path / "tmp"  # where the other ranks' throwaway folders go
    scratch.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch)}
    # each rank's batches come from a loader worker of its own (the shard is taken in the rank)
    ddp = _mmcli("train", toy_small, *ARGS, "--nproc", "2", "--loader-workers", "1", "--out", tmp_path / "ddp", env=env)
    _mmcli("train", toy_small, *ARGS, "--out", tmp_path / "single")
    info = json.loads((tmp_path / "ddp" / "provenance.json").read_text())
    train_examples = json.loads((tmp_path / "ddp" / "data.json").read_text())["splits"]["train"]
    # both ranks took part, each on half of every global batch
    assert info["world_size"] == 2
    assert "loader_workers: 1" in (tmp_path / "ddp" / "config.yaml").read_text()
    assert sum(info["examples_per_rank"]) == 3 * train_examples and min(info["examples_per_rank"]) >= train_examples
    # only rank 0 wrote: one run folder, no other folder left anywhere
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp", "single", "tmp"]
    assert not list(scratch.glob("mmcli-rank*"))  # (torchrun leaves its own torchelastic_* folders)
    assert ddp.stdout.count('"run"') == 1  # one summary, from rank 0
    # the same training up to the ranks' own dropout draws and batch-norm statistics
    for a, b in zip(_metrics(tmp_path / "ddp"), _metrics(tmp_path / "single")):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=0.05)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=0.05)
    assert _metrics(tmp_path / "ddp")[-1]["train_loss"] < _metrics(tmp_path / "ddp")[0]["train_loss"]
    # the run folder serves like any other
    _mmcli("evaluate", tmp_path / "ddp")


def test_nproc_refuses_an_existing_run_folder_before_starting(toy_small, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "x").write_text("keep me")
    result = subprocess.run([sys.executable, "-m", "mmcli", "train", str(toy_small), "--nproc", "2", "--out",
                             str(tmp_path / "run")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "--overwrite" in result.stderr and "torchrun" not in result.stderr
    assert (tmp_path / "run" / "x").read_text() == "keep me"


@pytest.mark.parametrize("task,metric", [("retrieval", "mean_recall"), ("captioning", "bleu4")])
def test_nproc_trains_crossmodal_tasks_on_data_without_a_label_column(toy_small, tmp_path, task, metric):
    """The launcher preprocesses as the task asks (it once demanded a label column)."""
    captions = toy_small.parent / "captions.csv"
    assert "label" not in captions.read_text().splitlines()[0].split(",")
    _mmcli("train", captions, "--task", task, "--modalities", "image,caption", "--epochs", "1", "--nproc", "2",
           "--out", tmp_path / task, "--set", "data.image_size=32")
    assert metric in json.loads((tmp_path / task / "eval-test.json").read_text())


def test_preprocess_and_nproc_take_transcription_data_without_a_label_column(toy_small, tmp_path):
    """Speech and its transcript only (the toy's audio read as saying its text): the task's columns, no label."""
    import csv

    rows = list(csv.DictReader(open(toy_small, encoding="utf-8")))[:120]
    speech = tmp_path / "speech.csv"
    with open(speech, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "audio", "transcript"])
        writer.writeheader()
        writer.writerows({"id": r["id"], "audio": str(toy_small.parent / r["audio"]), "transcript": r["text"]} for r in rows)
    counts = _mmcli("preprocess", speech, "--set", "model.task=transcription").stdout.strip().splitlines()[-1]
    assert [int(x) for x in counts.split(",")][3] == 120  # train, val, test, total
    _mmcli("train", speech, "--task", "transcription", "--epochs", "1", "--nproc", "2", "--out", tmp_path / "asr")
    scores = json.loads((tmp_path / "asr" / "eval-test.json").read_text())
    assert scores["wer"] >= 0 and scores["n_examples"] > 0 and "baseline_cer" in scores
