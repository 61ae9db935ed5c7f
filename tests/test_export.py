"""`mmcli export`: ONNX and TorchScript models that reproduce a run's predictions, and a
preprocessing.json that is enough to prepare their inputs without mmcli.

Two runs are trained once (one epoch on a 72-example toy set, text through the
embedding bag, whose graph is captured faster than the Transformer's; docs/export.md's
example exports a run with the Transformer): a classification run reading image, text
and audio, and a retrieval run aligning image and text. Each export is made once and
shared. The exported files are run by onnxruntime and torch.jit.load on
toy examples (some lacking a modality) and compared with `mmcli predict` and `predict
--embed`; the deploy script of docs/export.md runs in a process that never imports mmcli.
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("onnxruntime", reason="the export extra is not installed (pip install 'mmcli[export]')")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """The two runs, and few.csv: six toy rows, one without audio, one without text, one without an image."""
    from typer.testing import CliRunner

    from mmcli.cli import app
    from mmcli.data.toy import make_toy

    base = tmp_path_factory.mktemp("export")
    toy_small = make_toy(base / "toy", n=72, seed=3)  # 6 per class: quick to preprocess and train
    for name, extra in (("cls", []), ("ret", ["--task", "retrieval", "--modalities", "image,text"])):
        result = CliRunner().invoke(app, ["train", str(toy_small), "--epochs", "1", "--out", str(base / name),
                                          "--encoder", "text=bag", "--quiet", *extra])
        assert result.exit_code == 0, result.output
    folder = toy_small.parent
    rows = list(csv.DictReader(open(toy_small, encoding="utf-8")))[:6]
    for row in rows:
        row["image"], row["audio"] = str(folder / row["image"]), str(folder / row["audio"])
    rows[1]["audio"], rows[2]["text"], rows[3]["image"] = "", "", ""
    with open(base / "few.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return base


EXPORTS: dict[tuple[str, str], dict] = {}


def exported(runs: Path, run: str, fmt: str) -> tuple[Path, dict]:
    """Each run exported in each format once, through the CLI: (folder, its stdout summary)."""
    from typer.testing import CliRunner

    from mmcli.cli import app

    out = runs / f"{run}-{fmt}"
    if (run, fmt) not in EXPORTS:
        result = CliRunner().invoke(app, ["export", str(runs / run), "--format", fmt, "--out", str(out)])
        assert result.exit_code == 0, result.output
        EXPORTS[(run, fmt)] = json.loads(result.stdout.strip().splitlines()[-1])
    return out, EXPORTS[(run, fmt)]


def predicted(cli, runs: Path, run: str) -> list[dict]:
    """`mmcli predict` on few.csv: every label's probability, or (retrieval) the embeddings."""
    args = ["--embed"] if run == "ret" else ["--top-k", "12"]
    result = cli("predict", runs / run, runs / "few.csv", *args)
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def inputs_by_mmcli(runs: Path, run: str, model: dict) -> list:
    """few.csv's examples as mmcli's own pipeline batches them, laid out as preprocessing.json's inputs say."""
    import torch

    from mmcli.data.dataset import gather_batch
    from mmcli.inference import encode_records, records_from_manifest
    from mmcli.pipeline import load_run

    loaded = load_run(runs / run)
    encoded, _ = encode_records(loaded, records_from_manifest(loaded, runs / "few.csv"))
    batch = gather_batch(encoded, torch.arange(len(encoded)))
    dtypes = {"uint8": torch.uint8, "int64": torch.int64, "float32": torch.float32, "bool": torch.bool}
    where = {"values": batch.inputs, "lengths": batch.lengths, "present": batch.mask}
    return [where[i["role"]][i["modality"]].to(dtypes[i["dtype"]]).contiguous() for i in model["inputs"]]


def run_file(folder: Path, fmt: str, model: dict, tensors: list) -> dict:
    """An exported file's outputs by name, run by onnxruntime or torch.jit.load."""
    import warnings

    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(folder / model["file"]))
        values = session.run(None, {i["name"]: t.numpy() for i, t in zip(model["inputs"], tensors)})
    else:
        import torch

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit.load's deprecation
            values = [v.numpy() for v in torch.jit.load(str(folder / model["file"]))(*tensors)]
    return {o["name"]: v for o, v in zip(model["outputs"], values)}


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_an_exported_classifier_reproduces_predict(runs, cli, fmt):
    folder, summary = exported(runs, "cls", fmt)
    assert summary["passed"] and summary["max_abs_diff"] <= summary["tolerance"] == pytest.approx(1e-4)
    spec = json.loads((folder / "preprocessing.json").read_text())
    (model,) = spec["models"]
    assert model["file"] == ("model.onnx" if fmt == "onnx" else "model.pt")
    assert [i["name"] for i in model["inputs"]] == [
        "image", "image.present", "audio", "audio.lengths", "audio.present", "text", "text.lengths", "text.present"]
    got = run_file(folder, fmt, model, inputs_by_mmcli(runs, "cls", model))
    labels = spec["task"]["labels"]
    want = predicted(cli, runs, "cls")
    assert [p["modalities_used"] for p in want][1:4] == [["image", "text"], ["image", "audio"], ["audio", "text"]]
    for i, p in enumerate(want):  # predict rounds to 6 decimals
        assert len(p["probabilities"]) == len(labels) == 12
        assert max(abs(got["probabilities"][i][labels.index(k)] - v) for k, v in p["probabilities"].items()) < 2e-6
        assert got["probabilities"][i][labels.index(p["label"])] >= got["probabilities"][i].max() - 2e-6  # its top label


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_each_exported_retrieval_tower_reproduces_predict_embed(runs, cli, fmt):
    import numpy as np

    folder, summary = exported(runs, "ret", fmt)
    assert summary["passed"]
    spec = json.loads((folder / "preprocessing.json").read_text())
    suffix = ".onnx" if fmt == "onnx" else ".pt"
    assert [m["file"] for m in spec["models"]] == [f"tower-image{suffix}", f"tower-text{suffix}"]
    want = predicted(cli, runs, "ret")
    for model in spec["models"]:
        (name,) = model["modalities"]
        assert [i["name"] for i in model["inputs"]] == ([name] if name == "image" else [name, f"{name}.lengths"])
        vectors = run_file(folder, fmt, model, inputs_by_mmcli(runs, "ret", model))["unit_embedding"]
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
        compared = [(vectors[i], p[name]) for i, p in enumerate(want) if name in p]
        assert len(compared) == 5  # one row lacks each modality
        assert max(float(np.abs(a - np.array(b)).max()) for a, b in compared) < 2e-6


def deploy_script() -> str:
    """The deploy script that docs/export.md shows."""
    blocks = re.findall(r"^```python\n(.*?)^```", (ROOT / "docs" / "export.md").read_text(encoding="utf-8"), re.S | re.M)
    return next(b for b in blocks if b.startswith('"""deploy.py'))


DRIVER = """
import contextlib, io, json, runpy, sys
script, manifest, folders = sys.argv[1], sys.argv[2], sys.argv[3:]
printed = {}
for folder in folders:
    sys.argv = [script, folder, manifest]
    with contextlib.redirect_stdout(io.StringIO()) as out:
        runpy.run_path(script, run_name="__main__")
    printed[folder] = out.getvalue()
assert not any(m == "mmcli" or m.startswith("mmcli.") for m in sys.modules), "mmcli was imported"
assert "torch" not in sys.modules, "torch was imported"
print(json.dumps(printed))
"""


def test_preprocessing_json_alone_prepares_the_inputs(runs, cli, tmp_path):
    """docs/export.md's script, in a process that never imports mmcli (nor torch), from the raw
    toy files (Pillow, soundfile, librosa, tokenizers, onnxruntime) to the same numbers as predict."""
    script = tmp_path / "deploy.py"
    script.write_text(deploy_script(), encoding="utf-8")
    folders = {run: exported(runs, run, "onnx")[0] for run in ("cls", "ret")}
    done = subprocess.run([sys.executable, "-c", DRIVER, str(script), str(runs / "few.csv"), *map(str, folders.values())],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    for run, folder in folders.items():
        lines = [json.loads(line) for line in printed[str(folder)].splitlines()]
        want = {p["id"]: p for p in predicted(cli, runs, run)}
        if run == "cls":
            labels = json.loads((folder / "preprocessing.json").read_text())["task"]["labels"]
            assert len(lines) == 6 and all(line["probabilities"][labels.index(line["label"])] >=
                                           line["probabilities"][labels.index(want[line["id"]]["label"])] - 2e-6
                                           for line in lines)  # the same top label (up to a tie)
            assert max(abs(line["probabilities"][labels.index(k)] - v)
                       for line in lines for k, v in want[line["id"]]["probabilities"].items()) < 2e-6
        else:
            compared = [(line["unit_embedding"], want[line["id"]][m]) for line in lines
                        for m in ["image" if "image" in line["model"] else "text"] if m in want[line["id"]]]
            assert len(lines) == 12 and len(compared) == 10
            assert max(abs(a - b) for x, y in compared for a, b in zip(x, y)) < 2e-6


def test_export_json_and_preprocessing_json_say_what_was_written(runs):
    from mmcli.pipeline import load_run

    folder, _ = exported(runs, "cls", "onnx")
    record = json.loads((folder / "export.json").read_text())
    assert sorted(record["files"]) == sorted(p.name for p in folder.iterdir())
    assert set(record["files"]) == {"model.onnx", "preprocessing.json", "tokenizer-text.json", "export.json"}
    assert record["exporter"].startswith("torch.onnx.export(dynamo=True)") and record["onnx_opset"] >= 17
    check = record["check"]
    assert check["passed"] and len(check["batches"]) == 3 and "test split" in check["examples"]
    for output in ("logits", "probabilities"):
        numbers = check["models"]["model.onnx"][output]
        assert 0 <= numbers["max_abs_diff"] <= numbers["tolerance"] <= 1e-4 * max(1.0, numbers["largest_value"])
    spec = json.loads((folder / "preprocessing.json").read_text())
    loaded = load_run(runs / "cls")
    d = loaded.config.data
    image, audio, text = spec["modalities"]
    assert (image["kind"], image["column"], image["resize"]["size"]) == ("image", "image", [d.image_size] * 2)
    assert image["inside_model"] == {"normalisation": "(x / 255 - mean) / std per channel", "mean": d.image_mean,
                                     "std": d.image_std}
    assert (audio["mel"]["sr"], audio["mel"]["n_fft"], audio["mel"]["hop_length"], audio["mel"]["n_mels"]) == (
        d.sample_rate, d.n_fft, d.hop_length, d.n_mels)
    assert audio["max_seconds"] == d.max_seconds and audio["db"]["clip"] == [-100.0, 40.0]
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(folder / text["tokenizer"]))
    assert text["max_length"] == d.text_max_len and len(tokenizer.encode("A Red circle.").ids) == d.text_max_len
    assert tokenizer.encode("A Red circle.").ids == loaded.tokenizers["text"].encode("a red CIRCLE.").ids


def test_an_out_folder_is_never_emptied_of_the_users_files(runs, cli, tmp_path):
    import shutil

    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    result = cli("export", runs / "cls", "--format", "torchscript", "--out", out)
    assert result.exit_code == 2 and "holds files already (notes.txt)" in result.output and "--overwrite" in result.output
    result = cli("export", runs / "cls", "--format", "torchscript", "--out", out, "--overwrite")
    assert result.exit_code == 2 and "no export.json" in result.output
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    earlier = tmp_path / "earlier"
    shutil.copytree(exported(runs, "cls", "torchscript")[0], earlier)
    (earlier / "notes.txt").write_text("mine")
    result = cli("export", runs / "cls", "--format", "torchscript", "--out", earlier, "--overwrite")
    assert result.exit_code == 2 and "also holds notes.txt" in result.output
    (earlier / "notes.txt").unlink()
    before = (earlier / "model.pt").stat().st_mtime_ns
    result = cli("export", runs / "cls", "--format", "torchscript", "--out", earlier, "--overwrite", "--examples", "1", "-q")
    assert result.exit_code == 0, result.output
    assert (earlier / "model.pt").stat().st_mtime_ns != before and json.loads(result.stdout)["passed"]
    assert not list(tmp_path.glob(".*export-*"))  # no staging folder left behind


def test_what_cannot_be_exported_is_refused_with_the_reason(runs, cli, tmp_path, monkeypatch):
    result = cli("export", runs / "cls", "--format", "tflite", "--out", tmp_path / "x")
    assert result.exit_code == 2 and "onnx or torchscript" in result.output
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if it were not installed
    result = cli("export", runs / "cls", "--format", "onnx", "--out", tmp_path / "y")
    assert result.exit_code == 2 and "onnxruntime" in result.output and "pip install 'mmcli[export]'" in result.output
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


@pytest.mark.parametrize("task, kind, reason", [
    ("captioning", "image", r"cannot export a captioning run: .*decoder.*beam search"),
    ("classification", "video", r"cannot export modality 'clip' \(video\): .*FFmpeg"),
])
def test_captioning_and_video_are_refused_with_the_reason(task, kind, reason):
    """What `export` asks of a loaded run before it writes anything (a run of each would
    take longer to train than the rest of this file)."""
    from types import SimpleNamespace

    from mmcli.config import Config
    from mmcli.errors import UsageError
    from mmcli.export import _refuse
    from mmcli.heads import make_task

    config = Config()
    config.model.task = task
    run = SimpleNamespace(task=make_task(config), specs={"clip": SimpleNamespace(kind=kind)})
    with pytest.raises(UsageError, match=reason):
        _refuse(run)


def test_a_failed_check_exits_1_with_the_numbers_and_keeps_the_files(runs, cli, tmp_path, monkeypatch):
    from mmcli.export import check

    monkeypatch.setattr(check, "TOLERANCE", -1.0)  # no difference passes, not even 0
    out = tmp_path / "failed"
    result = cli("export", runs / "cls", "--format", "torchscript", "--out", out, "--examples", "2")
    assert result.exit_code == 1 and "differs from the run's by up to" in result.output and "tolerance" in result.output
    record = json.loads((out / "export.json").read_text())
    assert record["check"]["passed"] is False and (out / "model.pt").is_file()


def test_a_copied_run_is_checked_on_data_given_with_data(runs, cli, tmp_path):
    import shutil

    copy = tmp_path / "elsewhere" / "cls"
    shutil.copytree(runs / "cls", copy)  # its config names the training data by a relative path
    result = cli("export", copy, "--format", "torchscript", "--out", tmp_path / "a")
    assert result.exit_code == 2 and "--data" in result.output
    result = cli("export", copy, "--format", "torchscript", "--out", tmp_path / "b", "--data", runs / "few.csv",
                 "--examples", "3")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["passed"] and summary["examples"] == f"the first 3 rows of {runs / 'few.csv'}"
