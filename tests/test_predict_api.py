"""Issue 24: the Python API (mmcli.load / train / compare), and predictions a user can work
with: streaming stdin, --keep-columns, --split, evaluate --errors, misspelt fields, ids a
user can join on, and compare's progress inside the running trainings."""

from __future__ import annotations

import csv
import io
import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

import mmcli

SMALL = ["--set", "data.image_size=32"]


@pytest.fixture(scope="module")
def run(toy_small, tmp_path_factory) -> Path:
    """A toy classification run trained through the Python API (image, audio, text)."""
    out = tmp_path_factory.mktemp("api") / "run"
    result = mmcli.train(toy_small, epochs=1, out=out, set=["data.image_size=32"], seed=0)
    assert result.run == out and (out / "best.safetensors").is_file()
    assert result.metric == "accuracy" and 0.0 <= result.test_scores["accuracy"] <= 1.0
    return out


def _lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_load_predicts_what_the_command_predicts(run, toy_small, cli):
    rows = list(csv.DictReader(open(toy_small, encoding="utf-8")))[:6]
    for r in rows:
        r["image"], r["audio"] = str(toy_small.parent / r["image"]), str(toy_small.parent / r["audio"])
    predictor = mmcli.load(run)
    assert predictor.task == "classification" and set(predictor.modalities) == {"image", "audio", "text"}
    info = predictor.info()
    assert info["labels"] == predictor.labels and {m["kind"] for m in info["modalities"]} == {"image", "audio", "text"}
    assert "accuracy" in info["test_scores"]
    api = predictor.predict(rows, top_k=3)
    command = cli("predict", run, "-", "--top-k", "3", input="".join(json.dumps(r) + "\n" for r in rows))
    assert command.exit_code == 0, command.output
    assert api == _lines(command.stdout)
    assert [a["id"] for a in api] == [r["id"] for r in rows]


def test_a_dataframe_a_dict_and_a_manifest_give_the_same_answers(run, toy_small):
    pandas = pytest.importorskip("pandas")
    manifest = toy_small
    frame = pandas.read_csv(manifest, dtype=str).head(5)
    frame["image"] = [str(toy_small.parent / p) for p in frame["image"]]
    frame["audio"] = [str(toy_small.parent / p) for p in frame["audio"]]
    frame.loc[1, "audio"] = None  # an empty cell: the modality is absent for that row
    predictor = mmcli.load(run)
    from_frame = predictor.predict(frame)
    assert from_frame[1]["modalities_used"] == ["image", "text"]
    alone = predictor.predict(frame.iloc[0].to_dict())[0]  # a batch of one: padded differently, equal to float noise
    assert alone["label"] == from_frame[0]["label"] and alone["score"] == pytest.approx(from_frame[0]["score"], abs=1e-4)
    from_manifest = predictor.predict(manifest)[:5]
    assert [p["label"] for p in from_manifest][2:] == [p["label"] for p in from_frame][2:]


def test_a_misspelt_field_is_an_error_naming_it(run, cli):
    result = cli("predict", run, "-", input=json.dumps({"id": "a", "txet": "a red circle", "image": ""}) + "\n")
    assert result.exit_code == 2
    assert "'txet'" in result.output and "did you mean 'text'" in result.output
    from mmcli.errors import DataError

    with pytest.raises(DataError, match="txet"):
        mmcli.load(run).predict({"txet": "a red circle", "image": ""})


def test_ids_default_to_the_first_file_path(run, toy_small, cli):
    image = str(toy_small.parent / "images" / "00001.png")
    result = cli("predict", run, "-", input=json.dumps({"image": image}) + "\n" + json.dumps({"text": "a red circle"}) + "\n")
    assert result.exit_code == 0, result.output
    first, second = _lines(result.stdout)
    assert first["id"] == image and second["id"] == "2"  # a text alone: its line number


def test_keep_columns_copies_the_input(run, toy_small, cli):
    line = {"id": "k1", "text": "a blue square", "shop": "north", "label": "x"}
    result = cli("predict", run, "-", "--keep-columns", input=json.dumps(line) + "\n")
    assert result.exit_code == 0, result.output
    (answer,) = _lines(result.stdout)
    assert answer["shop"] == "north" and answer["text"] == "a blue square"
    assert answer["input_label"] == "x" and answer["label"] != "x"  # the input's label kept beside the answer's
    result = cli("predict", run, toy_small, "--keep-columns", "--format", "csv")
    assert result.exit_code == 0, result.output
    table = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(table) == 240 and {"image", "audio", "text", "input_label", "label", "score"} <= set(table[0])
    assert table[0]["image"] == "images/00000.png"


def test_split_predicts_the_runs_own_rows(run, cli):
    result = cli("predict", run, "--split", "test", "--keep-columns")
    assert result.exit_code == 0, result.output
    answers = _lines(result.stdout)
    saved = json.loads((run / "eval-test.json").read_text())
    assert len(answers) == saved["n_examples"]
    recorded = json.loads((run / "splits.json").read_text())
    assert len(set(a["id"] for a in answers)) == len(answers)
    accuracy = sum(a["label"] == a["input_label"] for a in answers) / len(answers)
    assert accuracy == pytest.approx(saved["accuracy"], abs=1e-9)  # the rows evaluate scored, answered alike
    assert recorded and cli("predict", run, "--split", "dev").exit_code == 2


def test_evaluate_errors_lists_the_wrong_answers(run, cli, tmp_path):
    out = tmp_path / "wrong.jsonl"
    result = cli("evaluate", run, "--errors", out, "--json")
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout.strip().splitlines()[-1])
    wrong = _lines(out.read_text())
    assert len(wrong) == round(scores["n_examples"] * (1 - scores["accuracy"]))
    assert all(w["true"] != w["label"] for w in wrong)
    assert [w["score"] for w in wrong] == sorted((w["score"] for w in wrong), reverse=True)
    out.write_text("mine\n")
    result = cli("evaluate", run, "--errors", out)
    assert result.exit_code == 2 and "exists" in result.output and out.read_text() == "mine\n"
    result = cli("evaluate", run, "--errors", tmp_path / "wrong.csv")
    assert result.exit_code == 0 and len(list(csv.DictReader(open(tmp_path / "wrong.csv")))) == len(wrong)


def test_predict_answers_each_line_before_the_next_is_written(run):
    """A slow writer: the first answer must come back while stdin is still open."""
    env = {**os.environ, "MMCLI_NO_PROGRESS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "mmcli", "--quiet", "predict", str(run), "-"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(b'{"id": "one", "text": "a red circle"}\n')
        proc.stdin.flush()
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        assert ready, "no answer to the first line while the second was not yet written"
        first = json.loads(proc.stdout.readline())
        assert first["id"] == "one" and proc.poll() is None
        proc.stdin.write(b'{"id": "two", "text": "a blue square"}\n')
        proc.stdin.close()
        second = json.loads(proc.stdout.readline())
        assert second["id"] == "two"
        assert proc.wait(60) == 0
    finally:
        proc.kill() if proc.poll() is None else None


def test_compare_in_python_reports_progress_inside_the_runs(toy_small, tmp_path):
    from mmcli.cli.common import resolve_config
    from mmcli.compare.runner import run_compare

    cfg = resolve_config(None, {"data.manifest": str(toy_small), "train.epochs": 2}, ["data.image_size=32"])
    heard: list[tuple] = []
    result = run_compare(cfg, ["unimodal:text", "unimodal:audio"], 1, tmp_path / "cmp", jobs=2,
                         on_epoch=lambda *event: heard.append(event))
    assert {r["variant"] for r in result.summary} == {"unimodal:text", "unimodal:audio"}
    names = {e[0] for e in heard}
    assert names == {"unimodal:text seed 0", "unimodal:audio seed 0"}
    assert all(e[2] == 2 and 0 <= e[1] <= 2 and e[4] == 2 for e in heard)
    assert any(e[1] == 0 for e in heard) and any(e[1] >= 1 for e in heard)  # started, then an epoch finished
    again = mmcli.compare(["unimodal:text"], data=toy_small, epochs=1, out=tmp_path / "py",
                          set=["data.image_size=32"])
    assert [r["variant"] for r in again.summary] == ["unimodal:text"] and len(again.results) == 1


def test_preprocessing_progress_ends_on_a_cache_hit(toy_small):
    from mmcli.config import resolve
    from mmcli.data.preprocess import preprocess

    config = resolve(None, {"data.manifest": str(toy_small)}, ["data.image_size=32"]).data
    preprocess(str(toy_small), config)  # made, or found in the cache
    calls: list[tuple] = []
    start = time.perf_counter()
    table = preprocess(str(toy_small), config, progress=lambda *a: calls.append(a))
    assert time.perf_counter() - start < 30
    assert calls and calls[-1] == (len(table), len(table))
