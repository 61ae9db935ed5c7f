"""A run folder from elsewhere cannot make mmcli run code; the same seed gives the same
metrics.jsonl on the CPU (apart from fields that measure time, which end in _s)."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mmcli.cli import app

MARKER = Path("/tmp") / "mmcli-test-pickle-ran"


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


class Payload:
    """Unpickling this would create MARKER: the proof that code ran."""

    def __reduce__(self):
        return (Path.touch, (MARKER,))


@pytest.fixture(scope="module")
def trained(toy_small, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("safe") / "run"
    result = run("train", toy_small, "--modalities", "text", "--epochs", "2", "--seed", "4", "--out", out)
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.parametrize("target", ["best.safetensors", "labels.json", "target.json", "tokenizer-text.json"])
def test_a_pickle_in_a_run_folder_is_refused_and_never_runs(trained, tmp_path, target):
    MARKER.unlink(missing_ok=True)
    run_dir = tmp_path / "run"
    shutil.copytree(trained, run_dir)
    (run_dir / target).write_bytes(pickle.dumps(Payload()))
    for command in (["evaluate", run_dir], ["predict", run_dir, "--text", "a red round thing"]):
        result = run(*command)
        assert result.exit_code == 2, (target, result.output)
        assert "Traceback" not in result.output and "internal error" not in result.output
    assert not MARKER.exists(), "unpickling ran code"


def test_yaml_that_would_run_code_is_refused(trained, tmp_path):
    MARKER.unlink(missing_ok=True)
    run_dir = tmp_path / "run"
    shutil.copytree(trained, run_dir)
    config = run_dir / "config.yaml"
    config.write_text(f"!!python/object/apply:pathlib.Path.touch [!!python/object/apply:pathlib.Path ['{MARKER}']]\n"
                      + config.read_text())
    result = run("evaluate", run_dir)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert not MARKER.exists(), "the YAML loader ran code"


def test_the_same_seed_gives_the_same_metrics_jsonl(toy_small, tmp_path):
    records = []
    for name in ("a", "b"):
        out = tmp_path / name
        result = run("train", toy_small, "--epochs", "2", "--seed", "7", "--out", out)
        assert result.exit_code == 0, result.output
        lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        records.append([{k: v for k, v in r.items() if not k.endswith(("_s", "_time"))} for r in lines])
        assert all("elapsed_s" in r for r in lines)
    assert records[0] == records[1] and len(records[0]) == 2
