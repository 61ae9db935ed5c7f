"""Typed contracts (issue 21): tasks, fusions and task heads declare what the core calls,
with explicit defaults for the optional capabilities, instead of attributes probed with
`hasattr`; predictions are formatted by the task."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import mmcli
from mmcli.config import from_dict
from mmcli.encoders import ModalitySpec
from mmcli.errors import ConfigError
from mmcli.fusion import FUSIONS
from mmcli.fusion.base import Fusion
from mmcli.heads import TASKS, Task

SRC = Path(mmcli.__file__).parent


def test_every_registered_fusion_and_task_keeps_the_contract():
    assert all(isinstance(FUSIONS.get(n), type) and issubclass(FUSIONS.get(n), Fusion) for n in FUSIONS.names())
    assert all(issubclass(TASKS.get(n), Task) for n in TASKS.names())


def test_a_task_missing_what_the_core_calls_cannot_be_made():
    class Half(Task):
        name = "half"

        def names(self, train_values):
            return []

    with pytest.raises(TypeError, match="abstract"):
        Half()


def test_a_fusion_outside_the_contract_is_refused_naming_it():
    from torch import nn

    from mmcli.models import build

    class Loose(nn.Module):
        def __init__(self, in_dims, out_dim, **_):
            super().__init__()
            self.out_dim = out_dim

    FUSIONS.register("loose", "not a Fusion")(Loose)
    try:
        specs = {"a": ModalitySpec("a", "tabular", numeric=2), "b": ModalitySpec("b", "tabular", numeric=2)}
        with pytest.raises(ConfigError, match="fusion loose: .*mmcli.fusion.base.Fusion"):
            build(from_dict({"model": {"fusion": "loose"}}), specs, 3)
    finally:
        del FUSIONS._entries["loose"]


def test_optional_capabilities_have_explicit_defaults():
    from mmcli.heads.base import TaskHead

    regression = TASKS.get("regression")(from_dict({"model": {"task": "regression"}}))
    assert not regression.has_classes and regression.class_weights() is None
    with pytest.raises(NotImplementedError):
        regression.sample_weights(None)
    assert TASKS.get("retrieval")(from_dict({"model": {"task": "retrieval"}})).prior_outputs(None, 1, 1) is None
    head = TaskHead()
    assert head.extra_losses({}, {}, None) == {} and head.embed_modalities({}) is None and not head.adds_losses
    classification = TASKS.get("classification")(from_dict({}))
    header, rows = classification.csv_table([{"id": "1", "label": "a", "score": 0.5, "modalities_used": ["x", "y"]}])
    assert header == ["id", "label", "score", "modalities_used"] and rows == [["1", "a", "0.500000", "x|y"]]


PROBED = ("task", "head", "fusion", "model")


def test_no_capability_is_probed_with_hasattr():
    """hasattr/getattr with a default on a task, a head, a fusion or a model: a contract
    that the base class should declare."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("hasattr", "getattr") \
                    and (node.func.id == "hasattr" or len(node.args) == 3):
                target = ast.unparse(node.args[0])
                if any(word in target.split(".")[-1] for word in PROBED) and "setup.py" not in path.name:
                    found.append(f"{path.relative_to(SRC)}:{node.lineno}: {ast.unparse(node)}")
    assert found == [], "\n".join(found)
