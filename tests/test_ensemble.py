"""`multimodal:ensemble` (the unimodal runs' predictions averaged, computed when the results
are collected) and `compare --reference VARIANT` (every variant tested against a chosen one)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mmcli.compare import stats
from mmcli.compare.variants import expand

ARGS = ["--modalities", "image,text", "--epochs", "3", "--seeds", "2", "--jobs", "1"]
FUSIONS = ["concat", "sum", "weighted", "attention", "late", "identity"]
DEFAULT = ("concat", "sum", "weighted", "attention")
MODS = ["image", "audio", "text"]


def invoke(*args):
    from typer.testing import CliRunner

    from mmcli.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def ok(*args):
    result = invoke(*args)
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    return result


def summary(out: Path) -> dict[str, dict]:
    return {r["variant"]: r for r in json.loads((out / "summary.json").read_text())}


def results(out: Path) -> list[dict]:
    with open(out / "results.csv", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def cmp(toy_small, tmp_path_factory) -> Path:
    """multimodal:ensemble named alone: it brings the unimodal variants it averages."""
    out = tmp_path_factory.mktemp("ensemble") / "cmp"
    ok("compare", "multimodal:ensemble", "--data", toy_small, *ARGS, "--out", out, "--quiet")
    return out


# --------------------------------------------------------------------------- which variants

@pytest.mark.parametrize("items, expected", [
    ([], ["unimodal:image", "unimodal:audio", "unimodal:text", *(f"multimodal:{f}" for f in DEFAULT), "multimodal:ensemble"]),
    (["multimodal"], [f"multimodal:{f}" for f in DEFAULT]),  # no unimodal runs to average: not free, left out
    (["unimodal:text", "multimodal"], ["unimodal:text", *(f"multimodal:{f}" for f in DEFAULT)]),
    (["multimodal", "unimodal"], [*(f"multimodal:{f}" for f in DEFAULT), "multimodal:ensemble",
                                  "unimodal:image", "unimodal:audio", "unimodal:text"]),
    (["unimodal:text", "multimodal:ensemble"], ["unimodal:text", "unimodal:image", "unimodal:audio", "multimodal:ensemble"]),
    (["multimodal:all", "unimodal"], [*(f"multimodal:{f}" for f in FUSIONS if f != "identity"), "multimodal:ensemble",
                                      "unimodal:image", "unimodal:audio", "unimodal:text"]),
], ids=["default", "multimodal-alone", "one-unimodal", "families-reversed", "named", "all"])
def test_the_multimodal_family_has_the_ensemble_when_every_unimodal_variant_runs(items, expected):
    variants = expand(items, MODS, FUSIONS, DEFAULT)
    assert [v.name for v in variants] == expected
    ens = [v for v in variants if v.name == "multimodal:ensemble"]
    assert all(v.family == "multimodal" and v.modalities == tuple(MODS) for v in ens)


def test_an_encoder_choice_gives_the_ensemble_of_that_encoder_s_unimodal_runs():
    """`multimodal@image=...` and `multimodal:ensemble@image=...`: the ensemble averages the
    unimodal run of the chosen encoder with the other modalities' default runs."""
    from mmcli.compare.ensemble import members

    kinds, known = {m: m for m in MODS}, ["image.cnn", "image.mobilenet_v2", "audio.cnn", "text.bag"]
    chosen = "multimodal:ensemble@image=mobilenet_v2:frozen"
    both = expand(["unimodal", "unimodal:image@mobilenet_v2:frozen", "multimodal", "multimodal@image=mobilenet_v2:frozen"],
                  MODS, FUSIONS, DEFAULT, kinds=kinds, encoders=known)
    names = [v.name for v in both]
    assert names.count("multimodal:ensemble") == 1 and names.count(chosen) == 1
    assert names.index(chosen) == len(names) - 1 and "multimodal:concat@image=mobilenet_v2:frozen" in names
    late = both[names.index(chosen)]
    assert members(late) == {"image": "unimodal:image@mobilenet_v2:frozen", "audio": "unimodal:audio", "text": "unimodal:text"}
    assert members(both[names.index("multimodal:ensemble")]) == {m: f"unimodal:{m}" for m in MODS}
    # named alone, it brings the runs it averages; the family alone has no unimodal runs to average
    alone = [v.name for v in expand([chosen], MODS, FUSIONS, DEFAULT, kinds=kinds, encoders=known)]
    assert alone == ["unimodal:image@mobilenet_v2:frozen", "unimodal:audio", "unimodal:text", chosen]
    assert not any("ensemble" in v.name for v in expand(["unimodal", "multimodal@image=mobilenet_v2"], MODS, FUSIONS,
                                                            DEFAULT, kinds=kinds, encoders=known))


def test_the_ensemble_needs_two_modalities_and_is_named_among_the_fusions():
    from mmcli.errors import UsageError

    with pytest.raises(UsageError, match="needs at least two modalities"):
        expand(["multimodal:ensemble"], ["text"], FUSIONS, DEFAULT)
    with pytest.raises(UsageError, match=r"unknown fusion 'nope' \(known: .*ensemble\)"):
        expand(["multimodal:nope"], MODS, FUSIONS, DEFAULT)


@pytest.mark.parametrize("task, act", [("classification", lambda o: o.softmax(1)), ("multilabel", torch.sigmoid),
                                       ("regression", lambda o: o)])
def test_each_task_averages_probabilities_or_values(task, act):
    from mmcli.heads import TASKS

    outputs = [torch.randn(5, 3 if task != "regression" else 1) * 4 for _ in range(3)]
    combined = TASKS.get(task)().average(outputs)
    mean = torch.stack([act(o) for o in outputs]).mean(0)
    assert torch.allclose(act(combined), mean, atol=1e-5)


@pytest.mark.parametrize("task, act", [("classification", lambda o: o.softmax(1)),
                                       ("multilabel", torch.sigmoid), ("regression", lambda o: o)])
def test_each_task_weighs_its_members(task, act):
    from mmcli.heads import TASKS

    outputs = [torch.randn(5, 3 if task != "regression" else 1) * 4 for _ in range(2)]
    combined = TASKS.get(task)().average(outputs, [0.25, 0.75])
    assert torch.allclose(act(combined), 0.25 * act(outputs[0]) + 0.75 * act(outputs[1]), atol=1e-5)


def _member(outputs: torch.Tensor, targets: torch.Tensor) -> dict:
    ids = [str(i) for i in range(len(targets))]
    return {"val_ids": ids, "val_outputs": outputs, "val_targets": targets,
            "test_ids": ids, "test_outputs": outputs, "test_targets": targets}


def test_the_ensemble_weighs_its_members_on_a_validation_split_large_enough():
    from types import SimpleNamespace

    from mmcli.compare.ensemble import choose_weights, evaluate
    from mmcli.config import Config

    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (60,), generator=g)
    knows = torch.nn.functional.one_hot(y, 3).float() * 2.0  # right, and not too sure of it
    guesses = torch.randn(60, 3, generator=g) * 8.0  # confident and random
    loaded = {"a": _member(knows, y), "b": _member(guesses, y)}
    plan = SimpleNamespace(base_config=Config, metric="accuracy", higher_is_better=True, val_sources=60)
    names = ["x", "y", "z"]
    equal = evaluate(plan, loaded, ["a", "b"], names, {})["accuracy"]
    weights = choose_weights(plan, loaded, names, {})
    assert weights is not None and weights["a"] > weights["b"] and sum(weights.values()) == pytest.approx(1)
    assert evaluate(plan, loaded, ["a", "b"], names, {}, weights)["accuracy"] == 1.0 > equal
    assert evaluate(plan, loaded, ["b"], names, {}, weights)["accuracy"] < 0.6  # without a: b alone, renormalised
    # among equal scores the most even weights: two members that agree share the average
    assert choose_weights(plan, {"a": _member(knows, y), "b": _member(knows * 3, y)}, names, {}) == {"a": 0.5, "b": 0.5}
    # a validation split of fewer than 30 sources (COCO-mini's 6 photos) chooses nothing: equal weights
    assert choose_weights(SimpleNamespace(**{**vars(plan), "val_sources": 29}), loaded, names, {}) is None
    # lower is better (the loss): the member that knows still gets the weight
    by_loss = choose_weights(SimpleNamespace(**{**vars(plan), "metric": "loss", "higher_is_better": False}), loaded, names, {})
    assert by_loss is not None and by_loss["a"] > by_loss["b"]


def test_the_ensemble_renormalises_its_weights_over_the_members_it_averages():
    from types import SimpleNamespace

    from mmcli.compare.ensemble import evaluate
    from mmcli.config import Config

    g = torch.Generator().manual_seed(1)
    y = torch.randint(0, 3, (40,), generator=g)
    members = {m: _member(torch.randn(40, 3, generator=g) * 3, y) for m in "abc"}
    plan = SimpleNamespace(base_config=Config, metric="loss", higher_is_better=False, val_sources=40)
    names = ["x", "y", "z"]

    def by_hand(shares: dict[str, float]) -> float:
        probs = sum(w * members[m]["test_outputs"].softmax(1) for m, w in shares.items())
        return float(torch.nn.functional.nll_loss(probs.log(), y))

    weights = {"a": 0.6, "b": 0.3, "c": 0.1}
    assert evaluate(plan, members, ["a", "b", "c"], names, {}, weights)["loss"] == pytest.approx(by_hand(weights), rel=1e-4)
    assert evaluate(plan, members, ["b", "c"], names, {}, weights)["loss"] == pytest.approx(by_hand({"b": 0.75, "c": 0.25}), rel=1e-4)
    zero = {"a": 1.0, "b": 0.0, "c": 0.0}  # none of b's and c's weight left: equal
    assert evaluate(plan, members, ["b", "c"], names, {}, zero)["loss"] == pytest.approx(by_hand({"b": 0.5, "c": 0.5}), rel=1e-4)


def test_multilabel_weights_are_scored_with_thresholds_chosen_for_each_average():
    """The search chooses the thresholds again for every weighting, as the final score does:
    the first member's own thresholds would favour it."""
    from types import SimpleNamespace

    from mmcli.compare.ensemble import choose_weights
    from mmcli.config import Config

    g = torch.Generator().manual_seed(2)
    y = (torch.rand(80, 4, generator=g) > 0.5).float()
    knows = (y * 2 - 1) * 1.5 - 5.0  # right on every label, every logit far below 0: nothing passes 0.5 unless re-chosen
    guesses = torch.randn(80, 4, generator=g) * 3
    config = Config()
    config.model.task = "multilabel"
    plan = SimpleNamespace(base_config=lambda: config, metric="micro_f1", higher_is_better=True, val_sources=80)
    weights = choose_weights(plan, {"b": _member(guesses, y), "a": _member(knows, y)}, list("pqrs"), {})
    assert weights is not None and weights["a"] > weights["b"]


# --------------------------------------------------------------------------- the ensemble, end to end

def _by_hand(out: Path, seed: int, mods: list[str]) -> float:
    """Accuracy of the mean softmax of the saved outputs of these unimodal runs."""
    probs, targets = [], None
    for m in mods:
        with np.load(out / "runs" / f"unimodal-{m}-seed{seed}" / "compare-outputs.npz") as z:
            e = np.exp(z["test_outputs"] - z["test_outputs"].max(1, keepdims=True))
            probs.append(e / e.sum(1, keepdims=True))
            assert targets is None or (targets == z["test_targets"]).all()
            targets = z["test_targets"]
    return float((np.mean(probs, axis=0).argmax(1) == targets).mean())


def test_the_ensemble_is_the_average_of_the_saved_unimodal_outputs(cmp):
    rows = summary(cmp)
    assert list(rows) == ["unimodal:image", "unimodal:text", "multimodal:ensemble"]
    plan = json.loads((cmp / "compare.json").read_text())
    assert {c["variant"] for c in plan["cells"]} == {"unimodal:image", "unimodal:text"}  # it trains nothing
    assert not list((cmp / "runs").glob("multimodal-ensemble*"))
    cells = {(r["variant"], int(r["seed"])): r for r in results(cmp)}
    seeds = sorted(s for v, s in cells if v == "multimodal:ensemble")
    assert len(seeds) == 2 and rows["multimodal:ensemble"]["n"] == 2
    for s in seeds:
        ens = cells[("multimodal:ensemble", s)]
        assert float(ens["value"]) == pytest.approx(_by_hand(cmp, s, ["image", "text"]))
        # without a modality: the other modality's run alone
        assert float(ens["without_text"]) == pytest.approx(float(cells[("unimodal:image", s)]["value"]))
        assert float(ens["without_image"]) == pytest.approx(float(cells[("unimodal:text", s)]["value"]))
        assert ens["run"] == ""
    e = rows["multimodal:ensemble"]
    for key in ("mean", "ci_low", "ci_high", "delta_vs_reference", "without_image", "without_text", "verdict"):
        assert e[key] is not None, key
    assert e["mean"] == pytest.approx(np.mean([_by_hand(cmp, s, ["image", "text"]) for s in seeds]))
    report = (cmp / "report.md").read_text()
    assert "| multimodal:ensemble | 2 |" in report and "average of the other modalities' runs" in report
    # the toy's 24 validation rows are too few to weigh the members on, and these tests plan no folds
    # (tests/conftest.py; tests/test_crossfit.py has them): equal weights, and the report says why
    assert plan["val_sources"] == 24 and plan["folds"] == 0 and all(r["weights"] == "" for r in results(cmp))
    assert ("with equal weights (chosen on the validation split only where it holds at least 30 sources, else on "
            "out-of-fold predictions where the training split has enough, unless --ensemble-folds is 0)") in report
    with open(cmp / "per_class.csv", newline="") as handle:
        assert any(r["variant"] == "multimodal:ensemble" for r in csv.DictReader(handle))


def test_every_variant_and_the_ensemble_are_also_tested_on_the_test_split_drawn_again(cmp):
    """Every run saves its test rows' sources; the ensemble brings its averaged outputs:
    the summary has the resampled difference of every variant but the reference."""
    import numpy as np

    from mmcli.compare.resample import FIELDS

    with np.load(cmp / "runs" / "unimodal-text-seed0" / "compare-outputs.npz") as z:
        sources = len(np.unique(z["test_groups"]))
        assert len(z["test_groups"]) == len(z["test_ids"])
    for name, row in summary(cmp).items():
        if row["is_reference"]:
            assert all(row[k] is None for k in FIELDS)
            continue
        assert 0 < row["p_resampled"] <= 1 and row["p_resampled_holm"] >= row["p_resampled"], name
        assert row["resampled_sources"] == sources
        assert row["delta_resampled_low"] <= row["delta_resampled_high"]


def test_collect_gives_the_same_ensemble(cmp):
    before = summary(cmp)
    shown = ok("compare", "--collect", cmp)
    assert summary(cmp) == before
    assert "multimodal:ensemble" in shown.stdout


def test_a_unimodal_run_without_saved_outputs_runs_again_for_the_ensemble(toy_small, tmp_path):
    """A run finished by an mmcli older than the ensemble saved no outputs: a plan with the
    ensemble runs it again; a plan without the ensemble reuses it."""
    from mmcli import runs

    out = tmp_path / "cmp"
    args = ["--data", toy_small, "--modalities", "image,text", "--epochs", "1", "--jobs", "1", "--out", out, "--quiet"]

    def make_old(run: Path) -> None:
        result = json.loads((run / "compare-result.json").read_text())
        del result["outputs"]
        runs.write_json(run / "compare-result.json", result)  # as mmcli wrote it: the ledger knows it
        (run / "compare-outputs.npz").unlink()

    ok("compare", "unimodal:text", *args)
    make_old(out / "runs" / "unimodal-text-seed0")
    ok("compare", "unimodal:text", *args)
    assert [r["reused"] for r in results(out)] == ["True"]
    ok("compare", "multimodal:ensemble", *args)
    reused = {r["variant"]: r["reused"] for r in results(out)}
    assert reused["unimodal:text"] == "False" and summary(out)["multimodal:ensemble"]["n"] == 1
    assert (out / "runs" / "unimodal-text-seed0" / "compare-outputs.npz").is_file()


# --------------------------------------------------------------------------- --reference

def test_reference_tests_every_variant_against_the_chosen_one(cmp):
    ok("compare", "--collect", cmp, "--reference", "unimodal:text")
    rows = summary(cmp)
    ref = rows["unimodal:text"]
    assert ref["is_reference"] and ref["delta_vs_reference"] == 0.0 and ref["p_value"] is None
    assert ref["verdict"] == "reference"
    values = {(r["variant"], int(r["seed"])): float(r["value"]) for r in results(cmp)}
    for name in ("unimodal:image", "multimodal:ensemble"):
        row = rows[name]
        diffs = [values[(name, s)] - values[("unimodal:text", s)] for s in (0, 1)]
        assert row["reference"] == "unimodal:text" and not row["is_reference"]
        assert row["delta_vs_reference"] == pytest.approx(sum(diffs) / 2)
        assert row["p_value"] == stats.paired_t_test(diffs)
        if row["p_value"] is not None:  # else every seed differs by the same amount: no test, and the verdict says so
            assert row["verdict"].split(" (not ")[0].endswith("unimodal:text") and "best single modality" not in row["verdict"]
    assert any(rows[n]["p_value"] is not None for n in ("unimodal:image", "multimodal:ensemble"))
    best = rows["unimodal:image"]["best_unimodal"]  # still reported beside the chosen reference
    assert rows[best]["is_best_unimodal"]
    report = (cmp / "report.md").read_text()
    assert "delta vs unimodal:text" in report and "`unimodal:text` (chosen with --reference)" in report
    # without --reference, --collect goes back to the plan's: the best unimodal variant
    ok("compare", "--collect", cmp)
    rows = summary(cmp)
    assert rows[best]["verdict"] == "best single modality (reference)" and rows[best]["reference"] == best


def test_a_planned_reference_is_kept_for_collect(toy_small, tmp_path):
    out = tmp_path / "cmp"
    printed = ok("compare", "multimodal:ensemble", "--data", toy_small, "--modalities", "image,text", "--seeds", "2",
                 "--reference", "multimodal:ensemble", "--out", out, "--print-jobs")
    assert len(printed.stdout.splitlines()) == 4  # two unimodal variants x two seeds: the ensemble is no job
    assert json.loads((out / "compare.json").read_text())["reference"] == "multimodal:ensemble"
    shown = ok("compare", "--collect", out)
    assert "delta vs multimodal:ensemble" in shown.stdout
    assert all(r["reference"] == "multimodal:ensemble" for r in summary(out).values())


@pytest.mark.parametrize("args, needles", [
    (["compare", "unimodal", "--modalities", "image,text", "--reference", "unimodal:audio"],
     ["--reference unimodal:audio", "not a variant", "unimodal:image, unimodal:text"]),
    (["compare", "--collect", "{out}", "--reference", "multimodal:concat"],
     ["--reference multimodal:concat", "unimodal:image, unimodal:text, multimodal:ensemble"]),
    (["compare", "--out", "{out}", "--job", "0", "--reference", "unimodal:text"], ["drop --reference"]),
], ids=["plan", "collect", "job"])
def test_an_unknown_reference_is_exit_2_naming_the_variants(cmp, toy_small, tmp_path, args, needles):
    args = [str(cmp) if a == "{out}" else a for a in args]
    if "--collect" not in args and "--job" not in args:
        args += ["--data", str(toy_small), "--out", str(tmp_path / "x")]
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    for needle in needles:
        assert needle in result.output
    assert not (tmp_path / "x" / "runs").exists()  # refused before any run


def test_list_variants_names_the_ensemble():
    assert "multimodal:ensemble" in ok("list", "variants").stdout


def test_the_plan_counts_validation_sources_as_the_small_validation_warning_does():
    """Verification validates on identities: 200 clips of 4 speakers are 4 sources, too few
    to weigh an ensemble on."""
    from mmcli.data.splits import identity_groups, validation_sources

    speakers = [f"s{i % 4}" for i in range(200)]  # what mmcli.pipeline.prepare_training counts for verification
    assert validation_sources(["val"] * 200, identity_groups(speakers)) == 4
