"""The real CLI through the whole flow: datasets make, preprocess, train, evaluate,
predict, compare, on the toy data and on a manifest with the test's own files."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mmcli.cli import app

RUNNER = CliRunner()


def run(*args, input=None):
    return RUNNER.invoke(app, [str(a) for a in args], input=input)


def ok(result):
    assert result.exit_code == 0, f"exit {result.exit_code}\n{result.output}\n{result.exception!r}"
    return result


@pytest.fixture(scope="module")
def toy_run(toy_small, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "toy-run"
    ok(run("train", toy_small, "--epochs", "2", "--out", out, "--seed", "1"))
    return out


def jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_datasets_make_toy_refuses_a_non_empty_folder(tmp_path):
    result = ok(run("datasets", "make", "toy", tmp_path / "t", "--n", "24"))
    manifest = Path(result.stdout.strip())
    assert manifest.is_file()
    with open(manifest, newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 24
    again = run("datasets", "make", "toy", tmp_path / "t", "--n", "24")
    assert again.exit_code == 2
    assert "not empty" in again.output
    assert "toy" in ok(run("datasets", "list")).stdout


def test_preprocess_summarises_splits_and_classes(toy_small):
    result = ok(run("preprocess", toy_small))
    rows = list(csv.reader(result.stdout.splitlines()))
    assert rows[0] == ["label", "train", "val", "test", "total"]
    total = [r for r in rows if r[0] == "all"][0]
    assert int(total[4]) == 240 and int(total[1]) + int(total[2]) + int(total[3]) == 240
    assert len(rows) == 1 + 12 + 1  # header, 12 classes, all
    assert "image (image" in result.stderr and "audio (audio" in result.stderr


def test_train_writes_a_complete_relocatable_run_folder(toy_run):
    names = {p.name for p in toy_run.iterdir()}
    for name in ("config.yaml", "labels.json", "tokenizer-text.json", "data.json", "provenance.json",
                 "best.safetensors", "last.safetensors", "metrics.jsonl", "eval-test.json"):
        assert name in names
    epochs = jsonl((toy_run / "metrics.jsonl").read_text())
    assert [e["epoch"] for e in epochs] == [1, 2]
    assert all(0.0 <= e["val_accuracy"] <= 1.0 for e in epochs)
    config = (toy_run / "config.yaml").read_text()
    assert "manifest: ../" in config
    # nothing absolute: no file of the run folder names the temporary folders it lives in
    base = str(toy_run.parent.parent.parent)
    for path in toy_run.iterdir():
        if path.suffix in (".json", ".yaml", ".jsonl"):
            assert base not in path.read_text(), path.name
    prov = json.loads((toy_run / "provenance.json").read_text())
    assert prov["variant"] == "multimodal:concat" and prov["torch"] and prov["python"]


def test_existing_out_needs_overwrite(toy_small, toy_run):
    result = run("train", toy_small, "--epochs", "1", "--out", toy_run)
    assert result.exit_code == 2 and "--overwrite" in result.output


def test_evaluate_json_rates_are_fractions(toy_run):
    scores = json.loads(ok(run("evaluate", toy_run, "--json")).stdout)
    data = json.loads((toy_run / "data.json").read_text())
    assert scores["n_examples"] == data["splits"]["test"]
    assert 0.0 <= scores["accuracy"] <= 1.0 and 0.0 <= scores["macro_f1"] <= 1.0
    matrix = scores["confusion_matrix"]["matrix"]
    assert sum(map(sum, matrix)) == scores["n_examples"]
    correct = sum(matrix[i][i] for i in range(len(matrix)))
    assert correct / scores["n_examples"] == pytest.approx(scores["accuracy"])
    assert set(scores["per_class"]) == set(json.loads((toy_run / "labels.json").read_text()))
    assert (toy_run / "eval-test.json").is_file()
    val = json.loads(ok(run("evaluate", toy_run, "--split", "val", "--json")).stdout)
    assert val["n_examples"] == data["splits"]["val"]


def test_predict_from_manifest_stdin_and_one_example(toy_small, toy_run):
    preds = jsonl(ok(run("predict", toy_run, toy_small, "--top-k", "3")).stdout)
    assert len(preds) == 240
    labels = json.loads((toy_run / "labels.json").read_text())
    for p in preds[:10]:
        assert p["label"] in labels and len(p["probabilities"]) == 3
        assert p["probabilities"][p["label"]] == max(p["probabilities"].values())
        assert sum(p["probabilities"].values()) <= 1.0 + 1e-6
        assert p["modalities_used"] == ["image", "audio", "text"]
    root = toy_small.parent
    lines = json.dumps({"id": "a", "image": str(root / "images/00001.png"), "text": "a crimson roundish thing"}) + "\n"
    stdin = jsonl(ok(run("predict", toy_run, "-", input=lines)).stdout)
    assert stdin[0]["id"] == "a" and stdin[0]["modalities_used"] == ["image", "text"]
    single = jsonl(ok(run("predict", toy_run, "--text", "a big navy object with straight edges")).stdout)
    assert len(single) == 1 and single[0]["modalities_used"] == ["text"]


def test_predict_from_a_moved_run_folder_without_its_data(toy_small, toy_run, tmp_path, monkeypatch):
    """Copy the data and the run elsewhere, then remove both originals: predict still works."""
    data = tmp_path / "data"
    shutil.copytree(toy_small.parent, data)
    before = jsonl(ok(run("predict", toy_run, data / "manifest.csv")).stdout)
    moved = tmp_path / "elsewhere" / "model"
    shutil.copytree(toy_run, tmp_path / "keep")
    shutil.move(str(toy_run), moved)
    try:
        monkeypatch.chdir(tmp_path)
        after = jsonl(ok(run("predict", moved, data / "manifest.csv")).stdout)
        shutil.rmtree(data)
        single = jsonl(ok(run("predict", moved, "--text", "a big navy object")).stdout)
    finally:
        shutil.move(str(tmp_path / "keep"), toy_run)
    assert [p["label"] for p in before] == [p["label"] for p in after]
    assert before[0]["probabilities"] == after[0]["probabilities"]
    assert single[0]["modalities_used"] == ["text"]


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl"])
def test_own_manifest_end_to_end(tmp_path, fmt):
    from conftest import write_own_manifest

    manifest = write_own_manifest(tmp_path / "own", n=36, fmt=fmt)
    out = tmp_path / "run"
    ok(run("train", manifest, "--epochs", "2", "--batch-size", "8", "--out", out, "--fusion", "attention"))
    data = json.loads((out / "data.json").read_text())
    assert {n: m["kind"] for n, m in data["modalities"].items()} == {"photo": "image", "sound": "audio", "caption": "text"}
    scores = json.loads(ok(run("evaluate", out, "--json")).stdout)
    assert scores["n_examples"] == data["splits"]["test"] > 0
    preds = jsonl(ok(run("predict", out, manifest, "--format", "jsonl")).stdout)
    assert [p["id"] for p in preds] == [f"ex{i}" for i in range(36)]
    assert all(p["label"] in ("cat", "dog", "bird") for p in preds)


def test_compare_writes_results_and_summary(toy_small, tmp_path):
    out = tmp_path / "cmp"
    result = ok(run("compare", "unimodal:audio", "multimodal:sum", "--data", toy_small, "--epochs", "1",
                    "--seeds", "2", "--out", out, "--jobs", "1"))
    with open(out / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted((r["variant"], r["seed"]) for r in rows) == [
        ("multimodal:sum", "0"), ("multimodal:sum", "1"), ("unimodal:audio", "0"), ("unimodal:audio", "1")]
    summary = json.loads((out / "summary.json").read_text())
    by = {s["variant"]: s for s in summary}
    for s in summary:
        for key in ("variant", "family", "metric", "mean", "std", "n", "delta_vs_best_unimodal"):
            assert key in s
        values = [float(r["value"]) for r in rows if r["variant"] == s["variant"]]
        assert s["n"] == 2 and s["mean"] == pytest.approx(sum(values) / 2)
    assert by["unimodal:audio"]["delta_vs_best_unimodal"] == 0.0
    assert by["multimodal:sum"]["delta_vs_best_unimodal"] == pytest.approx(by["multimodal:sum"]["mean"] - by["unimodal:audio"]["mean"])
    assert "multimodal:sum" in result.stdout and (out / "report.md").is_file()
    # the same seed gives the same split for every variant: test sizes agree
    sizes = {json.loads((out / r["run"] / "eval-test.json").read_text())["n_examples"] for r in rows}
    assert len(sizes) == 1
    # rerunning into the folder reuses the finished runs
    again = ok(run("compare", "unimodal:audio", "multimodal:sum", "--data", toy_small, "--epochs", "1",
                   "--seeds", "2", "--out", out, "--jobs", "1"))
    with open(out / "results.csv", newline="") as handle:
        assert all(r["reused"] == "True" for r in csv.DictReader(handle))
    assert again.exit_code == 0


def test_compare_rejects_unknown_variants(toy_small, tmp_path):
    result = run("compare", "multimodal:nonsense", "--data", toy_small, "--out", tmp_path / "c")
    assert result.exit_code == 2 and "unknown fusion 'nonsense'" in result.output
    result = run("compare", "unimodal:smell", "--data", toy_small, "--out", tmp_path / "c")
    assert result.exit_code == 2 and "no modality 'smell'" in result.output


def test_list_piped_gives_names_first(toy_small):
    from mmcli.encoders import ENCODERS
    from mmcli.fusion import FUSIONS

    enc = [line.split()[0] for line in ok(run("list", "encoders")).stdout.splitlines()]
    assert enc == ENCODERS.names()
    fus = [line.split()[0] for line in ok(run("list", "fusions")).stdout.splitlines()]
    assert fus == FUSIONS.names() and {"concat", "sum", "weighted", "attention"} <= set(fus)
    from mmcli.heads import TASKS

    tasks = [line.split()[0] for line in ok(run("list", "tasks")).stdout.splitlines()]
    assert tasks == TASKS.names() and {"classification", "retrieval", "captioning"} <= set(tasks)
    assert "multimodal:concat" in ok(run("list", "variants")).stdout


def test_inspect_and_cache(toy_run):
    text = ok(run("inspect", toy_run)).stdout
    assert "multimodal:concat" in text and "epochs run,2 of 2" in text
    listing = ok(run("cache", "list")).stdout
    assert len(listing.splitlines()) >= 2  # header and at least one entry
    cleaned = ok(run("cache", "clean"))
    assert "removed" in cleaned.stderr
    assert len(ok(run("cache", "list")).stdout.splitlines()) <= 1


def test_config_errors_exit_2_and_name_the_key(toy_small, tmp_path):
    result = run("train", toy_small, "--set", "train.epoch=3", "--out", tmp_path / "r")
    assert result.exit_code == 2 and "train.epoch" in result.output and "Traceback" not in result.output
    result = run("train", toy_small, "--set", "nodot", "--out", tmp_path / "r")
    assert result.exit_code == 2 and "section.key" in result.output
    config = tmp_path / "c.yaml"
    config.write_text("model:\n  fusion: 3\n")
    result = run("train", toy_small, "--config", config, "--out", tmp_path / "r")
    assert result.exit_code == 2 and "model.fusion" in result.output
    assert not (tmp_path / "r").exists()


def test_train_without_data_uses_the_builtin_toy_set(tmp_path, monkeypatch):
    import mmcli.data.builtin as builtin

    monkeypatch.setattr(builtin, "TOY_SIZE", 48)  # the real default is 1,200; tests stay small
    monkeypatch.setenv("MMCLI_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "run"
    ok(run("train", "--epochs", "1", "--modalities", "audio", "--out", out))
    data = json.loads((out / "data.json").read_text())
    assert data["source"] == "builtin:toy" and sum(data["splits"].values()) == 48
    from mmcli.data.builtin import TOY_VERSION

    assert (tmp_path / "cache" / "datasets" / f"toy-{TOY_VERSION}-n48-seed0" / "manifest.csv").is_file()
    assert json.loads((out / "provenance.json").read_text())["variant"] == "unimodal:audio"
    scores = json.loads(ok(run("evaluate", out, "--json")).stdout)
    assert scores["modalities"] == ["audio"]


def test_small_data_and_no_validation_split_still_train(tmp_path):
    small = ok(run("datasets", "make", "toy", tmp_path / "t36", "--n", "36")).stdout.strip()
    ok(run("train", small, "--epochs", "1", "--out", tmp_path / "a"))  # 3 per class: val rounds to 0
    ok(run("train", small, "--epochs", "2", "--set", "data.val_fraction=0", "--out", tmp_path / "b"))
    epochs = jsonl((tmp_path / "b" / "metrics.jsonl").read_text())
    assert len(epochs) == 2 and not any(k.startswith("val_") for e in epochs for k in e)
    assert (tmp_path / "b" / "best.safetensors").is_file()
    result = run("train", small, "--epochs", "1", "--set", "eval.metric=f1", "--out", tmp_path / "c")
    assert result.exit_code == 2 and "eval.metric" in result.output


def test_a_failed_overwrite_keeps_the_old_run(toy_small, tmp_path):
    out = tmp_path / "run"
    ok(run("train", toy_small, "--epochs", "1", "--modalities", "audio", "--out", out))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    result = run("train", toy_small, "--epochs", "1", "--out", out, "--overwrite", "--set", "model.fusion=nope")
    assert result.exit_code == 2 and "unknown fusion 'nope'" in result.output
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "a staging folder was left behind"
    ok(run("train", toy_small, "--epochs", "1", "--modalities", "image", "--out", out, "--overwrite"))
    assert json.loads((out / "provenance.json").read_text())["variant"] == "unimodal:image"


def test_evaluate_on_other_data_keeps_the_test_score(toy_small, tmp_path):
    out = tmp_path / "run"
    ok(run("train", toy_small, "--epochs", "1", "--modalities", "text", "--out", out))
    test_score = (out / "eval-test.json").read_text()
    scores = json.loads(ok(run("evaluate", out, "--data", toy_small, "--json")).stdout)
    # every row, less those the run was trained or validated on (tests/test_splits_record.py)
    seen = sum(json.loads((out / "data.json").read_text())["splits"][s] for s in ("train", "val"))
    assert scores["split"] == "all" and scores["n_examples"] + scores["left_out_seen_rows"] == 240
    assert scores["left_out_seen_rows"] >= seen
    assert (out / "eval-test.json").read_text() == test_score
    assert (out / "eval-manifest-all.json").is_file()


def test_compare_retrains_a_run_whose_config_changed(toy_small, tmp_path):
    out = tmp_path / "cmp"
    args = ["compare", "unimodal:text", "--data", toy_small, "--out", out]
    ok(run(*args, "--epochs", "1"))
    ok(run(*args, "--epochs", "2"))
    with open(out / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["reused"] for r in rows] == ["False"]
    assert "epochs: 2" in (out / rows[0]["run"] / "config.yaml").read_text()
    ok(run(*args, "--epochs", "2"))
    with open(out / "results.csv", newline="") as handle:
        assert [r["reused"] for r in csv.DictReader(handle)] == ["True"]


def test_compare_on_one_modality_runs_the_unimodal_family(tmp_path):
    from conftest import write_own_manifest

    manifest = write_own_manifest(tmp_path / "own", n=36)
    lines = manifest.read_text().splitlines()
    keep = [0, 2, 4]  # id, sound, label
    text = "\n".join(",".join(line.split(",")[i] for i in keep) for line in lines) + "\n"
    manifest.write_text(text)
    out = tmp_path / "cmp"
    ok(run("compare", "--data", manifest, "--epochs", "1", "--out", out))
    assert [s["variant"] for s in json.loads((out / "summary.json").read_text())] == ["unimodal:sound"]


def test_the_tokenizer_is_the_same_in_every_process(toy_small):
    import subprocess
    import sys

    code = ("import csv,sys,hashlib; from mmcli.data.text import fit_tokenizer; "
            f"texts=[r['text'] for r in csv.DictReader(open({str(toy_small)!r}))]; "
            "print(hashlib.sha256(fit_tokenizer(texts, 300, 16).to_str().encode()).hexdigest())")
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout for _ in range(3)}
    assert len(outs) == 1


def test_a_unimodal_model_without_its_modality_is_a_clear_error(toy_small, tmp_path):
    out = tmp_path / "audio-only"
    ok(run("train", toy_small, "--epochs", "1", "--modalities", "audio", "--out", out))
    result = run("predict", out, "--text", "a red thing")
    assert result.exit_code == 2 and "no text modality" in result.output
    result = run("predict", out, "-", input=json.dumps({"id": "x", "text": "a red thing"}) + "\n")
    assert result.exit_code == 2 and "stdin, row 1" in result.output and "none of the modalities" in result.output
    result = run("evaluate", out, "--drop", "audio")
    assert result.exit_code == 2 and "nothing would be left" in result.output
