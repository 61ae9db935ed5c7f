"""The loader (mmcli.data.loader): batches assembled by worker processes are the batches
assembled in the training process, in the same order, epoch after epoch; the workers
live from epoch to epoch; training with workers gives the same run as without."""

from __future__ import annotations

import os

import pytest
import torch

from mmcli.config import from_dict
from mmcli.errors import ConfigError


@pytest.fixture(scope="module")
def prepared(toy_small, tmp_path_factory):
    from mmcli.pipeline import prepare_training

    config = from_dict({"data": {"manifest": str(toy_small)}, "train": {"batch_size": 24}})
    data = prepare_training(config, cache_dir=str(tmp_path_factory.mktemp("loader-cache")))
    return config, data.part("train"), data


def _epochs(loader, n: int = 2) -> list[list[dict]]:
    return [list(loader) for _ in range(n)]


def _same(a: dict, b: dict) -> bool:
    if a.keys() != b.keys():
        return False
    for key in a:
        if isinstance(a[key], dict):
            if not _same(a[key], b[key]):
                return False
        elif not torch.equal(a[key], b[key]):
            return False
    return True


@pytest.mark.parametrize("order", [{"shuffle": True}, {"weights": "classes"}, {"shard": "rank 1 of 2"}])
def test_workers_give_the_same_batches_in_the_same_order_every_epoch(prepared, order):
    from mmcli.data.loader import Loader
    from mmcli.training.distributed import World, shard

    config, train, data = prepared
    if "weights" in order:
        order = {"weights": data.task.sample_weights(train.labels)}
    elif "shard" in order:
        order = {"shuffle": True, "shard": lambda index: shard(index, World(rank=1, size=2, local_rank=1))}
    made = {}
    for workers in (0, 2):
        loader = Loader(train, config.data, 24, generator=torch.Generator().manual_seed(5), workers=workers, **order)
        made[workers] = _epochs(loader)
        loader.close()
    here, there = made[0], made[2]
    assert [len(e) for e in here] == [len(e) for e in there] == [len(loader)] * 2
    assert all(_same(a, b) for e0, e2 in zip(here, there) for a, b in zip(e0, e2))
    first, second = (torch.cat([b["index"] for b in e]) for e in here)
    assert not torch.equal(first, second)  # each epoch draws a new order


def test_the_workers_assemble_the_batches_and_live_from_epoch_to_epoch(prepared, monkeypatch):
    """The processes that made each batch (recorded by the batch function itself, which
    the forked workers inherit) are the same two in both epochs, and not this one."""
    import multiprocessing

    from mmcli.data import loader as module

    if multiprocessing.get_start_method() != "fork":
        pytest.skip("the recording needs forked workers (they inherit the patched function)")
    config, train, _ = prepared
    gather = module.gather_batch
    monkeypatch.setattr(module, "gather_batch", lambda *a: {**gather(*a), "pid": torch.tensor(os.getpid())})
    loader = module.Loader(train, config.data, 24, shuffle=True, generator=torch.Generator(), workers=2)
    pids = [{int(b["pid"]) for b in epoch} for epoch in _epochs(loader)]
    loader.close()
    assert pids[0] == pids[1] and len(pids[0]) == 2 and os.getpid() not in pids[0]


def test_training_with_loader_workers_is_the_same_run(toy_small, tmp_path):
    """Same seeds, same batches, and the loader takes nothing from torch's global random
    state (dropout draws from it): the metrics of every epoch are equal."""
    from mmcli.training.api import train

    histories = {}
    for workers in (0, 2):
        config = from_dict({"data": {"manifest": str(toy_small)}, "model": {"dropout": 0.2},
                            "train": {"epochs": 2, "patience": 0, "loader_workers": workers, "seed": 1}})
        outcome = train(config, tmp_path / f"w{workers}")
        histories[workers] = [{k: v for k, v in r.items() if not k.endswith("_s")} for r in outcome.result.history]
    assert histories[0] == histories[2]


def test_loader_workers_default_to_none_on_the_cpu_and_some_on_a_gpu(monkeypatch):
    from mmcli.data.loader import AUTO_WORKERS, auto_workers

    assert auto_workers(None, torch.device("cpu")) == 0
    assert auto_workers(3, torch.device("cpu")) == 3
    monkeypatch.setattr(os, "sched_getaffinity", lambda _: set(range(16)), raising=False)
    assert auto_workers(None, torch.device("cuda")) == AUTO_WORKERS
    monkeypatch.setattr(os, "sched_getaffinity", lambda _: {0, 1}, raising=False)
    assert auto_workers(None, torch.device("cuda")) == 1  # one core left to training


def test_workers_hand_their_batches_back_under_a_long_temporary_folder(toy_small, tmp_path):
    """torch sends tensors between processes over a Unix socket in TMPDIR; with a TMPDIR of
    more than 75 characters the socket could not be made and training waited forever."""
    import subprocess
    import sys

    long = tmp_path / ("t" * max(1, 90 - len(str(tmp_path))))
    long.mkdir()
    assert len(str(long)) >= 90
    result = subprocess.run([sys.executable, "-m", "mmcli", "train", str(toy_small), "--epochs", "1", "--loader-workers",
                             "1", "--out", str(tmp_path / "run")], env={**os.environ, "TMPDIR": str(long)},
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and "loader workers" not in result.stderr  # the workers did the work
    assert (tmp_path / "run" / "metrics.jsonl").exists() and not list(long.glob("pymp-*"))


def test_workers_give_way_where_no_socket_path_fits(monkeypatch, caplog):
    """multiprocessing's folder already made under a long path: the batches are assembled in
    the training process, and the log says why and what to do."""
    from multiprocessing import util

    from mmcli.data.loader import auto_workers

    monkeypatch.setattr(util, "get_temp_dir", lambda: "/" + "x" * 100)
    with caplog.at_level("WARNING", logger="mmcli"):
        assert auto_workers(2, torch.device("cpu")) == 0
    assert "TMPDIR" in caplog.text and "train.loader_workers" in caplog.text
    assert auto_workers(0, torch.device("cpu")) == 0 and "TMPDIR" in caplog.text


def test_bad_loader_settings_are_config_errors():
    with pytest.raises(ConfigError, match="train.loader_workers"):
        from_dict({"train": {"loader_workers": -1}})
    with pytest.raises(ConfigError, match="train.prefetch"):
        from_dict({"train": {"prefetch": 0}})


def test_train_takes_loader_workers_from_the_command_line(toy_small, tmp_path, cli):
    result = cli("train", str(toy_small), "--epochs", "1", "--loader-workers", "2", "--out", str(tmp_path / "run"), "--quiet")
    assert result.exit_code == 0, result.output
    saved = (tmp_path / "run" / "config.yaml").read_text()
    assert "loader_workers: 2" in saved
    bad = cli("train", str(toy_small), "--loader-workers", "-1")
    assert bad.exit_code == 2 and "--loader-workers" in bad.output


def test_a_packed_batch_unpacks_to_the_same_tensors(prepared):
    """Workers send each batch as one byte buffer; every dtype and odd size comes back."""
    from mmcli.data.dataset import gather_batch
    from mmcli.data.loader import ALIGN, pack, unpack

    config, train, _ = prepared
    batch = gather_batch(train, torch.tensor([5, 1, 7]))
    batch.inputs.update({"bools": torch.tensor([True, False, True]), "halves": torch.arange(5, dtype=torch.float16),
                         "empty": torch.zeros(0, 3)})  # a batch's fields are typed (issue 21): odd inputs instead
    buffer, layout = pack(batch)
    assert buffer.dtype == torch.uint8 and buffer.dim() == 1
    assert all(offset % ALIGN == 0 for *_, offset, _ in layout)
    back = unpack(buffer, layout)
    assert _same(back, batch)
    assert back["image"].dtype == torch.uint8 and back["audio"].dtype == torch.float16
