"""Warm start: `model.init_from` and `compare`'s fused runs starting from its unimodal runs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from test_compare_engine import cli, summary


def state(run: Path, weights: str = "best") -> dict:
    return load_file(str(run / f"{weights}.safetensors"))


def part(weights: dict, prefix: str) -> dict:
    """The parameters under `prefix`; batch-norm statistics move in training whatever the
    learning rate, so they are left out."""
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    return {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix) and not k.endswith(buffers)}


def same(a: dict, b: dict, tol: float = 1e-6) -> bool:
    return a.keys() == b.keys() and all(float((a[k].float() - b[k].float()).abs().max()) <= tol for k in a)


@pytest.fixture(scope="module")
def unimodal(toy_small, tmp_path_factory) -> dict[str, Path]:
    """One audio run and one text run of the toy set, seed 0, on the default split."""
    root = tmp_path_factory.mktemp("uni")
    runs = {}
    for m in ("audio", "text"):
        runs[m] = root / m
        cli("train", toy_small, "--modalities", m, "--epochs", "2", "--out", runs[m], "--quiet")
    return runs


def test_init_from_copies_each_encoder_and_its_head_into_the_fused_model(unimodal, toy_small, tmp_path):
    """With a learning rate of ~0 the fused run keeps what it started from: the unimodal
    runs' encoders, and their heads as its per-modality heads."""
    out = tmp_path / "fused"
    cli("train", toy_small, "--modalities", "audio,text", "--fusion", "sum", "--epochs", "1",
                 "--set", "train.lr=1e-12", "--set", f"model.init_from.audio={unimodal['audio']}",
                 "--set", f"model.init_from.text={unimodal['text']}", "--out", out)
    fused = state(out)
    for m, run in unimodal.items():
        theirs = state(run)
        assert same(part(fused, f"encoders.{m}."), part(theirs, f"encoders.{m}."))
        assert same(part(fused, f"aux_heads.{m}."), part(theirs, "head."))
        assert str(run) in (out / "config.yaml").read_text()  # where it started is kept with the run
    # from scratch, the same run starts elsewhere
    cold = tmp_path / "cold"
    cli("train", toy_small, "--modalities", "audio,text", "--fusion", "sum", "--epochs", "1", "--set", "train.lr=1e-12",
        "--out", cold, "--quiet")
    assert not same(part(state(cold), "encoders.audio."), part(state(unimodal["audio"]), "encoders.audio."))


def test_init_from_refuses_what_does_not_fit(unimodal, toy_small, tmp_path):
    def refused(*sets: str) -> str:
        args = [a for s in sets for a in ("--set", s)]
        result = cli("train", toy_small, "--modalities", "audio,text", "--epochs", "1", *args, "--out", tmp_path / "x",
                     check=False)
        assert result.returncode == 2, result.stderr
        return result.stderr

    # another run's modality: its encoder is not this one's
    err = refused(f"model.init_from.audio={unimodal['text']}")
    assert "model.init_from.audio" in err and "not this model's encoder" in err
    # another split: its weights learnt from this run's test rows
    err = refused(f"model.init_from.audio={unimodal['audio']}", "data.split_seed=5")
    assert "rows of this run's validation and test splits" in err
    err = refused(f"model.init_from.audio={tmp_path / 'nothing'}")
    assert "not a finished run folder" in err
    err = refused(f"model.init_from.image={unimodal['audio']}")
    assert "no modality 'image'" in err
    # another encoder size
    err = refused(f"model.init_from.audio={unimodal['audio']}", "model.feature_dim=32")
    assert "model.init_from.audio" in err and "shape" in err
    # a text run whose tokenizer numbered the words otherwise (as before unseen words were one
    # [UNK]: a '##' piece per character), even where the embedding has the same number of rows
    older = tmp_path / "older-text"
    shutil.copytree(unimodal["text"], older)
    tokenizer = json.loads((older / "tokenizer-text.json").read_text())
    vocab = tokenizer["model"]["vocab"]
    a, b = sorted(vocab, key=vocab.get)[-2:]
    vocab[a], vocab[b] = vocab[b], vocab[a]
    (older / "tokenizer-text.json").write_text(json.dumps(tokenizer))
    err = refused(f"model.init_from.text={older}")
    assert "model.init_from.text" in err and "another vocabulary" in err


@pytest.fixture(scope="module")
def warm(toy_small, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("warm") / "cmp"
    cli("compare", "unimodal", "multimodal:sum", "--data", toy_small, "--epochs", "1", "--seeds", "2", "--jobs", "2",
        "--set", "train.lr=1e-12", "--out", out, "--quiet")
    return out


def test_compare_starts_each_fused_run_from_the_unimodal_runs_of_its_seed(warm):
    plan = json.loads((warm / "compare.json").read_text())
    cells = {(c["variant"], c["seed_index"]): k for k, c in enumerate(plan["cells"])}
    assert plan["warm_start"] is True
    for seed in (0, 1):
        fused = plan["cells"][cells[("multimodal:sum", seed)]]
        assert fused["after"] == {m: cells[(f"unimodal:{m}", seed)] for m in plan["modalities"]}
        weights = state(warm / fused["run"])
        for m in plan["modalities"]:
            source = warm / plan["cells"][cells[(f"unimodal:{m}", seed)]]["run"]
            assert same(part(weights, f"encoders.{m}."), part(state(source), f"encoders.{m}."))
    assert all("after" not in c for c in plan["cells"] if c["variant"].startswith("unimodal"))
    assert "Warm start: each run of `multimodal:sum` started" in (warm / "report.md").read_text()


def test_no_warm_start_trains_from_scratch_and_is_a_different_plan(warm, toy_small, tmp_path):
    out = tmp_path / "cold"
    result = cli("compare", "unimodal", "multimodal:sum", "--data", toy_small, "--epochs", "1", "--seeds", "2",
                 "--jobs", "2", "--set", "train.lr=1e-12", "--no-warm-start", "--out", out)
    plan = json.loads((out / "compare.json").read_text())
    assert plan["warm_start"] is False and all("after" not in c for c in plan["cells"])
    assert "--no-warm-start" in plan["command"] and "--no-warm-start" in (out / "report.md").read_text()
    assert "Warm start: each run" not in (out / "report.md").read_text()
    fused = next(c for c in plan["cells"] if c["variant"] == "multimodal:sum")
    warm_cell = next(c for c in json.loads((warm / "compare.json").read_text())["cells"] if c["variant"] == "multimodal:sum")
    assert fused["fingerprint"] != warm_cell["fingerprint"]  # a different run: never reused for the other
    assert not same(part(state(out / fused["run"]), "encoders.audio."), part(state(warm / warm_cell["run"]), "encoders.audio."))
    assert "multimodal:sum" in result.stdout
    bad = cli("compare", "--collect", out, "--no-warm-start", check=False)
    assert bad.returncode == 2 and "--no-warm-start" in bad.stderr


def test_a_fused_job_runs_the_unimodal_jobs_it_starts_from(toy_small, tmp_path):
    out = tmp_path / "cmp"
    printed = cli("compare", "multimodal:sum", "unimodal", "--data", toy_small, "--epochs", "1", "--out", out, "--print-jobs")
    plan = json.loads((out / "compare.json").read_text())
    fused = next(k for k, c in enumerate(plan["cells"]) if c["variant"] == "multimodal:sum")
    assert fused == 0  # listed first in the plan, printed last: after the jobs it starts from
    assert printed.stdout.splitlines()[-1].endswith("--job 0")
    result = subprocess.run([sys.executable, "-m", "mmcli", "compare", "--out", str(out), "--job", "0"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert len(list(out.glob("runs/*/compare-result.json"))) == 4  # its three sources ran first, in this process
    cli("compare", "--collect", out)
    assert {r["variant"]: r["n"] for r in summary(out)} == {"multimodal:sum": 1, "unimodal:image": 1, "unimodal:audio": 1,
                                                            "unimodal:text": 1}


def test_parameters_that_start_trained_learn_at_the_scaled_rate():
    import torch

    from mmcli.config import TrainConfig
    from mmcli.training.setup import make_optimizer

    model = torch.nn.ModuleDict({"enc": torch.nn.Linear(3, 3), "head": torch.nn.Linear(3, 2)})
    model.trained_prefixes = ["enc."]

    def rates(scale: float) -> dict[int, float]:
        optimizer, _ = make_optimizer(model, TrainConfig(lr=0.01, epochs=1, trained_lr_scale=scale, warmup_epochs=0), 1)
        return {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}

    scaled = rates(0.1)
    assert scaled[id(model["enc"].weight)] == pytest.approx(0.001) and scaled[id(model["enc"].bias)] == pytest.approx(0.001)
    assert scaled[id(model["head"].weight)] == pytest.approx(0.01) and scaled[id(model["head"].bias)] == pytest.approx(0.01)
    assert set(rates(1.0).values()) == {0.01}
