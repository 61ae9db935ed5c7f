"""Streaming preprocessing: worker processes, memory-mapped cache entries, and resuming
an interrupted preprocess where it stopped."""

from __future__ import annotations

from pathlib import Path

import torch

from conftest import write_own_manifest
from mmcli.config import DataConfig
from mmcli.data import decode
from mmcli.data.preprocess import preprocess
from mmcli.data.stream import CHUNK


def _tensors(table) -> dict:
    return {k: v.clone() for k, v in table.tensors.items()}


def test_worker_processes_give_the_same_table_and_it_is_memory_mapped(tmp_path):
    manifest = write_own_manifest(tmp_path / "own", n=CHUNK * 2 + 5)
    one = preprocess(manifest, DataConfig(), tmp_path / "c1", workers=1)
    two = preprocess(manifest, DataConfig(), tmp_path / "c2", workers=2)
    a, b = _tensors(one), _tensors(two)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert one.ids == two.ids and one.texts == two.texts
    # read back from the cache, each tensor is a view of its file, not a copy in memory
    again = preprocess(manifest, DataConfig(), tmp_path / "c1")
    assert torch.equal(again.tensors["photo"], a["photo"])
    maps = Path("/proc/self/maps")
    if maps.exists():  # Linux: the file itself is mapped into this process
        assert f"{again.key}/photo.bin" in maps.read_text()


def test_an_interrupted_preprocess_resumes_where_it_stopped(tmp_path, monkeypatch):
    manifest = write_own_manifest(tmp_path / "own", n=CHUNK * 3)
    real, calls = decode.decode_audio, []

    def stop(path, config):
        calls.append(path)
        if len(calls) == CHUNK * 2 + 10:  # in the third chunk: two chunks are on disk
            raise KeyboardInterrupt
        return real(path, config)

    monkeypatch.setattr(decode, "decode_audio", stop)
    try:
        preprocess(manifest, DataConfig(), tmp_path / "cache")
        raise AssertionError("not interrupted")
    except KeyboardInterrupt:
        pass
    partials = list((tmp_path / "cache" / "tensors").glob(".*.partial"))
    assert len(partials) == 1 and not (partials[0] / "table.json").exists()
    calls.clear()
    monkeypatch.setattr(decode, "decode_audio", lambda p, c: calls.append(p) or real(p, c))
    resumed = preprocess(manifest, DataConfig(), tmp_path / "cache")
    assert len(calls) == CHUNK  # only the third chunk was decoded again
    fresh = preprocess(manifest, DataConfig(), tmp_path / "fresh")
    a, b = _tensors(resumed), _tensors(fresh)
    assert all(torch.equal(a[k], b[k]) for k in a) and resumed.ids == fresh.ids
    assert not list((tmp_path / "cache" / "tensors").glob(".*.partial"))


def test_rows_that_fail_to_decode_are_dropped_from_the_files_with_skip(tmp_path):
    manifest = write_own_manifest(tmp_path / "own", n=CHUNK + 6)
    text = manifest.read_text().splitlines()
    broken = text[3].split(",")[1]  # the photo of the third row
    (manifest.parent / broken).write_bytes(b"not an image")
    table = preprocess(manifest, DataConfig(on_error="skip"), tmp_path / "cache")
    full = preprocess(manifest, DataConfig(on_error="skip"), tmp_path / "cache")  # read back from the cache
    assert len(table) == CHUNK + 5 and table.tensors["photo"].shape[0] == CHUNK + 5
    assert table.tensors["sound"].shape[0] == CHUNK + 5 and torch.equal(full.tensors["photo"], table.tensors["photo"])
    assert table.bad_rows and table.bad_rows[0].row == 3


def test_two_processes_preprocessing_the_same_data_at_once_share_one_entry(tmp_path):
    """The second waits for the first's lock, then reads the entry it made (before the
    lock, both wrote into the same partial entry and one lost its files)."""
    import subprocess
    import sys

    manifest = write_own_manifest(tmp_path / "own", n=CHUNK * 2)
    command = [sys.executable, "-m", "mmcli", "preprocess", str(manifest), "--cache-dir", str(tmp_path / "cache"), "--quiet"]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    assert len([p for p in (tmp_path / "cache" / "tensors").iterdir() if not p.name.startswith(".")]) == 1
