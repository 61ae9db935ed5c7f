"""Modality kinds as one registry (issue 21): nothing outside mmcli/kinds branches on a
kind's name, and a kind registered inside a test trains end to end without touching any
other file."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import mmcli
from mmcli import kinds

SRC = Path(mmcli.__file__).parent
KIND_NAMES = set(kinds.names())


def _kind_constants(node: ast.AST) -> list[str]:
    """Kind names written as string constants in `node` (a constant, or a tuple, list or set of them)."""
    if isinstance(node, ast.Constant) and node.value in KIND_NAMES:
        return [node.value]
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return [n for e in node.elts for n in _kind_constants(e)]
    return []


def branches_on_kind_names(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, what) for each comparison with a kind's name (`kind == "image"`, `k in
    ("text", "audio")`), each `match` case on one, and each dict literal keyed by them
    (a per-kind table): the places that decide by a kind's name."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            names = [n for side in [node.left, *node.comparators] for n in _kind_constants(side)]
            found += [(node.lineno, f"compares with '{n}'") for n in names]
        elif isinstance(node, ast.match_case):
            found += [(node.pattern.lineno, f"matches '{n}'") for n in _kind_constants(getattr(node.pattern, "value", None)
                                                                                    or ast.Constant(None))]
        elif isinstance(node, ast.Dict) and len(node.keys) >= 2:  # a manifest row has other keys too ("id", "label")
            keyed = [n for k in node.keys if k is not None for n in _kind_constants(k)]
            if len(keyed) == len(node.keys):
                found.append((node.lineno, f"a table keyed by kinds {keyed}"))
    return found


def test_the_scan_finds_each_way_of_branching_on_a_kind():
    code = '''
if m.kind == "image": pass
if kind in ("text", "audio"): pass
if "tabular" != k: pass
x = {"image": 1, "audio": 2}
match kind:
    case "text": pass
ok = m.kind == other and name == "label" and {"image": 1} and {"id": 1, "image": 2, "audio": 3}
'''
    found = branches_on_kind_names(ast.parse(code))
    assert [line for line, _ in found] == [2, 3, 3, 4, 5, 7], found


def test_nothing_outside_the_kinds_branches_on_a_kind_name():
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        if path.is_relative_to(SRC / "kinds"):
            continue
        for line, what in branches_on_kind_names(ast.parse(path.read_text(encoding="utf-8"))):
            offenders.append(f"{path.relative_to(SRC)}:{line}: {what}")
    assert not offenders, "\n".join(offenders)


# -- a throw-away kind, registered here and nowhere else -------------------------------

SIGNAL_LENGTH = 32


def _signal_kind():
    """A kind for 1-D signals saved as .npy files: a module's worth of code, in the test."""
    import numpy as np
    import torch

    class Signal(kinds.ModalityKind):
        name = "signal"
        about = "a 1-D signal per cell, saved with numpy.save"
        extensions = frozenset({".npy"})
        from_files = True
        plural = "signals"
        default_encoder = "mlp"
        corruptions = ("flip",)
        predict_option = ("--signal", "One example: path of its signal.")

        def arrays(self):
            return {"": ("float32", 1)}

        def decode(self, path, config):
            from mmcli.data.decode import DecodeError

            try:
                values = np.load(path, allow_pickle=False).astype(np.float32).ravel()
            except (OSError, ValueError) as exc:
                raise DecodeError(f"not a signal ({exc})") from None
            out = np.zeros(SIGNAL_LENGTH, dtype=np.float32)
            out[: min(len(values), SIGNAL_LENGTH)] = values[:SIGNAL_LENGTH]
            return torch.from_numpy(out), 0

        def blank(self, config):
            return torch.zeros(SIGNAL_LENGTH), 0

        def normalize(self, x, config):
            return x.float() * 2.0

        def corrupt(self, table, name, what, level, seed):
            table.tensors[name] = -table.tensors[name]

    return Signal


def _signal_encoder():
    from torch import nn

    from mmcli.encoders import Encoder

    class SignalMLP(Encoder):
        def __init__(self, spec, out_dim: int, hidden: int = 32):
            super().__init__()
            self.body = nn.Sequential(nn.Linear(SIGNAL_LENGTH, hidden), nn.ReLU())
            self.proj = nn.Linear(hidden, out_dim)
            self.out_dim = out_dim

        def features(self, x, lengths=None):
            import torch

            tokens = self.body(x).unsqueeze(1)
            return tokens, torch.ones(tokens.shape[:2], dtype=torch.bool, device=x.device)

    return SignalMLP


@pytest.fixture
def signal_kind():
    from mmcli.encoders import ENCODERS

    kind = kinds.register(_signal_kind())
    ENCODERS.register("signal.mlp", "an MLP over a 1-D signal", tags=("signal",))(_signal_encoder())
    try:
        yield kind
    finally:
        del kinds.KINDS["signal"]
        del ENCODERS._entries["signal.mlp"]


def _signal_manifest(folder: Path, n: int = 80) -> Path:
    """Rising or falling signals (the label) beside texts that say nothing about it."""
    import numpy as np

    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        label = "up" if i % 2 else "down"
        ramp = np.linspace(-1, 1, SIGNAL_LENGTH) * (1 if label == "up" else -1)
        np.save(folder / f"s{i}.npy", (ramp + rng.normal(0, 0.3, SIGNAL_LENGTH)).astype(np.float32))
        words = " ".join(rng.choice(["red", "green", "blue", "small", "large", "round"], size=3))
        rows.append(f"{i},s{i}.npy,{words},{label}")
    manifest = folder / "manifest.csv"
    manifest.write_text("id,wave,note,label\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return manifest


def test_a_kind_registered_in_a_test_trains_and_predicts_end_to_end(signal_kind, tmp_path, cli):
    """Detected by its extension, decoded into the cache, encoded by its default encoder,
    fused with a text, evaluated, corrupted and predicted: no file of mmcli names it."""
    import json

    from mmcli.config import DataConfig
    from mmcli.data.manifest import detect_modalities, read_manifest

    manifest = _signal_manifest(tmp_path)
    found = detect_modalities(read_manifest(manifest), DataConfig())
    assert {n: m.kind for n, m in found.items()} == {"wave": "signal", "note": "text"}

    out = tmp_path / "run"
    result = cli("train", str(manifest), "--out", str(out), "--epochs", "12", "--workers", "1", "--seed", "0")
    assert result.exit_code == 0, result.output
    data = json.loads((out / "data.json").read_text())
    assert data["modalities"]["wave"]["kind"] == "signal"
    metrics = json.loads((out / "eval-test.json").read_text())
    assert metrics["accuracy"] >= 0.8, metrics  # the signal carries the label; the note does not

    robust = cli("evaluate", str(out), "--corrupt", "wave:flip@1")
    assert robust.exit_code == 0, robust.output
    flipped = json.loads(robust.stdout)
    assert flipped["accuracy"] <= 0.2, flipped  # a flipped ramp reads as the other label

    lines = json.dumps({"id": "a", "wave": str(tmp_path / "s1.npy"), "note": "red"}) + "\n" + \
        json.dumps({"id": "b", "wave": str(tmp_path / "s2.npy")}) + "\n"
    predicted = cli("predict", str(out), "-", input=lines)
    assert predicted.exit_code == 0, predicted.output
    rows = [json.loads(line) for line in predicted.stdout.splitlines()]
    assert [r["label"] for r in rows] == ["up", "down"], rows
    assert rows[1]["modalities_used"] == ["wave"]
