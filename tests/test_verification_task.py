"""The verification task (issue 22): identity-disjoint splits, trials, the margin losses,
the run's threshold, and a real training on faces whose test people were never seen."""

from __future__ import annotations

import csv
import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import SHARED_DATA
from mmcli.data.splits import identity_splits
from mmcli.errors import DataError
from mmcli.evaluation.verification import draw_trials, gallery_split
from mmcli.heads.verification import Verification, batch_hard_triplet, margin_logits

ORL = SHARED_DATA / "orl-faces"


def _people(n_people: int, per: int) -> list[str]:
    return [f"p{k}" for k in range(n_people) for _ in range(per)]


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_identity_splits_never_share_an_identity(seed):
    ids = _people(40, 10)
    splits = identity_splits(ids, None, seed, 0.1, 0.2)
    by_split = {s: {v for v, t in zip(ids, splits) if t == s} for s in ("train", "val", "test")}
    assert not by_split["train"] & by_split["test"] and not by_split["train"] & by_split["val"]
    assert not by_split["val"] & by_split["test"]
    assert (len(by_split["test"]), len(by_split["val"]), len(by_split["train"])) == (8, 4, 28)
    assert identity_splits(ids, None, seed, 0.1, 0.2) == splits  # the seed decides
    assert identity_splits(ids, None, seed + 100, 0.1, 0.2) != splits


def test_identity_splits_keep_two_test_identities_of_few():
    splits = identity_splits(_people(6, 5), None, 0, 0.1, 0.1)
    assert Counter(splits) == {"train": 10, "test": 10, "val": 10}  # 2 people each: a validation EER needs two
    with pytest.raises(DataError, match="5 identities cannot be split"):
        identity_splits(_people(5, 5), None, 0, 0.1, 0.1)


def test_a_split_column_that_shares_an_identity_is_refused_naming_the_row():
    ids = ["a", "a", "b", "b", "c", "c"]
    given = ["train", "train", "train", "test", "test", "test"]
    with pytest.raises(DataError) as caught:
        identity_splits(ids, given, 0, 0.0, 0.2, "faces.csv", "person")
    assert [(r.row, r.column) for r in caught.value.rows] == [(4, "person")]
    assert "identity 'b'" in caught.value.rows[0].reason
    with pytest.raises(DataError) as caught:  # validation and test sharing one: chosen on the test identity
        identity_splits(["a", "a", "b", "b", "c", "c"], ["train", "train", "val", "val", "val", "test"], 0, 0.0, 0.2)
    assert [r.row for r in caught.value.rows] == [6] and "'c' is in the test split and also in the val split" in caught.value.rows[0].reason


def test_validation_identities_are_drawn_from_a_split_columns_training_ones():
    ids = _people(12, 3)
    given = ["test" if v in ("p0", "p1") else "train" for v in ids]
    splits = identity_splits(ids, given, 3, 0.1, 0.2)
    val = {v for v, s in zip(ids, splits) if s == "val"}
    train = {v for v, s in zip(ids, splits) if s == "train"}
    assert len(val) == 2 and not val & train and val.isdisjoint({"p0", "p1"})
    assert [s for s in splits if s == "test"] == ["test"] * 6


def test_trials_are_balanced_unique_and_true():
    ids = _people(8, 10)
    a, b, same = draw_trials(ids, 2000, seed=0)
    assert same.sum() == 360 and (~same).sum() == 1640  # every one of the 8 x 45 same pairs, the rest different
    assert all(ids[i] == ids[j] for i, j, s in zip(a, b, same) if s) and all(ids[i] != ids[j] for i, j, s in zip(a, b, same) if not s)
    assert len(set(zip(a.tolist(), b.tolist()))) == len(a) and (a < b).all()
    a2, b2, _ = draw_trials(ids, 2000, seed=0)
    assert (a2 == a).all() and (b2 == b).all()
    a3, _, s3 = draw_trials(ids, 100, seed=1)
    assert s3.sum() == 50 and len(a3) == 100
    a4, b4, s4 = draw_trials(ids, 360 + 2800 - 2, seed=2)  # all 2,800 different pairs but two: listed, then chosen
    assert (~s4).sum() == 2800 - 2 and len(set(zip(a4[~s4].tolist(), b4[~s4].tolist()))) == 2800 - 2


def test_gallery_enrols_one_example_per_identity():
    ids = ["x", "x", "y", "y", "y", "z"]
    gallery, probes = gallery_split(ids, seed=0)
    assert sorted(ids[i] for i in gallery) == ["x", "y", "z"]
    assert sorted(gallery + probes) == list(range(6))


def test_arcface_and_cosface_logits_by_hand():
    cosine = torch.tensor([[0.5, 0.2], [0.1, -0.95]])
    target = torch.tensor([0, 1])
    arc = margin_logits(cosine, target, "arcface", 0.5, 10.0)
    assert arc[0, 0].item() == pytest.approx(10 * math.cos(math.acos(0.5) + 0.5), abs=1e-5)
    assert arc[0, 1].item() == pytest.approx(2.0) and arc[1, 0].item() == pytest.approx(1.0)  # others unchanged
    # theta + m past pi: the fallback cos - m sin(m) keeps the logit falling
    assert arc[1, 1].item() == pytest.approx(10 * (-0.95 - math.sin(math.pi - 0.5) * 0.5), abs=1e-5)
    cos = margin_logits(cosine, target, "cosface", 0.35, 10.0)
    assert cos[0, 0].item() == pytest.approx(1.5) and cos[1, 1].item() == pytest.approx(-13.0)


def test_batch_hard_triplet_by_hand():
    unit = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-1.0, 0.0]]), dim=1)
    target = torch.tensor([0, 0, 1, 2])
    # anchor 0: hardest positive d=1-0.8=0.2, hardest negative d=1-0=1.0; anchor 1: positive 0.2, negative 1-0.6=0.4
    expected = (max(0, 0.2 - 1.0 + 0.5) + max(0, 0.2 - 0.4 + 0.5)) / 2
    assert batch_hard_triplet(unit, target, 0.5).item() == pytest.approx(expected, abs=1e-6)


def test_unseen_identities_encode_as_distinct_negatives():
    task = Verification()
    codes = task.encode(["b", "new1", "a", "new2", "new1"], ["a", "b"]).tolist()
    assert codes[0] == 1 and codes[2] == 0 and codes[1] == codes[4] < 0 and codes[3] < 0 and codes[1] != codes[3]


def test_the_ensemble_scores_the_mean_of_its_members_cosines():
    task = Verification()
    torch.manual_seed(0)
    members = [torch.cat([torch.nn.functional.normalize(torch.randn(5, 128), dim=1), torch.randn(5, 3)], dim=1)
               for _ in range(2)]
    fused = task.embeddings(task.average(members), ["a", "b", "c"])
    one = [task.embeddings(m, ["a", "b", "c"]) for m in members]
    assert torch.allclose(fused[0] @ fused[1], (one[0][0] @ one[0][1] + one[1][0] @ one[1][1]) / 2, atol=1e-6)
    weighted = task.embeddings(task.average(members, [0.2, 0.8]), ["a", "b", "c"])  # compare's weights
    assert torch.allclose(weighted[0] @ weighted[1], 0.2 * one[0][0] @ one[0][1] + 0.8 * one[1][0] @ one[1][1], atol=1e-6)


def test_perfect_embeddings_score_perfectly():
    task = Verification()
    ids = torch.tensor([-1, -1, -2, -2, -3, -3])
    emb = torch.nn.functional.one_hot((-ids - 1), 128).float()
    scores = task.evaluate(torch.cat([emb, torch.zeros(6, 2)], dim=1), ids, ["a", "b"])
    assert scores["eer"] == 0.0 and scores["roc_auc"] == 1.0 and scores["rank1"] == 1.0 and scores["n_trials"] == 15


@pytest.fixture(scope="module")
def orl_run(tmp_path_factory):
    if not (ORL / "manifest.csv").exists():
        pytest.skip(f"{ORL} is absent (the ORL faces of ../shared/data)")
    from typer.testing import CliRunner

    from mmcli.cli import app

    root = tmp_path_factory.mktemp("orl")
    with open(ORL / "manifest.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    manifest = root / "faces.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "image", "person"])
        for k, r in enumerate(rows):
            writer.writerow([f"{r['person']}-{k}", str(ORL / r["image"]), r["person"]])
    run = root / "run"
    result = CliRunner().invoke(app, ["train", str(manifest), "--task", "verification", "--set", "data.label=person",
                                      "--epochs", "6", "--seed", "0", "--out", str(run), "-q"])
    assert result.exit_code == 0, result.output
    return run, manifest


def test_faces_of_people_never_trained_on_are_verified(orl_run):
    run, _ = orl_run
    splits = json.loads((run / "splits.json").read_text())["splits"]
    people = {s: {i.split("-")[0] for i in splits[s]["ids"]} for s in ("train", "val", "test")}
    assert people["test"] and not people["test"] & people["train"] and not people["val"] & people["train"]
    scores = json.loads((run / "eval-test.json").read_text())
    assert scores["n_identities"] == len(people["test"]) == 8
    assert scores["eer"] < 0.3 and scores["roc_auc"] > 0.8  # chance: 0.5 and 0.5
    target = json.loads((run / "target.json").read_text())
    assert -1 <= target["threshold"] <= 1 and scores["threshold"] == target["threshold"]
    assert 0 <= scores["far"] <= 1 and 0 <= scores["frr"] <= 1


def _test_people(run: Path) -> list[str]:
    splits = json.loads((run / "splits.json").read_text())["splits"]
    return sorted({i.split("-")[0] for i in splits["test"]["ids"]})


def _photo(person: str, k: int) -> str:
    return str(ORL / "att_faces" / person / f"{k}.pgm")


def test_predict_verify_scores_the_same_person_above_two_people(orl_run, cli):
    run, _ = orl_run
    a, b = _test_people(run)[:2]
    same = cli("predict", run, "--verify", _photo(a, 1), _photo(a, 6))
    other = cli("predict", run, "--verify", _photo(a, 1), _photo(b, 6))
    assert same.exit_code == 0 and other.exit_code == 0, same.output + other.output
    same_answer, other_answer = json.loads(same.stdout), json.loads(other.stdout)
    assert same_answer["score"] > other_answer["score"]
    threshold = json.loads((run / "target.json").read_text())["threshold"]
    assert same_answer["same"] == (same_answer["score"] >= threshold) and same_answer["threshold"] == threshold
    assert same_answer["modalities_used"] == {"a": ["image"], "b": ["image"]}


def test_enroll_then_identify_people_never_trained_on(orl_run, cli, tmp_path):
    run, _ = orl_run
    people = _test_people(run)
    for name, photos in (("enroll.csv", range(1, 6)), ("probe.csv", range(6, 11))):
        with open(tmp_path / name, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["image", "person"])
            writer.writerows([_photo(p, k), p] for p in people for k in photos)
    gallery = tmp_path / "people.npz"
    enrolled = cli("predict", run, "--enroll", tmp_path / "enroll.csv", "--gallery", gallery)
    assert enrolled.exit_code == 0, enrolled.output
    assert json.loads(enrolled.stdout) == {"gallery": str(gallery), "examples": 40, "identities": 8}
    found = cli("predict", run, "--identify", tmp_path / "probe.csv", "--gallery", gallery, "-k", "3")
    assert found.exit_code == 0, found.output
    answers = [json.loads(line) for line in found.stdout.splitlines()]
    truth = [p for p in people for _ in range(5)]
    correct = sum(a["identity"] == t for a, t in zip(answers, truth)) / len(answers)
    assert len(answers) == 40 and correct >= 0.5  # chance: 1/8
    assert all(len(a["candidates"]) == 3 and a["candidates"][0]["score"] >= a["candidates"][2]["score"] for a in answers)


def test_identity_modes_refuse_what_they_cannot_do(orl_run, cli, tmp_path):
    run, _ = orl_run
    missing = cli("predict", run, "--identify", _photo("s1", 1), "--gallery", tmp_path / "none.npz")
    assert missing.exit_code == 2 and "no gallery" in missing.output
    precious = tmp_path / "precious.npz"
    precious.write_bytes(b"the user's own file")
    refused = cli("predict", run, "--enroll", ORL / "manifest.csv", "--gallery", precious)
    assert refused.exit_code == 2 and "not an mmcli gallery" in refused.output
    assert precious.read_bytes() == b"the user's own file"
    both = cli("predict", run, "--verify", _photo("s1", 1), _photo("s1", 2), "--embed")
    assert both.exit_code == 2 and "one mode at a time" in both.output
    csv_asked = cli("predict", run, "--identify", _photo("s1", 1), "--format", "csv")
    assert csv_asked.exit_code == 2 and "--format csv" in csv_asked.output
    for junk in (b"", b"not numpy at all", b"\x93NUMPY"):
        precious.write_bytes(junk)
        found = cli("predict", run, "--identify", _photo("s1", 1), "--gallery", precious)
        assert found.exit_code == 2 and "not an mmcli gallery" in found.output, found.output


def test_a_trials_file_of_every_pair_scores_as_the_drawn_trials(orl_run, cli, tmp_path):
    run, _ = orl_run
    ids = json.loads((run / "splits.json").read_text())["splits"]["test"]["ids"]
    trials = tmp_path / "trials.csv"
    with open(trials, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["a", "b", "same"])
        writer.writerows([a, b, "same" if a.split("-")[0] == b.split("-")[0] else "different"]
                         for k, a in enumerate(ids) for b in ids[k + 1:])
    result = cli("evaluate", run, "--trials", trials, "--json")
    assert result.exit_code == 0, result.output
    own = json.loads(result.stdout.splitlines()[-1])
    drawn = json.loads((run / "eval-test.json").read_text())  # 80 faces: 3,160 pairs, fewer than `trials`: all drawn
    assert own["n_trials"] == drawn["n_trials"] == 3160
    assert own["eer"] == pytest.approx(drawn["eer"]) and own["tar_at_far_1e-2"] == pytest.approx(drawn["tar_at_far_1e-2"])


def test_bad_trials_are_named_by_row_and_column(orl_run, cli, tmp_path):
    run, _ = orl_run
    ids = json.loads((run / "splits.json").read_text())["splits"]["test"]["ids"]
    bad = tmp_path / "bad.csv"
    bad.write_text(f"a,b,same\n{ids[0]},{ids[1]},maybe\n", encoding="utf-8")
    result = cli("evaluate", run, "--trials", bad)
    assert result.exit_code == 2 and "row 1, column 'same'" in result.output
    bad.write_text(f"a,b,same\n{ids[0]},nobody,0\n", encoding="utf-8")
    result = cli("evaluate", run, "--trials", bad)
    assert result.exit_code == 2 and "row 1, column 'b'" in result.output and "'nobody'" in result.output
    bad.write_text(f"a,b,same\n{ids[0]},{ids[1]},1\n", encoding="utf-8")
    result = cli("evaluate", run, "--trials", bad)
    assert result.exit_code == 2 and "every trial is same-identity" in result.output


def test_the_python_api_verifies_enrols_and_identifies(orl_run, tmp_path):
    import mmcli

    run, _ = orl_run
    people = _test_people(run)
    predictor = mmcli.load(run)
    same = predictor.verify(_photo(people[0], 1), {"image": _photo(people[0], 2)})
    other = predictor.verify(Path(_photo(people[0], 1)), _photo(people[1], 2))
    assert same["score"] > other["score"] and isinstance(same["same"], bool)
    manifest = tmp_path / "gallery.csv"
    manifest.write_text("image,person\n" + "".join(f"{_photo(p, k)},{p}\n" for p in people for k in (1, 2, 3)),
                        encoding="utf-8")
    assert predictor.enroll(manifest, tmp_path / "g.npz")["identities"] == len(people)
    found = predictor.identify({"image": _photo(people[2], 9)}, tmp_path / "g.npz", top_k=2)
    assert len(found) == 1 and len(found[0]["candidates"]) == 2
    with pytest.raises(mmcli.errors.UsageError, match="no gallery"):
        predictor.identify(_photo(people[2], 9))  # RUN/gallery.npz was never made


def test_serve_verifies_two_examples_as_predict_does(orl_run):
    pytest.importorskip("fastapi")
    import base64

    import mmcli
    from mmcli.serve import Settings
    from test_serve import call, served_in_a_thread

    run, _ = orl_run
    a, b = _test_people(run)[:2]
    want = mmcli.load(run).verify(_photo(a, 1), _photo(b, 3))
    photo = {"base64": base64.b64encode(Path(_photo(b, 3)).read_bytes()).decode(), "suffix": ".pgm"}
    with served_in_a_thread(Settings(str(run))) as base:
        status, got = call(base, "/verify", {"a": {"image": _photo(a, 1)}, "b": {"image": photo}})
        assert status == 200 and got["score"] == pytest.approx(want["score"], abs=1e-5) and got["same"] == want["same"]
        status, info = call(base, "/info")
        assert "POST /verify" in info["routes"]
        status, bad = call(base, "/verify", {"a": {"image": _photo(a, 1)}})
        assert status == 400 and '"b"' in bad["error"]


def test_the_robustness_sweep_of_a_verifier_draws_roc_auc(orl_run, cli):
    run, _ = orl_run
    result = cli("evaluate", run, "--robustness", "--json")
    assert result.exit_code == 0, result.output
    sweep = json.loads(result.stdout.splitlines()[-1])
    drawn = json.loads((run / "eval-test.json").read_text())
    assert sweep["metric"] == "roc_auc" and sweep["clean"] == pytest.approx(drawn["roc_auc"])
    noise = sweep["curves"]["image"]["gaussian_noise"]
    assert noise[-1] < noise[0]  # faces drowned in noise verify worse
