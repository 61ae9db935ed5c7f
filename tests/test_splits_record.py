"""The run folder records which rows were in which split (splits.json); evaluate scores
the recorded rows of the run's own data, refuses when they changed, and never scores
rows the run was trained or validated on as other data. And cross-modal translation
honours the presence mask."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch

from conftest import write_own_manifest
from mmcli.data import membership

MODALITIES = "photo"  # photos are noisy draws: no two rows have the same inputs


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def write_rows(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(run folder, pristine copy of its manifest) of a one-epoch photo run on 36 rows."""
    from typer.testing import CliRunner

    from mmcli.cli import app

    root = tmp_path_factory.mktemp("splits")
    manifest = write_own_manifest(root / "own", n=36)
    shutil.copy(manifest, root / "pristine.csv")
    run = root / "run"
    result = CliRunner().invoke(app, ["train", str(manifest), "--epochs", "1", "--modalities", MODALITIES,
                                      "--out", str(run)])
    assert result.exit_code == 0, result.output
    return run, root / "pristine.csv"


@pytest.fixture
def data(trained, tmp_path) -> tuple[Path, Path]:
    """The run, and its manifest restored to what it was at training (tests change it)."""
    run, pristine = trained
    manifest = run.parent / "own" / "data.csv"
    shutil.copy(pristine, manifest)
    return run, manifest


def recorded(run: Path) -> dict:
    return json.loads((run / "splits.json").read_text())["splits"]


def test_training_records_each_split_by_id(data):
    run, manifest = data
    splits = recorded(run)
    ids = {s: splits[s]["ids"] for s in ("train", "val", "test")}
    assert sorted(ids["train"] + ids["val"] + ids["test"]) == sorted(r["id"] for r in read_rows(manifest))
    assert len(ids["test"]) > 0 and len(splits["test"]["rows"]) == len(ids["test"])
    assert json.loads((run / "data.json").read_text())["splits"]["test"] == len(ids["test"])


def test_rows_added_after_training_do_not_move_training_rows_into_the_test_split(data, cli):
    """Five new rows change the stratified draw; evaluate still scores exactly the rows
    that training held out, and says that the data changed."""
    from mmcli.pipeline import data_for_run, load_run

    run, manifest = data
    rows = read_rows(manifest)
    extra = [dict(rows[i], id=f"new{i}") for i in range(5)]
    extra = [dict(r, photo=rows[(i + 7) % 36]["photo"]) for i, r in enumerate(extra)]
    write_rows(manifest, rows + extra)
    chosen = data_for_run(load_run(run), None, "test")
    assert chosen.table.ids == recorded(run)["test"]["ids"]
    assert not set(chosen.table.ids) & set(recorded(run)["train"]["ids"])
    result = cli("evaluate", run, "--json")
    assert result.exit_code == 0, result.output
    assert "+5 since training" in result.output and "splits.json" in result.output
    scores = json.loads(result.output.strip().splitlines()[-1])
    assert scores["n_examples"] == len(recorded(run)["test"]["ids"])
    assert any("+5 since training" in w for w in scores["warnings"])


def test_a_test_row_that_changed_is_refused(data, cli):
    run, manifest = data
    rows = read_rows(manifest)
    victim = recorded(run)["test"]["ids"][0]
    other = next(r for r in rows if r["id"] != victim)
    for r in rows:
        if r["id"] == victim:
            r["photo"] = other["photo"]  # other inputs, same id
    write_rows(manifest, rows)
    before = (run / "eval-test.json").read_bytes()
    result = cli("evaluate", run)
    assert result.exit_code == 2, result.output
    assert "changed since training" in result.output and victim in result.output
    assert (run / "eval-test.json").read_bytes() == before  # the run's score is not overwritten


def test_a_test_row_that_is_gone_is_refused(data, cli):
    run, manifest = data
    victim = recorded(run)["test"]["ids"][1]
    write_rows(manifest, [r for r in read_rows(manifest) if r["id"] != victim])
    result = cli("evaluate", run)
    assert result.exit_code == 2, result.output
    assert "no longer in it" in result.output and victim in result.output


def test_without_an_id_column_moved_rows_are_found_by_content_and_changed_ones_refused(data, cli):
    """Row numbers are the ids: a row inserted at the top shifts every row. The recorded
    test rows are found again by their content (warned); a test row whose photo changed
    is refused."""
    from mmcli.pipeline import data_for_run, load_run

    run, manifest = data
    rows = read_rows(manifest)
    rec = json.loads((run / "splits.json").read_text())  # a run trained without an id column records row numbers
    number = {r["id"]: str(i + 1) for i, r in enumerate(rows)}
    test_ids = rec["splits"]["test"]["ids"]
    for part in rec["splits"].values():
        part["ids"] = [number[i] for i in part["ids"]]
    saved = (run / "splits.json").read_text()
    try:
        (run / "splits.json").write_text(json.dumps(rec))
        shifted = [{k: v for k, v in r.items() if k != "id"} for r in [dict(rows[5], photo=rows[6]["photo"])] + rows]
        write_rows(manifest, shifted)
        result = cli("evaluate", run, "--json")
        assert result.exit_code == 0, result.output
        assert "rows moved since training" in result.output
        chosen = data_for_run(load_run(run), None, "test")
        expected = {str(int(number[i]) + 1) for i in test_ids}  # each test row, one further down
        assert set(chosen.table.ids) == expected
        victim = next(i for i, r in enumerate(rows) if r["id"] == test_ids[0])
        shifted[victim + 1]["photo"] = rows[(victim + 3) % len(rows)]["photo"]
        write_rows(manifest, shifted)
        refused = cli("evaluate", run)
        assert refused.exit_code == 2, refused.output
        assert "changed since training" in refused.output and "no row has their content" in refused.output
    finally:
        (run / "splits.json").write_text(saved)


def test_other_data_leaves_out_the_rows_the_run_was_trained_on(data, cli, tmp_path):
    """`--data` without a split column: every row but those of the run's train and val
    splits (same id, target and inputs); asking for a split of it is an error."""
    run, manifest = data
    copy = manifest.parent / "again.csv"
    shutil.copy(manifest, copy)  # the training manifest under another name, no split column
    result = cli("evaluate", run, "--data", copy, "--json")
    assert result.exit_code == 0, result.output
    scores = json.loads(result.output.strip().splitlines()[-1])
    seen = len(recorded(run)["train"]["ids"]) + len(recorded(run)["val"]["ids"])
    assert scores["left_out_seen_rows"] == seen
    assert scores["n_examples"] == len(recorded(run)["test"]["ids"]) and scores["split"] == "all"
    assert "trained or validated on" in result.output
    refused = cli("evaluate", run, "--data", copy, "--split", "test")
    assert refused.exit_code == 2 and "has no split column" in refused.output, refused.output


def test_rows_that_only_look_like_training_rows_are_scored_with_a_warning(data, cli):
    """Real data repeats itself (few distinct values, short texts): content alone does not
    make a row a training row. The same examples under other ids are scored, and counted."""
    run, manifest = data
    copy = manifest.parent / "lookalikes.csv"
    write_rows(copy, [dict(r, id=f"other-{r['id']}") for r in read_rows(manifest)])
    result = cli("evaluate", run, "--data", copy, "--json")
    assert result.exit_code == 0, result.output
    scores = json.loads(result.output.strip().splitlines()[-1])
    seen = len(recorded(run)["train"]["ids"]) + len(recorded(run)["val"]["ids"])
    assert scores["left_out_seen_rows"] == 0 and scores["n_examples"] == 36
    assert any(f"{seen} of the 36 rows scored" in w and "another id" in w for w in scores["warnings"])


def test_other_data_made_only_of_training_rows_is_refused(data, cli):
    run, manifest = data
    train = set(recorded(run)["train"]["ids"])
    copy = manifest.parent / "train-only.csv"
    write_rows(copy, [r for r in read_rows(manifest) if r["id"] in train])
    result = cli("evaluate", run, "--data", copy)
    assert result.exit_code == 2 and "nothing unseen to score" in result.output, result.output


def test_a_run_folder_without_splits_json_warns(data, cli, tmp_path):
    run, manifest = data
    old = run.parent / "old-run"  # a sibling: config.yaml's manifest is relative to the run folder
    shutil.rmtree(old, ignore_errors=True)
    shutil.copytree(run, old)
    (old / "splits.json").unlink()
    result = cli("evaluate", old)
    assert result.exit_code == 0, result.output
    assert "records no split" in result.output


@pytest.mark.parametrize("content", ['{"splits": 3}', '{"splits": {"train": {"ids": ["a"], "rows": []}}}', "[1, 2", "null"])
def test_a_damaged_splits_json_names_the_file(data, cli, tmp_path, content):
    run, _ = data
    broken = run.parent / "broken-run"
    shutil.rmtree(broken, ignore_errors=True)
    shutil.copytree(run, broken)
    (broken / "splits.json").write_text(content)
    result = cli("evaluate", broken)
    assert result.exit_code == 2, result.output
    assert "splits.json" in result.output and "internal error" not in result.output


def test_fingerprints_see_target_inputs_and_presence():
    from mmcli.config import ModalityConfig
    from mmcli.data.table import Table

    table = Table(ids=["1", "2", "3", "4"], labels=None, given_splits=None,
                  modalities={"img": ModalityConfig(column="img", kind="image"), "txt": ModalityConfig(column="t", kind="text")},
                  tensors={"img": torch.tensor([[1, 2], [1, 2], [1, 3], [1, 2]], dtype=torch.uint8)},
                  present={"img": torch.tensor([True, True, True, False]), "txt": torch.ones(4, dtype=torch.bool)},
                  texts={"txt": ["a", "a", "a", "a"]})
    prints = list(membership.fingerprints(table, ["img", "txt"], ["x", "y", "x", "x"]).values())
    assert len(set(prints)) == 4  # another target, other pixels, a missing modality: all differ
    again = list(membership.fingerprints(table, ["img", "txt"], ["x", "x", "x", "x"]).values())
    assert again[0] == again[1] and again[0] == prints[0]
    # a tabular modality's texts are lists of cells
    table.modalities["tab"] = ModalityConfig(kind="tabular", columns=["a", "b"])
    table.texts["tab"] = [["1", "x"], ["1", "x"], ["2", "x"], ["1", "y"]]
    tab = list(membership.fingerprints(table, ["tab"], None).values())
    assert list(membership.fingerprints(table, ["tab"], None, [2, 3]).values()) == tab[2:]
    assert tab[0] == tab[1] and len(set(tab)) == 3


def test_translation_without_its_source_answers_from_the_targets():
    """A translate model whose source is missing reads the targets through their
    auxiliary heads: the answer depends on the example, not the source's zeros."""
    from types import SimpleNamespace

    from mmcli.heads.translation import TranslationHead

    torch.manual_seed(0)
    head = TranslationHead("a", {"a": 4, "b": 3}, lambda d: torch.nn.Linear(d, 2), hidden=5)
    feats = {"a": SimpleNamespace(pooled=torch.zeros(3, 4)), "b": SimpleNamespace(pooled=torch.randn(3, 3))}
    full = {"a": torch.tensor([True, True, True]), "b": torch.tensor([True, True, True])}
    no_source = {"a": torch.tensor([False, True, False]), "b": torch.tensor([True, True, False])}
    clean, dropped = head(feats, full, {}), head(feats, no_source, {})
    assert torch.equal(dropped[1], clean[1])  # source present: unchanged
    assert torch.allclose(dropped[0], head.aux["b"](feats["b"].pooled[0]))
    assert torch.equal(dropped[2], torch.zeros(2))  # nothing present
    assert not torch.allclose(dropped[0], clean[0])


def test_translate_predicts_from_the_target_alone_per_example(tmp_path, cli):
    """The issue's case: predict with only the target modality gave one answer for every
    example (the source's zeros went through the translators)."""
    manifest = write_own_manifest(tmp_path / "own", n=36)
    run = tmp_path / "tr"
    result = cli("train", manifest, "--epochs", "2", "--modalities", "photo,caption", "--set", "model.crossmodal=translate",
                 "--out", run)
    assert result.exit_code == 0, result.output
    lines = "".join(json.dumps({"id": str(i), "caption": f"my {w} in the garden"}) + "\n"
                    for i, w in enumerate(["cat", "dog", "bird", "fish", "house"]))
    predicted = cli("predict", run, "-", input=lines)
    assert predicted.exit_code == 0, predicted.output
    answers = [json.loads(line) for line in predicted.output.splitlines() if line.startswith("{")]
    assert len(answers) == 5 and all(a["modalities_used"] == ["caption"] for a in answers)
    assert len({round(a["score"], 6) for a in answers}) > 1
    dropped = cli("evaluate", run, "--json", "--drop", "photo")
    assert dropped.exit_code == 0, dropped.output


def test_a_run_folder_from_an_older_mmcli_with_other_training_ranges_still_evaluates(data, cli):
    """A run's train section is only read back: values an older mmcli accepted there (a
    negative seed) do not stop it from evaluating; its data section is still checked."""
    run, _ = data
    old = run.parent / "older-run"
    shutil.rmtree(old, ignore_errors=True)
    shutil.copytree(run, old)
    config = (old / "config.yaml").read_text()
    assert "  seed: 0\n" in config
    (old / "config.yaml").write_text(config.replace("  seed: 0\n", "  seed: -1\n"))
    result = cli("evaluate", old)
    assert result.exit_code == 0, result.output
    (old / "config.yaml").write_text(config.replace("image_size: 64", "image_size: 2"))
    refused = cli("evaluate", old)
    assert refused.exit_code == 2 and "data.image_size" in refused.output, refused.output
