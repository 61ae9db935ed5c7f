"""Interrupted training resumes: a SIGKILL at a random step, or Ctrl-C, then
`mmcli train --resume RUN` ends with the same metrics as an uninterrupted run."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path


from conftest import stop_at_checkpoint_and_resume

ARGS = ["--epochs", "6", "--seed", "3", "--modalities", "image,text", "--set", "train.patience=0"]


def metrics(run: Path) -> list[dict]:
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [{k: v for k, v in r.items() if not k.endswith("_s")} for r in lines]


def mmcli(*args, check=True):
    result = subprocess.run([sys.executable, "-m", "mmcli", *map(str, args)], capture_output=True, text=True)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def epochs_done(parent: Path, name: str) -> int:
    for partial in parent.glob(f".{name}.partial-*"):
        path = partial / "metrics.jsonl"
        if path.is_file():
            return len([line for line in path.read_text().splitlines() if line.strip()])
    return 0


def _as_in_a_terminal() -> None:
    """Ctrl-C as a user's terminal delivers it. A suite started in the background (`make
    test &`, some CI runners) ignores SIGINT, its children inherit that, and Python then
    installs no KeyboardInterrupt handler: the test would time the run, not the signal."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def interrupt(toy: Path, out: Path, sig: int, after_epochs: int, into_next: bool = True) -> subprocess.CompletedProcess | int:
    proc = subprocess.Popen([sys.executable, "-m", "mmcli", "train", str(toy), *ARGS, "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_as_in_a_terminal)
    deadline = time.monotonic() + 120
    seen: dict[int, float] = {}  # epochs done -> when first seen
    while proc.poll() is None and time.monotonic() < deadline:
        done = epochs_done(out.parent, out.name)
        seen.setdefault(done, time.monotonic())
        if done >= after_epochs:
            break
        time.sleep(0.005)
    # Somewhere inside the next epoch: a random part of half an epoch's length, as
    # measured on this machine (toy epochs last tens of milliseconds, so a fixed delay
    # could let the run finish before the signal).
    # (from the first epoch on: "0 epochs done" is first seen while Python and torch still start)
    epoch_s = seen[after_epochs] - seen[after_epochs - 1] if after_epochs >= 2 and {after_epochs - 1, after_epochs} <= set(seen) else 0.0
    if into_next:
        time.sleep(random.Random(after_epochs).uniform(0.0, 0.5) * epoch_s)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err


def test_sigkill_then_resume_ends_like_an_uninterrupted_run(toy_small, tmp_path):
    plain = tmp_path / "plain"
    mmcli("train", toy_small, *ARGS, "--out", plain)
    out = tmp_path / "killed"
    code, _ = interrupt(toy_small, out, signal.SIGKILL, after_epochs=2)
    assert code == -signal.SIGKILL and not out.exists()
    done = epochs_done(out.parent, out.name)
    assert 2 <= done < 6, f"the kill came at the wrong time ({done} epochs done)"
    mmcli("train", "--resume", out)
    assert metrics(out) == metrics(plain)
    assert json.loads((out / "eval-test.json").read_text())["accuracy"] == json.loads((plain / "eval-test.json").read_text())["accuracy"]
    assert not list(tmp_path.glob(".killed.partial-*"))
    assert json.loads((out / "provenance.json").read_text())["resumed_from_epoch"] >= 2


def test_ctrl_c_exits_130_and_says_how_to_resume(toy_small, tmp_path):
    out = tmp_path / "stopped"
    # at once after the second epoch (a checkpoint exists by then): on a loaded machine any
    # wait measured from this process's polling could outlast the run's remaining epochs
    code, err = interrupt(toy_small, out, signal.SIGINT, after_epochs=2, into_next=False)
    assert code == 130, err
    assert f"mmcli train --resume {out}" in err and "Traceback" not in err
    mmcli("train", "--resume", out)
    assert len(metrics(out)) == 6
    again = mmcli("train", "--resume", out, check=False)
    assert again.returncode == 2 and "finished" in again.stderr


def test_a_kill_between_the_weights_and_the_checkpoint_resumes_from_the_checkpoint(toy_small, tmp_path, monkeypatch):
    """The narrowest place to be stopped: epoch 2's last.safetensors is written, its
    checkpoint is not. The resumed run must pair epoch 1's checkpoint with epoch 1's
    weights (which the checkpoint holds), and end as the uninterrupted run."""
    from mmcli.config import from_dict
    from mmcli.training.api import train

    config = {"data": {"manifest": str(toy_small)}, "model": {"modalities": ["image", "text"]},
              "train": {"epochs": 3, "seed": 3, "patience": 0}}
    train(from_dict(config), tmp_path / "plain")
    stop_at_checkpoint_and_resume(monkeypatch, config, tmp_path / "killed", epoch=2, written=False)
    assert metrics(tmp_path / "killed") == metrics(tmp_path / "plain")
