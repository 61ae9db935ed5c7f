"""Validation rows drawn from a split column's training rows keep the rows of one source
(a photo with several captions, one row each) together: a model selected on rows whose
photo it trained on is selected on what it memorised (COCO-mini: the image model scored
100 % on such validation rows and 25 % on the test photos, docs/results.md)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from mmcli.data.splits import assign_splits


def test_a_group_is_drawn_whole():
    labels = [f"c{i % 3}" for i in range(60)]
    given = ["train"] * 48 + ["test"] * 12
    groups = [i // 4 for i in range(60)]  # 4 rows per source
    labels = [f"c{g % 3}" for g in groups]  # a source has one label
    splits = assign_splits(labels, given, 0, 0.25, 0.0, groups=groups)
    assert splits[48:] == ["test"] * 12  # the given test rows stay
    for g in set(groups[:48]):
        assert len({splits[i] for i in range(48) if groups[i] == g}) == 1
    assert 0 < splits.count("val") < 48
    # without groups, the draw is per row, as before
    assert assign_splits(labels, given, 0, 0.25, 0.0) != splits


def test_photos_with_several_captions_never_straddle_train_and_validation(toy_small, tmp_path):
    from test_compare_engine import cli

    root = Path(toy_small).parent
    with open(toy_small, newline="") as handle:
        source = list(csv.DictReader(handle))[:60]
    rows = []
    for n, r in enumerate(source):
        for k in range(3):
            rows.append({"id": f"{r['id']}-{k}", "image": str(root / r["image"]), "caption": f"{r['text']} ({k})",
                         "label": r["label"], "split": "test" if n >= 48 else "train"})
    manifest = tmp_path / "captions.csv"
    with open(manifest, "w", newline="") as handle:
        writer = csv.DictWriter(handle, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    cli("train", manifest, "--epochs", "1", "--set", "data.val_fraction=0.25", "--out", tmp_path / "run", "--quiet")
    record = json.loads((tmp_path / "run" / "splits.json").read_text())["splits"]
    photo = {r["id"]: r["image"] for r in rows}
    train = {photo[i] for i in record["train"]["ids"]}
    val = {photo[i] for i in record["val"]["ids"]}
    assert val and train and not train & val
    assert len(record["val"]["ids"]) == 3 * len(val)  # every caption of a validation photo validates
