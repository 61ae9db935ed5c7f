"""Multi-label classification, regression, class weights and the weighted sampler, and
TensorBoard logging: each task learns more than a model that sees nothing, predicts in
its own format, and works with compare."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from mmcli.cli import app
from conftest import SHARED_DATA


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def ok(result):
    assert result.exit_code == 0, f"exit {result.exit_code}\n{result.output}\n{result.exception!r}"
    return result


def derived(toy: Path, name: str, label) -> Path:
    """A manifest beside the toy set's, with the label column rewritten by `label(row)`."""
    rows = list(csv.DictReader(open(toy, newline="")))
    rng = random.Random(0)
    out = toy.parent / f"{name}.csv"
    with open(out, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        for r in rows:
            value = label(r["label"].split("-"), rng)
            if value is not None:
                writer.writerow({**r, "label": value})
    return out


@pytest.fixture(scope="module")
def tags(toy_small) -> Path:
    # colour, shape and size as three tags; a tenth of the examples also carry "odd"
    return derived(toy_small, "tags", lambda p, rng: "|".join(p + (["odd"] if rng.random() < 0.1 else [])))


@pytest.fixture(scope="module")
def price(toy_small) -> Path:
    return derived(toy_small, "price", lambda p, rng: f"{(10 if p[2] == 'large' else 2) + (5 if p[0] == 'red' else 0) + rng.gauss(0, 0.5):.3f}")


def bare_task(name: str):
    """A task of `name` as a run's config makes it, with no state fitted yet."""
    from mmcli.config import from_dict
    from mmcli.heads import make_task

    return make_task(from_dict({"model": {"task": name}}), {})


def jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_multilabel_learns_more_than_the_label_prior_and_predicts_label_lists(tags, tmp_path):
    out = tmp_path / "ml"
    ok(run("train", tags, "--task", "multilabel", "--epochs", "10", "--out", out))
    scores = json.loads(ok(run("evaluate", out, "--json")).stdout)
    for key in ("micro_f1", "macro_f1", "mean_average_precision", "subset_accuracy"):
        assert 0.0 <= scores[key] <= 1.0
    # a model that sees nothing scores each label's frequency: its mAP is the mean positive rate
    prior_map = sum(v["support"] for v in scores["per_label"].values()) / (len(scores["per_label"]) * scores["n_examples"])
    assert scores["mean_average_precision"] > prior_map + 0.25, (scores["mean_average_precision"], prior_map)
    target = json.loads((out / "target.json").read_text())
    # the kept epoch was chosen by its validation micro-F1 with the thresholds it was then given
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    kept = max(records, key=lambda r: r["val_micro_f1"])
    val = json.loads(ok(run("evaluate", out, "--split", "val", "--json")).stdout)
    assert kept["val_micro_f1"] == pytest.approx(val["micro_f1"], abs=1e-6), (kept, val["micro_f1"])
    names = json.loads((out / "labels.json").read_text())
    assert names == sorted(names) and "odd" in names and len(target["thresholds"]) == len(names)
    preds = jsonl(ok(run("predict", out, tags, "--format", "jsonl")).stdout)
    assert len(preds) == 240
    for p in preds[:20]:
        assert set(p["labels"]) <= set(names) and set(p["scores"]) == set(p["labels"])
    # the usual case is three tags; most predictions should name the right colour
    truth = {r["id"]: set(r["label"].split("|")) for r in csv.DictReader(open(tags, newline=""))}
    colour_right = sum(bool({"red", "blue"} & set(p["labels"]) & truth[p["id"]]) for p in preds)
    assert colour_right > 0.7 * len(preds)


def test_a_multilabel_comparison_tests_the_ensemble_with_the_test_split_drawn_again(tags, tmp_path):
    """Each run's micro-F1 from its own thresholds (target.json), the ensemble's from those
    chosen for its average: both resampled beside the t-test."""
    out = tmp_path / "cmp"
    ok(run("compare", "unimodal:text", "unimodal:image", "multimodal:ensemble", "--data", tags, "--task", "multilabel",
           "--epochs", "2", "--seeds", "2", "--out", out, "--quiet"))
    rows = {r["variant"]: r for r in json.loads((out / "summary.json").read_text())}
    tested = [r for r in rows.values() if not r["is_reference"]]
    assert len(tested) == len(rows) - 1 and "multimodal:ensemble" in rows and all(r["metric"] == "micro_f1" and 0 < r["p_resampled"] <= 1 for r in tested)
    assert all(r["delta_resampled_low"] <= r["delta_resampled_high"] for r in tested)


@pytest.mark.parametrize("fixture, task, metric", [("tags", "multilabel", "micro_f1"), ("price", "regression", "mae")])
def test_the_ensemble_cross_fits_its_weights_for_every_task_that_has_one(request, tmp_path, fixture, task, metric):
    """Fold runs of a task that splits at random (no stratification): every training source
    held out once, and the weights chosen on their outputs (tests/test_crossfit.py: classification)."""
    out = tmp_path / "cmp"
    ok(run("compare", "unimodal:text", "unimodal:image", "multimodal:ensemble", "--data", request.getfixturevalue(fixture),
           "--modalities", "image,text", "--task", task, "--metric", metric, "--epochs", "1", "--ensemble-folds", "2",
           "--out", out, "--quiet"))
    with open(out / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["variant"] for r in rows] == ["unimodal:text", "unimodal:image", "multimodal:ensemble"]
    assert rows[-1]["weighed_on"] == "out-of-fold" and sum(json.loads(rows[-1]["weights"]).values()) == pytest.approx(1)
    splits = {f: json.loads((out / "runs" / f"unimodal-text-seed0{f}" / "splits.json").read_text())["splits"]
              for f in ("", "-fold1", "-fold2")}
    assert sorted(splits["-fold1"]["test"]["ids"] + splits["-fold2"]["test"]["ids"]) == sorted(splits[""]["train"]["ids"])


def test_multilabel_reads_json_lists():
    from mmcli.heads.multilabel import split_labels

    assert split_labels('["dog", "frisbee"]', "|") == ["dog", "frisbee"]
    assert split_labels("dog|frisbee", "|") == ["dog", "frisbee"]
    assert split_labels("dog; cat", ";") == ["dog", "cat"]
    assert split_labels("[]", "|") == []


def test_regression_beats_the_mean_and_predicts_in_the_targets_units(price, tmp_path):
    out = tmp_path / "rg"
    ok(run("train", price, "--task", "regression", "--epochs", "10", "--out", out, "--set", "model.loss=huber"))
    scores = json.loads(ok(run("evaluate", out, "--json")).stdout)
    rows = list(csv.DictReader(open(price, newline="")))
    state = json.loads((out / "target.json").read_text())
    test_values = [float(r["label"]) for r in rows]
    # the baseline predicts the training mean for everyone
    baseline_mae = sum(abs(v - state["mean"]) for v in test_values) / len(test_values)
    assert scores["mae"] < 0.7 * baseline_mae, (scores["mae"], baseline_mae)
    assert scores["rmse"] >= scores["mae"] and scores["r2"] > 0.3
    preds = jsonl(ok(run("predict", out, price, "--format", "jsonl")).stdout)
    truth = {r["id"]: float(r["label"]) for r in rows}
    errors = [abs(p["value"] - truth[p["id"]]) for p in preds]
    assert sum(errors) / len(errors) < baseline_mae  # in the target's own units, not standardised
    assert min(p["value"] for p in preds) > -5 and max(p["value"] for p in preds) < 25


def test_regression_rejects_a_non_numeric_target_naming_row_and_column(toy_small, tmp_path):
    bad = derived(toy_small, "bad_price", lambda p, rng: "cheap" if rng.random() < 0.02 else "3.5")
    result = run("train", bad, "--task", "regression", "--epochs", "1", "--out", tmp_path / "x")
    assert result.exit_code == 2 and "'cheap' is not a finite number" in result.output and "column 'label'" in result.output


def test_compare_regression_ranks_lower_mae_as_better(price, tmp_path):
    out = tmp_path / "cmp"
    ok(run("compare", "unimodal", "multimodal:concat", "--task", "regression", "--metric", "mae", "--data", price,
           "--epochs", "3", "--seeds", "2", "--jobs", "1", "--out", out))
    summary = json.loads((out / "summary.json").read_text())
    uni = [r for r in summary if r["family"] == "unimodal"]
    best = min(uni, key=lambda r: r["mean"])
    assert best["is_best_unimodal"] and all(r["best_unimodal"] == best["variant"] for r in summary)
    for r in summary:
        assert r["metric"] == "mae" and r["delta_vs_best_unimodal"] == pytest.approx(r["mean"] - best["mean"])
        if r["p_value"] is not None and r["p_value"] < 0.05:
            assert r["verdict"].startswith("better" if r["delta_vs_best_unimodal"] < 0 else "worse")


def _skewed(folder: Path) -> Path:
    """Captions only: 'a red/blue circle/square/triangle'. One in six things is red, and
    40 % of the red ones are 'rare', everything else 'common'. The best unweighted guess
    for a red thing is 'common' (60 % of them are), so a model that learns the data well
    predicts no 'rare' at all; with balanced weights a 'rare' counts about 12 times as
    much as a 'common', and 'rare' wins for red things."""
    import random

    rng = random.Random(5)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "skewed.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text", "label"])
        for i in range(720):
            colour = "red" if i % 6 == 0 else "blue"
            text = f"a {colour} {['circle', 'square', 'triangle'][i % 3]}"
            writer.writerow([f"s{i}", text, "rare" if colour == "red" and rng.random() < 0.4 else "common"])
    return path


def test_class_weights_raise_the_minority_recall(tmp_path):
    data = _skewed(tmp_path / "data")
    recall = {}
    for weights in ("none", "balanced"):
        values = []
        for seed in (0, 1):
            out = tmp_path / f"{weights}-{seed}"
            ok(run("train", data, "--epochs", "12", "--seed", seed, "--out", out, "--set", f"train.class_weights={weights}"))
            # the trained model, not the epoch that validation accuracy picks (which favours 'common')
            scores = json.loads(ok(run("evaluate", out, "--weights", "last", "--json")).stdout)
            values.append(scores["per_class"]["rare"]["recall"])
        recall[weights] = sum(values) / len(values)
    # without weights a red thing is 'common' (60 % of them are); with them 'rare' wins
    assert recall["balanced"] > recall["none"] + 0.3, recall


def test_weighted_sampler_draws_classes_evenly():
    from mmcli.config import DataConfig
    from mmcli.data.dataset import Encoded, iterate
    from mmcli.heads.classification import Classification

    labels = torch.tensor([0] * 90 + [1] * 10)
    data = Encoded([str(i) for i in range(100)], {}, {}, {}, labels, {})
    weights = Classification().sample_weights(labels)
    drawn = torch.cat([b["label"] for _ in range(50) for b in
                       iterate(data, DataConfig(), 25, shuffle=True, generator=torch.Generator().manual_seed(0), weights=weights)])
    assert len(drawn) == 50 * 100
    assert 0.45 < drawn.float().mean().item() < 0.55  # half minority, although it is a tenth of the data


def test_class_weights_and_sampler_need_classes(price, tmp_path):
    for key in ("train.class_weights=balanced", "train.sampler=weighted"):
        result = run("train", price, "--task", "regression", "--epochs", "1", "--set", key, "--out", tmp_path / "x")
        assert result.exit_code == 2 and key.split("=")[0] in result.output
    result = run("train", price, "--set", "train.class_weights=sometimes", "--out", tmp_path / "x")
    assert result.exit_code == 2 and "train.class_weights" in result.output


def test_tensorboard_logger_writes_what_metrics_jsonl_has(toy_small, tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed (pip install 'mmcli[tensorboard]')")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tb"
    ok(run("train", toy_small, "--modalities", "text", "--epochs", "3", "--logger", "tensorboard", "--out", out))
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "val/accuracy", "lr"} <= tags
    history = jsonl((out / "metrics.jsonl").read_text())
    logged = [e.value for e in events.Scalars("val/accuracy")]
    assert logged == pytest.approx([h["val_accuracy"] for h in history])


@pytest.mark.skipif(not (SHARED_DATA / "coco-mini" / "annotations").is_dir(), reason="../shared/data/coco-mini is absent")
def test_coco_object_labels_as_a_real_multilabel_task(tmp_path):
    """COCO photos with two of their captions; the target is the set of object categories
    in the photo (instances JSON, as a JSON list in JSONL). Text + image must beat the
    label prior's mAP clearly."""
    root = SHARED_DATA / "coco-mini"
    (tmp_path / "coco").symlink_to(root, target_is_directory=True)  # read in place: paths stay relative
    rows = []
    for part in ("train2017", "val2017"):
        inst = json.loads((root / "annotations" / f"instances_{part}.json").read_text())
        caps = json.loads((root / "annotations" / f"captions_{part}.json").read_text())
        names = {c["id"]: c["name"] for c in inst["categories"]}
        objects: dict[int, set[str]] = {}
        for a in inst["annotations"]:
            objects.setdefault(a["image_id"], set()).add(names[a["category_id"]])
        captions: dict[int, list[str]] = {}
        for c in caps["annotations"]:
            captions.setdefault(c["image_id"], []).append(c["caption"].strip())
        for img in inst["images"]:
            if img["id"] in objects:
                for k, caption in enumerate(sorted(captions.get(img["id"], []))[:2]):
                    rows.append({"id": f"{img['id']}-{k}", "image": f"coco/{part}/{img['file_name']}", "text": caption,
                                 "label": json.dumps(sorted(objects[img["id"]])),
                                 "split": "train" if part == "train2017" else ("val" if img["id"] % 2 else "test")})
    manifest = tmp_path / "coco.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "run"
    ok(run("train", manifest, "--task", "multilabel", "--epochs", "12", "--out", out))
    scores = json.loads(ok(run("evaluate", out, "--json")).stdout)
    per = scores["per_label"]
    prior_map = sum(v["support"] for v in per.values() if v["support"]) / (
        sum(1 for v in per.values() if v["support"]) * scores["n_examples"])
    # measured: 0.106 against 0.061 (80 categories, most with one or two test photos)
    assert scores["mean_average_precision"] > 1.4 * prior_map, (scores["mean_average_precision"], prior_map)
    assert per["person"]["support"] > 0


def test_predict_csv_and_evaluate_with_a_weighing_fusion_for_every_task(tags, price, tmp_path):
    for data, task, column in ((tags, "multilabel", "labels"), (price, "regression", "value")):
        out = tmp_path / task
        ok(run("train", data, "--task", task, "--epochs", "1", "--fusion", "attention", "--out", out))
        assert "modality_weights_per_class" not in json.loads(ok(run("evaluate", out, "--json")).stdout)
        lines = ok(run("predict", out, data, "--format", "csv")).stdout.splitlines()
        assert lines[0].split(",")[1] == column and len(lines) == 241
        bad = run("evaluate", out, "--robustness")
        if task == "regression":  # mae: lower is better, no robustness curve of it
            assert bad.exit_code == 2 and "lower-is-better" in bad.output
        else:  # the sweep scores micro-F1, the run's metric
            assert bad.exit_code == 0, bad.output
            assert json.loads((out / "robustness.json").read_text())["metric"] == "micro_f1"


def test_regression_keeps_digits_of_a_large_target():
    from mmcli.config import Config
    from mmcli.heads.regression import Regression

    task = Regression(Config(), {"mean": 1.7e9, "std": 290.0})
    targets = torch.tensor([0.0, 0.1, 0.2, 0.3])
    outputs = (targets + 0.001).unsqueeze(-1)  # off by 0.29 in the target's units
    scores = task.evaluate(outputs, targets, ["t"])
    assert scores["mae"] == pytest.approx(0.29, rel=1e-3) and scores["rmse"] == pytest.approx(0.29, rel=1e-3)
    values = [p["value"] for p in task.predict(outputs, ["t"], 1)]
    assert values[1] - values[0] == pytest.approx(29.0, abs=0.01)


def test_threshold_stays_at_half_when_nothing_is_found():
    from mmcli.heads.multilabel import MultiLabel

    logits = torch.tensor([[-5.0], [-6.0], [-4.0]])  # never above any threshold
    targets = torch.tensor([[1.0], [0.0], [1.0]])
    assert MultiLabel().after_fit(logits, targets, ["a"]) == {"thresholds": [0.5]}


def test_the_multilabel_prior_is_the_best_constant_label_set_not_no_label():
    """No label is on half the examples: each label's frequency scored at 0.5 would predict
    nothing (micro-F1 0, a baseline every model passes). The prior predicts the k most
    frequent labels, k best for the training split's micro-F1: here 2 (140 / 275)."""
    task = bare_task("multilabel")
    targets = torch.zeros(100, 3)
    targets[:40, 0] = 1  # 40 %
    targets[40:70, 1] = 1  # 30 %
    targets[:5, 2] = 1  # 5 %
    def named(metric):  # the label set the prior names for every example, scored on that metric
        outputs = task.prior_outputs(targets, 3, 100, metric)
        chosen = (torch.sigmoid(outputs) >= 0.5).tolist()
        assert all(row == chosen[0] for row in chosen)
        return chosen[0], task.evaluate(outputs, targets, ["a", "b", "c"])

    chosen, scores = named("micro_f1")
    assert chosen == [True, True, False]
    assert scores["micro_f1"] == pytest.approx(2 * 70 / (2 * 100 + 75))  # k=1 gives 80 / 175, k=3 150 / 375
    chosen, scores = named("subset_accuracy")
    assert chosen == [True, False, False] and scores["subset_accuracy"] == pytest.approx(0.35)  # 35 rows are {a}
    chosen, scores = named("macro_f1")
    assert chosen == [True, True, True]  # each label on: its F1 2p / (1 + p) beats 0
    rates, scores = named("loss")
    assert rates == [False, False, False]  # the frequencies themselves: the lowest constant cross-entropy
    assert torch.sigmoid(task.prior_outputs(targets, 3, 1, "loss"))[0].tolist() == pytest.approx([0.40, 0.30, 0.05])
    assert (task.prior_outputs(torch.zeros(10, 3), 3, 4, "micro_f1").sigmoid() < 0.5).all()  # no label in training
    assert (task.prior_outputs(torch.zeros(0, 3), 3, 4, "micro_f1").sigmoid() < 0.5).all()  # nor any training row


def test_labels_written_as_json_lists_also_suggest_the_multilabel_task():
    task = bare_task("classification")
    assert "use --task multilabel" in task.doubt(['["dog", "cat"]', '["dog"]', '["cat", "bird"]'])
    assert task.doubt(["dog", "cat", "bird|fish"]) is None  # one label of three holds the separator


def test_a_task_s_rules_are_part_of_a_run_s_fingerprint(monkeypatch):
    """Multi-label runs kept their epoch at 0.5 before the rule changed: a comparison must
    not reuse them as if they were trained now."""
    from mmcli.config import from_dict
    from mmcli.heads.multilabel import MultiLabel
    from mmcli.training.api import fingerprint

    config = from_dict({"model": {"task": "multilabel"}})
    now = fingerprint(config, "data")
    monkeypatch.setattr(MultiLabel, "rules", None)
    assert fingerprint(config, "data") != now


def test_a_multilabel_epoch_is_scored_with_the_thresholds_it_would_be_kept_with():
    """Probabilities that rank every label right but stay below 0.5 predict nothing at 0.5;
    validation scores an epoch with the thresholds after_fit would choose on those rows,
    so such an epoch is not taken for one that learnt nothing. The test split keeps the
    run's own thresholds (score)."""
    from types import SimpleNamespace

    task = bare_task("multilabel")
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
    probs = 0.1 + 0.3 * targets  # 0.4 where the label is on, 0.1 where it is off
    outputs = torch.logit(probs)
    data = SimpleNamespace(labels=targets)
    assert task.score(outputs, data, ["a", "b"])["micro_f1"] == 0.0
    assert task.validation_score(outputs, data, ["a", "b"])["micro_f1"] == pytest.approx(1.0)
    assert task.score(outputs, data, ["a", "b"])["micro_f1"] == 0.0  # scoring validation chose nothing for the run
