"""mmcli never deletes or replaces a file it did not write (issue 23, items 1 and 2).

User files are planted inside and beside `train --out`, `compare --out` and the cache
folder; every overwriting and cleaning command then runs, and every user file must be
there with the same bytes and modification time. Two trainings into one folder: the
second is refused at the start (a lock) and, should a folder appear meanwhile, at publish.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest
from typer.testing import CliRunner

from conftest import write_own_manifest
from mmcli import ledger, runs
from mmcli.cli import app

RUNNER = CliRunner()
TRAIN = ["--epochs", "1", "--modalities", "caption"]
CELL = "runs/unimodal-caption-seed0"


def cli(*args):
    return RUNNER.invoke(app, [str(a) for a in args])


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file (and link) under root: its bytes (a link: its target) and mtime."""
    out = {}
    for path in sorted(root.rglob("*")) if root.is_dir() else []:
        info = os.lstat(path)
        if path.is_symlink():
            out[str(path.relative_to(root))] = (os.readlink(path).encode(), info.st_mtime_ns)
        elif path.is_file():
            out[str(path.relative_to(root))] = (path.read_bytes(), info.st_mtime_ns)
    return out


def plant(path: Path, text: str = "the user's own file\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_own_manifest(tmp_path_factory.mktemp("own") / "own", n=12)


@pytest.fixture(scope="module")
def made_run(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("made") / "run"
    result = cli("train", data, *TRAIN, "--out", out)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def made_compare(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("made") / "cmp"
    result = cli("compare", "unimodal:caption", "--data", data, "--epochs", "1", "--out", out)
    assert result.exit_code == 0, result.output
    return out


def copy_of(folder: Path, where: Path) -> Path:
    shutil.copytree(folder, where, symlinks=True)  # the ledger vouches by content: a copy is still mmcli's
    return where


# --------------------------------------------------------------------------- train --overwrite

def inside(rel: str) -> Callable[[Path], list[Path]]:
    return lambda out: [plant(out / rel)]


def edit(rel: str) -> Callable[[Path], list[Path]]:
    def change(out: Path) -> list[Path]:
        with open(out / rel, "a") as handle:
            handle.write("# my note\n")
        return [out / rel]
    return change


def link_inside(out: Path) -> list[Path]:
    target = plant(out.parent / "precious.txt")
    (out / "link.txt").symlink_to(target)
    return [target, out / "link.txt"]


def older_run(out: Path) -> list[Path]:
    (out / ledger.LEDGER).unlink()  # as a run folder made before mmcli kept a ledger
    return []


def lookalike(out: Path) -> list[Path]:
    """The issue's case: a user's folder with a config.yaml, a data.json and many other files."""
    shutil.rmtree(out)
    return [plant(out / name) for name in ["config.yaml", "data.json", *(f"photo{i}.txt" for i in range(40))]]


def forged_ledger(out: Path) -> list[Path]:
    """A ledger that names files outside its folder: nothing outside is ever touched."""
    outside = plant(out.parent / "outside.txt")
    with open(out / ledger.LEDGER, "a") as handle:
        handle.write(json.dumps({"path": "../outside.txt", "size": outside.stat().st_size}) + "\n")
    return [outside, plant(out / "notes.txt")]


def out_is_a_link(out: Path) -> list[Path]:
    real = out.parent / "real-run"
    out.rename(real)
    out.symlink_to(real)
    return [out, real]


OVERWRITE_REFUSED = [
    ("file-inside", inside("notes.txt"), ["notes.txt", "did not write", "refusing to overwrite"]),
    ("folder-inside", inside("mine/deep/photo.txt"), ["mine/deep/photo.txt"]),
    ("mmcli-name-inside", inside("eval-val.json"), ["eval-val.json"]),
    ("hidden-inside", inside(".notes"), [".notes"]),
    ("edited-config", edit("config.yaml"), ["config.yaml", "changed since"]),
    ("edited-metrics", edit("metrics.jsonl"), ["metrics.jsonl"]),
    ("link-inside", link_inside, ["link.txt"]),
    ("older-run-folder", older_run, ["older mmcli", ledger.LEDGER]),
    ("lookalike-folder", lookalike, ["cannot tell its files from yours", "refusing to overwrite"]),
    ("forged-ledger", forged_ledger, ["notes.txt"]),
    ("symlink-out", out_is_a_link, ["symbolic link"]),
]


@pytest.mark.parametrize("case, change, needles", OVERWRITE_REFUSED, ids=[c[0] for c in OVERWRITE_REFUSED])
def test_train_overwrite_refuses_a_folder_with_user_files(case, change, needles, data, made_run, tmp_path):
    out = copy_of(made_run, tmp_path / "run")
    planted = change(out)
    before, around = snapshot(out), snapshot(tmp_path)
    result = cli("train", data, *TRAIN, "--out", out, "--overwrite")
    assert result.exit_code == 2, result.output
    for needle in needles:
        assert needle in result.output, result.output
    assert "Traceback" not in result.output and "internal error" not in result.output
    assert snapshot(out) == before and snapshot(tmp_path) == around  # nothing inside or beside changed
    assert all(os.path.lexists(p) for p in planted)


def beside(out: Path) -> list[Path]:
    """Files and folders beside the run folder, some with the names mmcli gives its own."""
    return [plant(out.parent / rel) for rel in
            ["notes.txt", "run-old/keep.txt", "run.bak", f".{out.name}.partial-mine/keep.txt",
             f".{out.name}.old-mine/run/keep.txt", f".{out.name}.lock", "run-20990101-000000/keep.txt"]]


def test_train_overwrite_replaces_only_mmcli_files_and_leaves_everything_beside(data, made_run, tmp_path):
    out = copy_of(made_run, tmp_path / "run")
    planted = beside(out)
    assert cli("evaluate", out, "--plots").exit_code == 0  # files written after publishing are recorded too
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in planted}
    result = cli("train", data, *TRAIN, "--out", out, "--overwrite")
    assert result.exit_code == 0, result.output
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in planted} == before
    assert not (out / "curves.png").exists() and (out / "config.yaml").is_file()  # the old run went, the new is in
    leftovers = {p.name for p in tmp_path.iterdir()} - {p.relative_to(tmp_path).parts[0] for p in planted}
    assert leftovers == {"run"}, f"staging, old-run or lock files left behind: {leftovers}"
    assert ledger.survey(out).foreign == []


def test_a_stale_lock_file_of_a_killed_run_is_taken_over(data, tmp_path):
    out = tmp_path / "run"
    (tmp_path / ".run.lock").write_text(json.dumps({ledger.LOCK_KEY: ledger.FORMAT, "pid": 1, "host": "gone"}))
    result = cli("train", data, *TRAIN, "--out", out)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_evaluate_never_replaces_a_user_file_in_a_run_folder(made_run, tmp_path):
    out = copy_of(made_run, tmp_path / "run")
    edit("eval-test.json")(out)
    before = snapshot(out)
    result = cli("evaluate", out)
    assert result.exit_code == 2 and "eval-test.json" in result.output and "refusing to replace" in result.output
    assert snapshot(out) == before


def test_a_run_folder_of_an_older_mmcli_still_evaluates(made_run, tmp_path):
    out = copy_of(made_run, tmp_path / "run")
    older_run(out)
    result = cli("evaluate", out, "--json")
    assert result.exit_code == 0, result.output
    assert "accuracy" in json.loads(result.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- two runs at once

HOLDER = """
import sys, time
from pathlib import Path
from mmcli import runs
with runs.out_lock(Path(sys.argv[1])):
    Path(sys.argv[2]).write_text("held")
    sys.stdin.read()
"""


def hold_lock(out: Path, ready: Path) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out), str(ready)], stdin=subprocess.PIPE)
    for _ in range(600):
        if ready.exists() or holder.poll() is not None:
            break
        time.sleep(0.05)
    assert ready.exists(), "the lock holder did not start"
    return holder


@pytest.mark.parametrize("existing", [False, True], ids=["two-new-runs", "two-overwrites"])
def test_two_trains_into_one_folder_the_second_is_refused_at_the_start(existing, data, made_run, tmp_path):
    """Another process trains into `out` (it holds the out folder's lock, exactly as
    `mmcli train` does from its start to its publish): a second train, into the same new
    folder or overwriting the same run, is refused before it trains, and changes nothing."""
    out = copy_of(made_run, tmp_path / "run") if existing else tmp_path / "run"
    holder = hold_lock(out, tmp_path / "ready")
    try:
        before = snapshot(tmp_path)
        result = cli("train", data, *TRAIN, "--out", out, *(["--overwrite"] if existing else []))
        assert result.exit_code == 2, result.output
        assert "another mmcli is training into this run folder" in result.output and f"pid {holder.pid}" in result.output
        assert snapshot(tmp_path) == before and not list(tmp_path.glob(".run.partial-*"))
    finally:
        holder.communicate(b"", timeout=30)
    again = cli("train", data, *TRAIN, "--out", out, *(["--overwrite"] if existing else []))
    assert again.exit_code == 0, again.output  # released: the next one runs
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ready", "run"]


def test_a_folder_that_appears_while_training_is_not_replaced(data, tmp_path, monkeypatch):
    """The race itself, made deterministic: between the start's check and the publish,
    a folder appears at --out (an older mmcli, another program). Without --overwrite it
    is not replaced; the finished run is saved beside it and the user told where."""
    out = tmp_path / "run"
    staging = runs.staging_dir

    def meanwhile(final: Path, *args) -> Path:
        work = staging(final, *args)
        plant(final / "theirs.txt")
        return work

    monkeypatch.setattr(runs, "staging_dir", meanwhile)
    result = cli("train", data, *TRAIN, "--out", out)
    assert result.exit_code == 2, result.output
    assert "another run was saved there while this one trained" in result.output and "saved in" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["theirs.txt"]
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("run-")]
    assert len(kept) == 1 and runs.is_run_dir(kept[0]) and ledger.header(kept[0])["kind"] == "run"
    assert not list(tmp_path.glob(".run.*"))


def test_a_file_planted_in_the_old_run_while_training_stops_the_overwrite(data, made_run, tmp_path, monkeypatch):
    out = copy_of(made_run, tmp_path / "run")
    staging = runs.staging_dir
    planted: list[Path] = []

    def meanwhile(final: Path, *args) -> Path:
        work = staging(final, *args)
        planted.append(plant(final / "written-during-training.txt"))
        return work

    monkeypatch.setattr(runs, "staging_dir", meanwhile)
    before = snapshot(made_run)
    result = cli("train", data, *TRAIN, "--out", out, "--overwrite")
    assert result.exit_code == 2 and "written-during-training.txt" in result.output and "saved in" in result.output
    after = snapshot(out)
    assert after.pop("written-during-training.txt")[0] == planted[0].read_bytes()
    assert after == before  # the old run too is untouched


# --------------------------------------------------------------------------- compare --overwrite

def compare(data: Path, out: Path, *extra: str):
    return cli("compare", "unimodal:caption", "--data", data, "--epochs", "1", "--out", out, *extra)


def compare_older(out: Path) -> list[Path]:
    (out / ledger.LEDGER).unlink()
    return []


def compare_lookalike(out: Path) -> list[Path]:
    """The issue's case: any folder holding a file named compare.json."""
    shutil.rmtree(out)
    return [plant(out / "compare.json", "{}"), *(plant(out / f"paper{i}.tex") for i in range(20))]


COMPARE_REFUSED = [
    ("compare-file-inside", inside("notes.txt"), ["notes.txt", "refusing to overwrite"]),
    ("compare-file-in-a-run", inside(f"{CELL}/notes.txt"), [f"{CELL}/notes.txt"]),
    ("compare-folder-in-runs", inside("runs/mine/keep.txt"), ["runs/mine/keep.txt"]),
    ("compare-user-partial", inside("runs/.unimodal-caption-seed0.partial-mine/keep.txt"), [".partial-mine/keep.txt"]),
    ("compare-user-lock", inside(".locks/unimodal-caption-seed0.lock"), [".locks/unimodal-caption-seed0.lock"]),
    ("compare-edited-report", edit("report.md"), ["report.md", "changed since"]),
    ("compare-edited-run", edit(f"{CELL}/config.yaml"), [f"{CELL}/config.yaml"]),
    ("compare-older-folder", compare_older, ["older mmcli"]),
    ("compare-lookalike", compare_lookalike, ["not a comparison plan"]),
]


@pytest.mark.parametrize("case, change, needles", COMPARE_REFUSED, ids=[c[0] for c in COMPARE_REFUSED])
def test_compare_overwrite_refuses_a_folder_with_user_files(case, change, needles, data, made_compare, tmp_path):
    out = copy_of(made_compare, tmp_path / "cmp")
    change(out)
    before, around = snapshot(out), snapshot(tmp_path)
    result = compare(data, out, "--overwrite")
    assert result.exit_code == 2, result.output
    for needle in needles:
        assert needle in result.output, result.output
    assert "Traceback" not in result.output
    assert snapshot(out) == before and snapshot(tmp_path) == around


RESUME_REFUSED = [
    ("resume-edited-summary", edit("summary.csv"), "summary.csv"),  # the user's notes in a file mmcli writes
    ("resume-user-attribution", inside("attribution.json"), "attribution.json"),  # one mmcli would delete as stale
    ("resume-edited-plan", edit("compare.json"), "compare.json"),
]


@pytest.mark.parametrize("case, change, needle", RESUME_REFUSED, ids=[c[0] for c in RESUME_REFUSED])
def test_compare_resume_never_writes_over_or_deletes_a_user_file(case, change, needle, data, made_compare, tmp_path):
    out = copy_of(made_compare, tmp_path / "cmp")
    change(out)
    before = snapshot(out)
    result = compare(data, out)
    assert result.exit_code == 2 and needle in result.output and "refusing to replace" in result.output, result.output
    assert snapshot(out) == before


def test_compare_into_a_folder_with_a_foreign_compare_json_is_refused(data, tmp_path):
    (tmp_path / "paper").mkdir()
    lookalike = compare_lookalike(tmp_path / "paper")[0].parent
    before = snapshot(lookalike)
    result = compare(data, lookalike)  # a compare.json that is no comparison plan: not resumed, not written
    assert result.exit_code == 2 and "not a comparison plan" in result.output
    assert snapshot(lookalike) == before


def test_compare_overwrite_and_resume_leave_files_beside_and_remove_only_mmcli_staging(data, made_compare, tmp_path):
    out = copy_of(made_compare, tmp_path / "cmp")
    planted = [plant(tmp_path / rel) for rel in ["notes.txt", ".cmp.partial-x/keep.txt", "cmp-old/results.csv"]]
    result = compare(data, out, "--overwrite")
    assert result.exit_code == 0, result.output
    # a stale run: its result is gone, an mmcli staging folder of a killed run is there, and a user's folder like one
    (out / CELL / "compare-result.json").unlink()
    mine = runs.staging_dir(out / CELL)
    runs.write_json(mine / "metrics.jsonl", {"epoch": 1})
    planted.append(plant(out / "runs" / ".unimodal-caption-seed0.partial-user" / "keep.txt"))
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in planted}
    result = compare(data, out)
    assert result.exit_code == 0, result.output
    assert (out / CELL / "compare-result.json").is_file() and not mine.exists()
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in planted} == before


# --------------------------------------------------------------------------- cache clean

@pytest.fixture
def cache(data, tmp_path) -> Path:
    root = tmp_path / "cache"
    result = cli("preprocess", data, "--out", root)
    assert result.exit_code == 0, result.output
    return root


def features_file(path: Path) -> Path:
    import torch
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"raw": torch.zeros(2, 3), "mask": torch.ones(2, 3, dtype=torch.uint8)}, str(path))
    return path


def test_cache_clean_removes_only_mmcli_entries_and_counts_them(cache, tmp_path):
    entry = next(p for p in (cache / "tensors").iterdir() if not p.name.startswith("."))
    features_file(cache / "features" / ("ab" * 12 + ".safetensors"))
    planted = [
        plant(cache / "tensors" / "notes.txt"),
        plant(entry / "my-notes.txt"),  # inside an mmcli entry
        plant(cache / "tensors" / ("0" * 20) / "table.json", '{"key": "not this folder", "arrays": {}}'),
        plant(cache / "tensors" / ("1" * 20) / "photo.bin"),
        plant(cache / "features" / "notes.txt"),
        plant(cache / "features" / ("cd" * 12 + ".safetensors"), "not features"),  # named like one, is not
        plant(cache / "mine" / "keep.txt"),
        plant(tmp_path / "beside-the-cache.txt"),
    ]
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in planted}
    datasets = snapshot(cache / "datasets")
    result = cli("cache", "clean", "--cache-dir", cache)
    assert result.exit_code == 0, result.output
    assert "removed 2 cache entries" in result.output  # the entry and the feature file, nothing else
    assert "kept 6 files or folders that mmcli did not write" in result.output and "my-notes.txt" in result.output
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in planted} == before
    assert sorted(p.name for p in entry.iterdir()) == ["my-notes.txt"]  # the entry's own files went
    assert snapshot(cache / "datasets") == datasets


def test_cache_clean_on_a_folder_that_is_no_cache_removes_nothing(tmp_path):
    """The issue's case: `cache clean --cache-dir DIR` on a folder with features/ and tensors/ of the user's."""
    root = tmp_path / "mine"
    planted = [plant(root / "tensors" / f"t{i}.txt") for i in range(5)] + [plant(root / "features" / "f.safetensors")]
    before = snapshot(root)
    result = cli("cache", "clean", "--cache-dir", root)
    assert result.exit_code == 0 and "removed 0 cache entries, 0 B" in result.output and "kept 6" in result.output
    assert snapshot(root) == before and all(p.exists() for p in planted)


def test_cache_clean_leaves_an_entry_that_is_being_built(cache):
    import fcntl

    key = next(p for p in (cache / "tensors").iterdir() if not p.name.startswith(".")).name
    with open(cache / "locks" / f"{key}.lock", "a") as handle:  # a preprocess holds the entry
        fcntl.flock(handle, fcntl.LOCK_EX)
        result = cli("cache", "clean", "--cache-dir", cache)
    assert result.exit_code == 0 and "removed 0 cache entries" in result.output and "preprocessing" in result.output
    assert (cache / "tensors" / key / "table.json").is_file()


# --------------------------------------------------------------------------- the ledger itself

def test_a_ledger_vouches_only_for_its_own_unchanged_files(tmp_path):
    folder = tmp_path / "f"
    folder.mkdir()
    ledger.start(folder, "run")
    runs.write_json(folder / "a.json", {"x": 1})
    runs.write_atomic(folder / "sub.txt", "mine")
    (folder / "sub.txt").write_text("yours")  # same size, other bytes
    with open(folder / ledger.LEDGER, "a") as handle:
        handle.write('{"path": "cut short", "si')  # a crash in the middle of a line
    found = ledger.survey(folder)
    assert sorted(p.name for p in found.mine) == sorted([ledger.LEDGER, "a.json"])
    assert [p.name for p in found.foreign] == ["sub.txt"]
    ledger.remove(found, keep_root=False)
    assert sorted(p.name for p in folder.iterdir()) == [ledger.LEDGER, "sub.txt"]  # the folder keeps the user's file


def test_two_runs_without_out_in_the_same_second_get_two_folders(tmp_path, monkeypatch):
    """The default name has a resolution of one second: a second run in that second (or one
    whose folder is still training) takes the name with -2, never the first run's folder."""
    import datetime as real

    from mmcli import runs

    class Frozen(real.datetime):
        @classmethod
        def now(cls, tz=None):
            return cls(2026, 12, 5, 8, 31, 34)

    monkeypatch.setattr(runs, "datetime", Frozen)
    monkeypatch.chdir(tmp_path)
    first = runs.resolve_out_dir(None, "multimodal:concat", False)
    assert first == Path("runs") / "multimodal-concat-20261205-083134"
    first.mkdir(parents=True)
    (first / "config.yaml").write_text("a finished run\n")
    second = runs.resolve_out_dir(None, "multimodal:concat", False)
    assert second == Path("runs") / "multimodal-concat-20261205-083134-2"
    (Path("runs") / f".{second.name}.partial-x1").mkdir()  # the second is still training
    assert runs.resolve_out_dir(None, "multimodal:concat", False).name.endswith("-3")


def test_cache_clean_never_follows_names_out_of_the_entry(tmp_path, cli):
    """A cache entry's table.json (or progress.json) may come from a stranger: its array
    names lead to `../../victim/data.bin`; cache clean deletes nothing outside the entry,
    and loading the entry is refused naming table.json."""
    from mmcli.data.table import TABLE_FORMAT

    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "data.bin").write_bytes(b"precious")
    (victim / "x.kept").write_bytes(b"precious too")
    cache = tmp_path / "cache"
    key = "0123456789abcdef0123"
    entry = cache / "tensors" / key
    entry.mkdir(parents=True)
    (entry / "table.json").write_text(json.dumps({"key": key, "format": TABLE_FORMAT, "arrays": {"../../../victim/data": {}}}))
    partial = cache / "tensors" / f".{key}.partial"
    partial.mkdir()
    (partial / "progress.json").write_text(json.dumps({"sizes": {"../../../victim/x": 0}}))
    result = cli("cache", "clean", "--cache-dir", cache)
    assert result.exit_code == 0, result.output
    assert (victim / "data.bin").read_bytes() == b"precious"
    assert (victim / "x.kept").read_bytes() == b"precious too"
    from mmcli.data.table import load_table
    from mmcli.errors import UsageError

    entry.mkdir(parents=True, exist_ok=True)  # clean removed the entry's own table.json
    (entry / "table.json").write_text(json.dumps({"key": key, "format": TABLE_FORMAT, "arrays": {"../../../victim/data": {}}}))
    with pytest.raises(UsageError, match="table.json"):
        load_table(entry)


def test_a_comparison_of_an_older_mmcli_is_not_resumed_and_still_collects(data, made_compare, tmp_path):
    """Resuming would retrain the cells whose fingerprint changed with the version into run
    folders without a ledger: refused before any work, pointing to --collect, which reads it."""
    out = copy_of(made_compare, tmp_path / "cmp")
    compare_older(out)
    before = snapshot(out)
    result = compare(data, out)
    assert result.exit_code == 2 and "older mmcli" in result.output and "--collect" in result.output, result.output
    assert snapshot(out) == before
    collected = RUNNER.invoke(app, ["compare", "--collect", str(out)])
    assert collected.exit_code == 0, collected.output


def test_a_temporary_file_is_in_the_staging_ledger_before_it_exists(tmp_path, monkeypatch):
    """A run killed between creating a write's temporary twin and listing it left a file that
    no ledger accounted for, so the killed run's folder was never removed (a resumed
    comparison found `.run.partial-*` still there)."""
    import os

    from mmcli import ledger, runs

    work = runs.staging_dir(tmp_path / "run")
    real_open, seen = os.open, []

    def spy(path, *args, **kwargs):
        if os.path.basename(path).startswith(".best.safetensors-"):  # the temporary twin, not the ledger itself
            seen.append(os.path.basename(path) in set(ledger.records(work)))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(runs.os, "open", spy)
    runs.write_atomic(work / "best.safetensors", b"weights")
    assert seen == [True]
    assert (work / "best.safetensors").read_bytes() == b"weights"
    assert [p.name for p in work.iterdir() if p.name.startswith(".best")] == []
