"""Shared fixtures: an isolated cache folder, small toy data, a user's own manifest, a CLI runner."""

from __future__ import annotations

import csv
import os
from pathlib import Path

# `make test` runs a worker per core (pytest-xdist): each gets its share of the cores, set
# before numpy and torch are imported, which read it then
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    from mmcli.compare.parallel import threads_per_job  # imports neither numpy nor torch

    os.environ.setdefault("OMP_NUM_THREADS", str(threads_per_job(int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))))

import numpy as np
import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def pytest_collection_modifyitems(items: list) -> None:
    """The documents' examples first: the longest file by far (about 250 s), so that with
    `-n auto --dist loadfile --no-loadscope-reorder` the other worker takes the rest
    meanwhile, not after."""
    items.sort(key=lambda item: item.path.name != "test_docs.py")  # stable: the rest keeps its order


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory) -> Path:
    """Every test writes its cache into a temporary folder, never the user's."""
    root = tmp_path_factory.mktemp("mmcli-cache")
    old = os.environ.get("MMCLI_CACHE_DIR")
    os.environ["MMCLI_CACHE_DIR"] = str(root)
    os.environ["MMCLI_NO_PROGRESS"] = "1"
    yield root
    if old is None:
        os.environ.pop("MMCLI_CACHE_DIR", None)
    else:
        os.environ["MMCLI_CACHE_DIR"] = old


@pytest.fixture(scope="session", autouse=True)
def no_ensemble_folds():
    """The comparisons of the tests plan no cross-fitted ensemble weights (5 more runs per
    member on every small set, `--ensemble-folds`' default): tests/test_crossfit.py asks for
    them. Planning runs in the test's process, so this reaches every in-process comparison."""
    from mmcli.compare import crossfit

    default, crossfit.FOLDS = crossfit.FOLDS, 0
    yield
    crossfit.FOLDS = default


@pytest.fixture(scope="session")
def toy_small(tmp_path_factory) -> Path:
    """A 240-example toy set (20 per class): files plus manifest.csv."""
    from mmcli.data.toy import make_toy

    out = tmp_path_factory.mktemp("toy") / "toy"
    return make_toy(out, n=240, seed=3)


@pytest.fixture(scope="session")
def toy_1200(tmp_path_factory) -> Path:
    """The 1,200-example toy set (seed 11) that test_fusion_training.py and
    test_robustness.py train on: made, and preprocessed into the cache, once for both."""
    from mmcli.data.toy import make_toy

    return make_toy(tmp_path_factory.mktemp("toy1200") / "toy", n=1200, seed=11)


def stop_at_checkpoint_and_resume(monkeypatch, config: dict, out: Path, epoch: int, written: bool) -> None:
    """Train `config` (a config dict) into `out`, interrupted as Ctrl-C would be at epoch
    `epoch`'s checkpoint: once it is written, or (`written` false) just before, when only
    that epoch's weights are; then resume the run to its end."""
    from mmcli.config import from_dict
    from mmcli.errors import Interrupted
    from mmcli.training import loop
    from mmcli.training.api import resume, train

    save = loop._save_checkpoint

    def stopped(run_dir, at, *args):
        if at == epoch and not written:
            assert (run_dir / "last.safetensors").is_file()
            raise KeyboardInterrupt
        save(run_dir, at, *args)
        if at == epoch:
            raise KeyboardInterrupt

    monkeypatch.setattr(loop, "_save_checkpoint", stopped)
    with pytest.raises(Interrupted):
        train(from_dict(config), out)
    monkeypatch.setattr(loop, "_save_checkpoint", save)
    resume(out)


def write_own_manifest(folder: Path, n: int = 36, fmt: str = "csv") -> Path:
    """A user's own data: PNG photos, WAV clips at 8 kHz and captions; label from colour."""
    import soundfile
    from PIL import Image

    rng = np.random.default_rng(7)
    (folder / "pics").mkdir(parents=True, exist_ok=True)
    (folder / "clips").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        label = ["cat", "dog", "bird"][i % 3]
        colour = {"cat": (220, 40, 40), "dog": (40, 200, 40), "bird": (40, 40, 220)}[label]
        pixels = np.clip(rng.normal(colour, 30, size=(40, 48, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / "pics" / f"p{i}.png")
        t = np.arange(4000) / 8000.0
        tone = 0.3 * np.sin(2 * np.pi * {"cat": 300, "dog": 600, "bird": 1200}[label] * t)
        soundfile.write(folder / "clips" / f"c{i}.wav", tone.astype(np.float32), 8000)
        caption = f"a photo of a {label} number {i}" if i % 2 else f"my {label} in the garden"
        rows.append({"id": f"ex{i}", "photo": f"pics/p{i}.png", "sound": f"clips/c{i}.wav", "caption": caption, "label": label})
    if fmt == "jsonl":
        import json

        path = folder / "data.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        return path
    path = folder / ("data.tsv" if fmt == "tsv" else "data.csv")
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter="\t" if fmt == "tsv" else ",")
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture
def own_manifest(tmp_path) -> Path:
    return write_own_manifest(tmp_path / "own")


@pytest.fixture
def cli():
    """Run the real CLI in-process: cli(args, input=None) -> click Result."""
    from typer.testing import CliRunner

    from mmcli.cli import app

    runner = CliRunner()

    def invoke(*args: str, input: str | None = None):
        before = os.environ.get("MMCLI_VERBOSE")  # `-v` sets it for compare's workers: not for later tests
        try:
            return runner.invoke(app, [str(a) for a in args], input=input)
        finally:
            if before is None:
                os.environ.pop("MMCLI_VERBOSE", None)
            else:
                os.environ["MMCLI_VERBOSE"] = before

    return invoke
