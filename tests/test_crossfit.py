"""Cross-fitted ensemble weights where the validation split is too small (mmcli.compare.crossfit).

tests/conftest.py plans every other test's comparisons without them (`no_ensemble_folds`);
these ask for them with --ensemble-folds."""

from __future__ import annotations

import ast
import csv
import json
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest

from mmcli.compare.crossfit import fold_data, folds


def ok(*args):
    from typer.testing import CliRunner

    from mmcli.cli import app

    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    return result


def results(out: Path) -> list[dict]:
    with open(out / "results.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def split_ids(run: Path) -> dict[str, set[str]]:
    return {name: set(part["ids"]) for name, part in json.loads((run / "splits.json").read_text())["splits"].items()}


@pytest.fixture(scope="module")
def grouped(tmp_path_factory):
    """Texts in sources of two rows each (a group column): 12 sources of 'a', 9 of 'b', one
    of 'c', all training rows, and test rows of 'a' and 'b'."""
    from mmcli.config import Config
    from mmcli.pipeline import prepare_training

    folder = tmp_path_factory.mktemp("grouped")
    rows, n = [], 0
    for label, sources, split in (("a", 12, "train"), ("b", 9, "train"), ("c", 1, "train"), ("a", 3, "test"),
                                  ("b", 3, "test")):
        for _ in range(sources):
            n += 1
            rows += [{"id": f"s{n}-{j}", "group": f"s{n}", "note": f"{label} word{n} w{j}", "label": label,
                      "split": split} for j in range(2)]
    with open(folder / "data.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    config = Config()
    config.data.manifest = str(folder / "data.csv")
    config.data.val_fraction = 0.0
    return prepare_training(config, str(folder / "cache"))


def test_folds_keep_a_source_whole_deal_each_label_evenly_and_never_hold_out_a_rare_label(grouped):
    fold_of = folds(grouped, 3, seed=0)
    train = [i for i, s in enumerate(grouped.splits) if s == "train"]
    assert sorted(fold_of) == train  # every training row, nothing else
    by_source = defaultdict(set)
    for i in train:
        by_source[grouped.groups[i]].add(fold_of[i])
    assert all(len(f) == 1 for f in by_source.values())  # a source's rows in one fold
    values = grouped.task.target_values(grouped.table)
    label_of = {grouped.groups[i]: values[i] for i in train}
    dealt = Counter((label_of[g], next(iter(f))) for g, f in by_source.items())
    assert {dealt[("a", k)] for k in range(3)} == {4} and {dealt[("b", k)] for k in range(3)} == {3}
    assert dealt[("c", -1)] == 1  # one source of 'c': never held out, or no model would have seen its label
    assert folds(grouped, 3, seed=0) == fold_of and folds(grouped, 3, seed=1) != fold_of


def test_a_fold_s_data_tests_on_its_fold_and_never_on_the_comparison_s_test_rows(grouped):
    fold_of = folds(grouped, 3, seed=0)
    held = set()
    for k in range(3):
        data = fold_data(grouped, [k, 3], 0)
        test = {i for i, s in enumerate(data.splits) if s == "test"}
        assert test == {i for i, f in fold_of.items() if f == k}
        assert {i for i, s in enumerate(data.splits) if s == "train"} == {i for i, f in fold_of.items() if f != k}
        assert not held & test
        held |= test
    assert all(grouped.splits[i] == "train" for i in held)  # the comparison's test rows: in no fold's test split


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_a_small_validation_split_weighs_the_ensemble_on_out_of_fold_predictions(toy_small, tmp_path):
    """toy_small's validation split holds 24 rows: fewer than 30, so the ensemble's weights are
    chosen on the members' out-of-fold predictions of the training split; computed here
    again from the fold runs' saved outputs."""
    out = tmp_path / "cmp"
    ok("compare", "multimodal:ensemble", "--data", toy_small, "--modalities", "image,text", "--epochs", "3",
       "--ensemble-folds", "3", "--jobs", "1", "--out", out, "--quiet")
    rows = results(out)
    assert [r["variant"] for r in rows] == ["unimodal:image", "unimodal:text", "multimodal:ensemble"]  # no fold rows
    runs = out / "runs"
    assert sorted(p.name for p in runs.iterdir()) == sorted(
        [f"unimodal-{m}-seed0{f}" for m in ("image", "text") for f in ("", "-fold1", "-fold2", "-fold3")])
    member = split_ids(runs / "unimodal-image-seed0")
    held = [split_ids(runs / f"unimodal-image-seed0-fold{k}")["test"] for k in (1, 2, 3)]
    assert set().union(*held) == member["train"] and sum(map(len, held)) == len(member["train"])
    outputs = {m: [np.load(runs / f"unimodal-{m}-seed0-fold{k}" / "compare-outputs.npz") for k in (1, 2, 3)]
               for m in ("image", "text")}
    assert [z["test_ids"].tolist() for z in outputs["image"]] == [z["test_ids"].tolist() for z in outputs["text"]]
    y = np.concatenate([z["test_targets"] for z in outputs["image"]])
    p = {m: _softmax(np.concatenate([z["test_outputs"] for z in zs])) for m, zs in outputs.items()}
    grid = [k / 20 for k in range(21)]
    best = max(grid, key=lambda w: (((w * p["image"] + (1 - w) * p["text"]).argmax(1) == y).mean(), -abs(w - 0.5)))
    ensemble = rows[-1]
    assert ensemble["weighed_on"] == "out-of-fold"
    assert ast.literal_eval(ensemble["weights"]) == pytest.approx({"image": best, "text": 1 - best})
    test = {m: np.load(runs / f"unimodal-{m}-seed0" / "compare-outputs.npz") for m in ("image", "text")}
    average = best * _softmax(test["image"]["test_outputs"]) + (1 - best) * _softmax(test["text"]["test_outputs"])
    assert float(ensemble["value"]) == pytest.approx((average.argmax(1) == test["image"]["test_targets"]).mean())
    assert "out-of-fold predictions" in (out / "report.md").read_text()
    # a fold run without its result (--collect before every --job finished): equal weights, and said
    (runs / "unimodal-text-seed0-fold2" / "compare-result.json").unlink()
    collected = ok("compare", "--collect", out)
    assert "fold runs that choose the ensemble's weights have not all finished" in collected.output
    assert results(out)[-1]["weights"] == "" and "have not all finished" in (out / "report.md").read_text()


@pytest.mark.parametrize("folds_given, jobs", [("0", 2), ("4", 2 + 2 * 4)])
def test_ensemble_folds_sets_how_many_runs_the_plan_adds(toy_small, tmp_path, folds_given, jobs):
    printed = ok("compare", "multimodal:ensemble", "--data", toy_small, "--modalities", "image,text", "--epochs", "1",
                 "--ensemble-folds", folds_given, "--print-jobs", "--out", tmp_path / "cmp").stdout
    lines = [line for line in printed.splitlines() if "--job" in line]
    assert len(lines) == jobs


def test_the_fold_runs_are_announced_once_also_with_tune(toy_small, tmp_path):
    """--tune lists the plan's cells again after its search: the warning stays one."""
    from typer.testing import CliRunner

    from mmcli.cli import app

    result = CliRunner().invoke(app, ["compare", "multimodal:ensemble", "--data", str(toy_small), "--modalities",
                                      "image,text", "--epochs", "1", "--ensemble-folds", "2", "--tune-space",
                                      "train.lr=0.001,0.003", "--print-jobs", "--out", str(tmp_path / "cmp")])
    assert result.exit_code == 0, result.output
    assert result.output.count("chosen on out-of-fold predictions of the training split instead, 4 more runs") == 1
    assert sum("--job" in line for line in result.output.splitlines()) == 2 + 4


def test_ensemble_folds_with_collect_is_refused_as_the_plan_decides(tmp_path):
    from typer.testing import CliRunner

    from mmcli.cli import app

    result = CliRunner().invoke(app, ["compare", "--collect", str(tmp_path), "--ensemble-folds", "3"])
    assert result.exit_code == 2 and "drop --ensemble-folds" in result.output


def test_too_few_sources_to_hold_out_keep_the_validation_split_s_choice(grouped):
    """grouped: 21 training sources can be held out ('c''s only source cannot)."""
    from types import SimpleNamespace

    from mmcli.compare.crossfit import wanted
    from mmcli.compare.variants import ensemble_variant

    plan = SimpleNamespace(folds=5, variants=[ensemble_variant(["note", "tag"])], val_sources=0)
    assert wanted(plan, grouped)
    assert not wanted(SimpleNamespace(**{**vars(plan), "folds": 11}), grouped)  # 21 < 2 per fold
    assert not wanted(SimpleNamespace(**{**vars(plan), "val_sources": 25}), grouped)  # no more than validation has
    assert not wanted(SimpleNamespace(**{**vars(plan), "val_sources": 30}), grouped)  # validation large enough
    assert not wanted(SimpleNamespace(**{**vars(plan), "folds": 0}), grouped)
    assert not wanted(SimpleNamespace(**{**vars(plan), "variants": [ensemble_variant(["note"])]}), grouped)


@pytest.mark.parametrize("given", ["1", "-2"])
def test_one_fold_or_fewer_is_refused(toy_small, tmp_path, given):
    from typer.testing import CliRunner

    from mmcli.cli import app

    result = CliRunner().invoke(app, ["compare", "--data", str(toy_small), "--ensemble-folds", given, "--print-jobs",
                                      "--out", str(tmp_path / "cmp")])
    assert result.exit_code == 2 and ("give 0 (equal weights" in result.output or "greater than or equal to 0" in result.output)
