"""The text encoder chosen from the data (issue 19): a text modality with no encoder set gets
`bag` when its training texts are short (median at most SHORT_TEXT_TOKENS tokens) and
`transformer` otherwise; the choice is logged, saved with the run (so evaluate and predict
build the same model), part of a comparison's fingerprints, and never overrides a choice
the config makes."""

from __future__ import annotations

import json
import logging

import pytest
import yaml

from mmcli.config import Config
from mmcli.encoders.from_data import SHORT_TEXT_TOKENS, text_encoder_defaults
from mmcli.pipeline import prepare_training
from test_data import _write_rows as write_rows


def texts_data(folder, words: int, n: int = 40):
    """n rows of one text column `note` of exactly `words` distinct vocabulary words (one
    token each) and a label; a second text `tag` of one word."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        label = ["low", "high"][i % 2]
        rows.append({"id": f"r{i}", "note": " ".join([label, *(f"w{(i + k) % 30}" for k in range(words - 1))]),
                     "tag": f"t{i % 3}", "label": label})
    return write_rows(folder / "data.csv", rows)


def prepared(path, cache, **sets):
    config = Config()
    config.data.manifest = str(path)
    for key, value in sets.items():
        section, _, name = key.partition("__")
        getattr(config.model, section)[name] = value
    return config, prepare_training(config, str(cache))


@pytest.mark.parametrize("words, expected", [(1, "bag"), (SHORT_TEXT_TOKENS, "bag"),
                                             (SHORT_TEXT_TOKENS + 1, "transformer"), (40, "transformer")])
def test_the_median_token_count_chooses_the_encoder(tmp_path, words, expected, caplog):
    config, data = prepared(texts_data(tmp_path / "d", words), tmp_path / "cache")
    caplog.set_level(logging.INFO, logger="mmcli")
    chosen = text_encoder_defaults(config, data)
    assert chosen.model.encoders == {"note": expected, "tag": "bag"}
    assert config.model.encoders == {}  # the given config is left as it was
    assert any(r.getMessage().startswith(f"model.encoders.note={expected} (the training texts of 'note' have a "
                                         f"median of {words} tokens") for r in caplog.records), caplog.text


def test_a_choice_in_the_config_is_kept(tmp_path):
    path, cache = texts_data(tmp_path / "d", 3), tmp_path / "cache"
    for sets, expected in [({"encoders__note": "bigru"}, {"note": "bigru", "tag": "bag"}),
                           ({"encoders__text": "textcnn"}, {"text": "textcnn"}),
                           # options for the former default keep it: they may not be the bag's options
                           ({"encoder_options__note": {"layers": 1}}, {"tag": "bag"}),
                           ({"encoder_options__text": {"embed_dim": 32}}, {})]:
        config, data = prepared(path, cache, **sets)
        assert text_encoder_defaults(config, data).model.encoders == expected, sets


def test_only_the_training_split_and_present_texts_count(tmp_path):
    """The training rows' texts are 20 tokens, or missing in 16 of 30; the test rows' are
    3 tokens. Counting the missing texts as 0 tokens, or the test rows, would choose `bag`."""
    path = tmp_path / "d" / "data.csv"
    path.parent.mkdir()
    long, short = " ".join(f"w{k}" for k in range(20)), "w1 w2 w3"
    rows = ([{"note": "" if i < 16 else long, "split": "train"} for i in range(30)]
            + [{"note": long, "split": "val"} for _ in range(4)] + [{"note": short, "split": "test"} for _ in range(30)])
    write_rows(path, [{"id": f"r{i}", "note": r["note"], "tag": f"t{i % 3}", "label": "ab"[i % 2], "split": r["split"]}
                      for i, r in enumerate(rows)])
    config = Config()
    config.data.manifest, config.data.missing = str(path), "allow"
    data = prepare_training(config, str(tmp_path / "cache"))
    assert data.counts() == {"train": 30, "val": 4, "test": 30}
    assert text_encoder_defaults(config, data).model.encoders == {"note": "transformer", "tag": "bag"}


def test_the_choice_is_saved_and_the_run_predicts_with_it(tmp_path, cli, caplog):
    caplog.set_level(logging.INFO, logger="mmcli")
    data = texts_data(tmp_path / "d", 3)
    run = tmp_path / "run"
    result = cli("train", data, "--modalities", "note", "--epochs", "1", "--out", run, "--cache-dir", tmp_path / "cache")
    assert result.exit_code == 0, result.output
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["encoders"] == {"note": "bag"}
    assert any(r.getMessage().startswith("model.encoders.note=bag") for r in caplog.records)
    predicted = cli("predict", run, "--text", "low w1 w2")
    assert predicted.exit_code == 0, predicted.output
    assert json.loads(predicted.output.strip().splitlines()[-1])["label"] in ("low", "high")


def test_compare_fingerprints_follow_the_choice(tmp_path):
    """A comparison planned when the rule chose `bag` is not reused by one where the data
    makes it choose `transformer`, and equals one that sets `bag` itself."""
    from mmcli.training.api import data_fingerprint, planned_fingerprint

    config, data = prepared(texts_data(tmp_path / "d", 3), tmp_path / "cache")
    explicit = config.copy()
    explicit.model.encoders = {"note": "bag", "tag": "bag"}
    assert planned_fingerprint(config, data) == data_fingerprint(explicit, data)
    assert planned_fingerprint(config, data) != data_fingerprint(config, data)
    tag_only = config.copy()
    tag_only.model.modalities = ["tag"]  # the rule sets the encoders of the modalities a variant reads, no other
    explicit = tag_only.copy()
    explicit.model.encoders = {"tag": "bag"}
    assert planned_fingerprint(tag_only, data) == data_fingerprint(explicit, data)
