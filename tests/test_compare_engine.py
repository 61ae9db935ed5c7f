"""`mmcli compare` as an engine: resumes after a kill, runs in parallel or through
--print-jobs + --collect with the same summary, and reports attribution and robustness."""

from __future__ import annotations

import csv
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

# --jobs 2 everywhere: every run then uses one torch thread, whichever process runs it
ARGS = ["unimodal:audio", "multimodal:sum", "--epochs", "6", "--seeds", "2", "--jobs", "2"]
N_CELLS = 4


def mmcli(*args, check=True) -> subprocess.CompletedProcess:
    """The CLI in a process of its own (what the kill and xargs tests need)."""
    result = subprocess.run([sys.executable, "-m", "mmcli", *map(str, args)], capture_output=True, text=True)
    if check:
        assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def cli(*args, check=True):
    """The CLI in this process (no start-up cost): returncode, stdout, stderr like mmcli()."""
    from typer.testing import CliRunner

    from mmcli.cli import app

    result = CliRunner().invoke(app, [str(a) for a in args])
    out = subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)
    if check:
        assert out.returncode == 0, f"exit {out.returncode}\n{out.stdout}\n{out.stderr}\n{result.exception!r}"
    return out


def summary(out: Path) -> list[dict]:
    return json.loads((out / "summary.json").read_text())


def results(out: Path) -> list[dict]:
    with open(out / "results.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def finished_cells(out: Path) -> int:
    return len(list(out.glob("runs/*/compare-result.json")))


@pytest.fixture(scope="module")
def plain(toy_small, tmp_path_factory) -> Path:
    """The reference: one uninterrupted comparison."""
    out = tmp_path_factory.mktemp("plain") / "cmp"
    cli("compare", *ARGS, "--data", toy_small, "--out", out, "--quiet")
    return out


def test_summary_has_the_documented_fields(plain):
    rows = summary(plain)
    assert [r["variant"] for r in rows] == ["unimodal:audio", "multimodal:sum"]
    for r in rows:
        for key in ("variant", "family", "metric", "mean", "std", "ci_low", "ci_high", "n",
                    "delta_vs_best_unimodal", "p_value", "verdict", "without_audio", "without_text",
                    "p_resampled", "p_resampled_holm", "delta_resampled_low", "delta_resampled_high", "resampled_sources"):
            assert key in r
        assert r["n"] == 2 and r["ci_low"] <= r["mean"] <= r["ci_high"]
    best = next(r for r in rows if r["is_best_unimodal"])
    assert best["p_value"] is None and best["delta_vs_best_unimodal"] == 0.0 and best["p_resampled"] is None
    other = next(r for r in rows if not r["is_best_unimodal"])
    assert 0 < other["p_resampled"] <= 1 and other["resampled_sources"] > 1
    fused = rows[1]
    # robustness columns: the multimodal variant is scored with each modality missing
    assert fused["without_audio"] is not None and fused["without_text"] is not None
    assert rows[0]["without_audio"] is None
    cells = results(plain)
    assert len(cells) == N_CELLS and all(r["without_text"] != "" for r in cells if r["variant"] == "multimodal:sum")
    for name in ("summary.csv", "report.md", "per_class.csv", "compare.png", "compare.json"):
        assert (plain / name).is_file(), name
    from PIL import Image

    with Image.open(plain / "compare.png") as img:
        assert img.format == "PNG" and img.width > 300
    report = (plain / "report.md").read_text()
    assert "paired t-test" in report and "## Missing modalities" in report and "## Per-class differences" in report
    assert "Command: `mmcli compare unimodal:audio" in report
    # the label prior: the toy's fused model clears it on both seeds, so nothing is said
    assert all(0 < r["prior"] < 0.2 for r in rows) and rows[1]["above_prior"] is True and rows[1]["p_vs_prior"] is not None
    assert f"scores {rows[0]['prior']:.4f} on the test split" in report and "Nothing learnt" not in report


def test_a_comparison_on_labels_the_inputs_do_not_carry_says_nothing_was_learnt(toy_small, tmp_path):
    import random

    with open(toy_small, newline="") as handle:
        rows = list(csv.DictReader(handle))
    labels = [r["label"] for r in rows]
    random.Random(0).shuffle(labels)
    manifest = tmp_path / "shuffled.csv"
    with open(manifest, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({**r, "label": label, **{k: str(toy_small.parent / r[k]) for k in ("image", "audio")}}
                         for r, label in zip(rows, labels))
    out = tmp_path / "cmp"
    result = cli("compare", "unimodal:text", "unimodal:audio", "--data", manifest, "--epochs", "2", "--seeds", "3",
                 "--jobs", "1", "--out", out)
    assert "no variant is above the label prior" in result.stderr
    assert all(r["above_prior"] is False for r in summary(out))
    assert "**Nothing learnt**" in (out / "report.md").read_text()


def _children(pid: int) -> set[int]:
    try:
        return {int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}
    except OSError:
        return set()


def test_a_killed_comparison_resumes_and_ends_with_the_same_summary(plain, toy_small, tmp_path):
    """SIGKILL the comparison (no chance to clean up) while its two workers train; the
    workers notice and stop; the rerun skips what finished and ends where a plain run does."""
    out = tmp_path / "cmp"
    proc = subprocess.Popen([sys.executable, "-m", "mmcli", "compare", *ARGS, "--data", str(toy_small), "--out", str(out),
                             "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    workers: set[int] = set()
    while finished_cells(out) < 1 and proc.poll() is None and time.monotonic() < deadline:
        workers |= _children(proc.pid)
        time.sleep(0.02)
    workers |= _children(proc.pid)
    proc.kill()
    proc.wait()
    if sys.platform.startswith("linux"):
        assert workers, "no worker process was seen"
        deadline = time.monotonic() + 10
        while any(Path(f"/proc/{w}").exists() for w in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(Path(f"/proc/{w}").exists() for w in workers), "workers outlived the killed comparison"
    done = finished_cells(out)
    assert 1 <= done < N_CELLS, f"the kill came too late to test anything ({done} of {N_CELLS} finished)"
    assert not (out / "summary.json").exists()
    before = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/compare-result.json")}

    mmcli("compare", *ARGS, "--data", toy_small, "--out", out, "--quiet")
    rows = results(out)
    assert sum(r["reused"] == "True" for r in rows) == done
    for p, mtime in before.items():  # finished runs were not run again
        assert p.stat().st_mtime_ns == mtime
    assert not list(out.glob("runs/.*")), "a killed run's staging folder was left behind"
    assert summary(out) == summary(plain)


def test_print_jobs_through_xargs_then_collect_gives_the_same_summary(plain, toy_small, tmp_path):
    out = tmp_path / "cmp"
    printed = cli("compare", *ARGS, "--data", toy_small, "--out", out, "--print-jobs")
    lines = printed.stdout.splitlines()
    assert len(lines) == N_CELLS
    for k, line in enumerate(lines):
        words = shlex.split(line)
        assert words[-2:] == ["--job", str(k)] and str(out.resolve()) in words
    subprocess.run(["xargs", "-P", "2", "-I", "{}", "sh", "-c", "{}"], input=printed.stdout, text=True, check=True)
    assert finished_cells(out) == N_CELLS
    collected = cli("compare", "--collect", out)
    assert summary(out) == summary(plain)
    assert "multimodal:sum" in collected.stdout


def test_collect_of_an_unfinished_plan_names_what_is_missing(toy_small, tmp_path):
    out = tmp_path / "cmp"
    cli("compare", "unimodal:audio", "unimodal:text", "--data", toy_small, "--epochs", "1", "--out", out, "--print-jobs")
    cli("compare", "--out", out, "--job", "0")
    result = cli("compare", "--collect", out)
    assert "1 run(s) have no result yet" in result.stderr and "unimodal:text" in result.stderr
    assert [r["n"] for r in summary(out)] == [1, 0]
    assert "Incomplete" in (out / "report.md").read_text()
    bad = cli("compare", "--out", out, "--job", "7", check=False)
    assert bad.returncode == 2 and "jobs 0 to 1" in bad.stderr
    bad = cli("compare", "--collect", tmp_path, check=False)
    assert bad.returncode == 2 and "not a comparison folder" in bad.stderr


def test_one_job_at_a_time_runs_in_this_process(toy_small, tmp_path):
    out = tmp_path / "cmp"
    result = cli("compare", "unimodal:audio", "multimodal:sum", "--data", toy_small, "--epochs", "1", "--jobs", "1", "--out", out)
    assert "[1/2] unimodal:audio seed 0" in result.stderr and "[2/2] multimodal:sum seed 0" in result.stderr
    assert json.loads((out / "compare.json").read_text())["threads"] == 0  # torch's own default
    assert [r["n"] for r in summary(out)] == [1, 1]
    bad = cli("compare", "unimodal:audio", "--data", toy_small, "--jobs", "many", "--out", tmp_path / "x", check=False)
    assert bad.returncode == 2 and "--jobs many" in bad.stderr


def test_subsets_family_gives_shapley_values_that_add_up(toy_small, tmp_path):
    out = tmp_path / "cmp"
    result = cli("compare", "subsets", "--data", toy_small, "--epochs", "2", "--out", out)
    variants = [r["variant"] for r in summary(out)]
    assert variants == ["unimodal:image", "unimodal:audio", "unimodal:text", "subset:image+audio",
                        "subset:image+text", "subset:audio+text", "multimodal:concat"]
    a = json.loads((out / "attribution.json").read_text())
    total = sum(s["mean"] for s in a["shapley"].values())
    full = next(r["mean"] for r in summary(out) if r["variant"] == "multimodal:concat")
    assert total == pytest.approx(full - a["empty_set"])  # efficiency: the values share v(all) - v(empty)
    assert a["empty_set"] == pytest.approx(1 / 12, abs=0.02)  # balanced 12 classes: the prior is chance
    assert set(a["interaction"]) == {"image+audio", "image+text", "audio+text"}
    assert "Shapley" in (out / "report.md").read_text() and "attribution" in result.stdout + result.stderr


def test_bad_requests_exit_2(toy_small, tmp_path):
    for args, message in [(["crossmodal:translate:smell"], "no modality 'smell'"), (["subset:image+smell"], "modalities of the data"),
                          (["unimodal", "--metric", "f1"], "not a metric")]:
        result = cli("compare", *args, "--data", toy_small, "--out", tmp_path / "x", check=False)
        assert result.returncode == 2 and message in result.stderr, result.stderr
    result = cli("compare", "--job", "0", check=False)
    assert result.returncode == 2 and "--job needs --out" in result.stderr
    result = cli("compare", "unimodal", "--metric", "loss", "--collect", tmp_path, check=False)
    assert result.returncode == 2 and "drop variants, --metric" in result.stderr


def test_a_job_refuses_to_run_twice_or_on_changed_data(tmp_path):
    import fcntl

    from conftest import write_own_manifest

    manifest = write_own_manifest(tmp_path / "own", n=36)
    out = tmp_path / "cmp"
    cli("compare", "unimodal:sound", "--data", manifest, "--epochs", "1", "--out", out, "--print-jobs")
    lock = out / ".locks" / "unimodal-sound-seed0.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as handle:  # another process holds job 0
        fcntl.flock(handle, fcntl.LOCK_EX)
        busy = cli("compare", "--out", out, "--job", "0", check=False)
    assert busy.returncode == 2 and "running in another process" in busy.stderr
    assert not (out / "runs" / "unimodal-sound-seed0").exists()
    # a file of the data changes after planning: the job's fingerprint no longer matches
    time.sleep(0.01)
    clip = next((tmp_path / "own" / "clips").iterdir())
    os.utime(clip, ns=(time.time_ns(), time.time_ns()))
    changed = cli("compare", "--out", out, "--job", "0", check=False)
    assert changed.returncode == 2 and "changed since the comparison" in changed.stderr


def test_a_failing_job_among_parallel_ones_reports_its_own_error(toy_small, tmp_path):
    """A learning rate that makes the loss overflow (the largest one allowed, in fp16): with
    --jobs 2 the job's error (exit 1, lower --lr) comes back, the other workers are
    stopped, and no internal error."""
    out = tmp_path / "cmp"
    result = cli("compare", "unimodal:audio", "unimodal:text", "--data", toy_small, "--epochs", "3", "--jobs", "2",
                 "--set", "train.lr=10", "--set", "train.grad_clip=0", "--set", "train.precision=fp16", "--out", out,
                 check=False)
    assert result.returncode == 1, result.stderr
    assert "the training loss became" in result.stderr and "lower --lr" in result.stderr
    assert "AttributeError" not in result.stderr and "internal error" not in result.stderr


def test_corrupt_scores_every_run_with_a_modality_degraded(toy_small, tmp_path):
    """--corrupt: each run scored again on its test split with the modality degraded (a run
    that does not read it keeps its clean score), side by side in report.md, and computed
    once: a rerun into the folder reuses the scores."""
    out = tmp_path / "cmp"
    args = ["compare", "unimodal:audio", "unimodal:text", "--data", toy_small, "--epochs", "1", "--jobs", "1",
            "--seeds", "2", "--out", out, "--corrupt", "audio:white_noise@1"]
    cli(*args)
    for variant, reads in (("unimodal-audio", True), ("unimodal-text", False)):
        for seed in ("seed0", "seed1"):
            saved = json.loads((out / "runs" / f"{variant}-{seed}" / "compare-result.json").read_text())
            noisy = saved["corrupted"]["audio:white_noise@1"]
            assert (noisy["loss"] != saved["scores"]["loss"]) is reads, (variant, noisy, saved["scores"])
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert all(r["corrupt audio:white_noise@1"] for r in rows)
    report = (out / "report.md").read_text()
    assert "## Degraded inputs" in report and "| variant | clean | audio:white_noise@1 |" in report
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/compare-result.json")}
    assert len(stamps) == 4
    cli(*args)  # finished runs and their degraded scores are reused
    assert {p: p.stat().st_mtime_ns for p in out.glob("runs/*/compare-result.json")} == stamps
    bad = cli("compare", "unimodal:audio", "--data", toy_small, "--out", tmp_path / "x", "--corrupt", "audio:melt@1",
              check=False)
    assert bad.returncode == 2 and "melt" in bad.stderr


def test_corrupt_scores_the_ensemble_from_its_members_degraded_outputs(toy_small, tmp_path):
    """The ensemble trains nothing: under --corrupt it averages the degraded outputs of the
    member that reads the modality with the clean outputs of the others, as a direct
    average of the saved outputs shows."""
    import numpy as np

    from mmcli.compare.ensemble import OUTPUTS, degraded_file

    out, spec = tmp_path / "cmp", "audio:white_noise@1"
    cli("compare", "unimodal:audio", "unimodal:text", "multimodal:ensemble", "--data", toy_small, "--epochs", "1",
        "--jobs", "1", "--out", out, "--corrupt", spec)
    # the ensemble averages every modality's run: named alone it brought unimodal:image too
    assert {r["variant"] for r in csv.DictReader(open(out / "results.csv"))} == {
        "unimodal:audio", "unimodal:text", "unimodal:image", "multimodal:ensemble"}
    audio, text, image = np.load(out / "runs" / "unimodal-audio-seed0" / degraded_file(spec)), np.load(
        out / "runs" / "unimodal-text-seed0" / OUTPUTS), np.load(out / "runs" / "unimodal-image-seed0" / OUTPUTS)
    assert not (out / "runs" / "unimodal-text-seed0" / degraded_file(spec)).exists()  # the text run never hears it
    assert audio["test_ids"].tolist() == text["test_ids"].tolist() == image["test_ids"].tolist()
    softmax = lambda x: np.exp(x - x.max(1, keepdims=True)) / np.exp(x - x.max(1, keepdims=True)).sum(1, keepdims=True)  # noqa: E731
    # equal weights: the toy's 24 validation rows are too few to weigh on (compare.ensemble.choose_weights)
    guess = (softmax(audio["test_outputs"]) + softmax(text["test_outputs"]) + softmax(image["test_outputs"])).argmax(1)
    expected = float((guess == text["test_targets"]).mean())
    row = next(r for r in csv.DictReader(open(out / "results.csv")) if r["variant"] == "multimodal:ensemble")
    assert float(row[f"corrupt {spec}"]) == pytest.approx(expected)
