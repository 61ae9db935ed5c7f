"""Tests for mmcli.config: defaults, precedence, validation, --set parsing, YAML round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mmcli.config import (
    Config,
    DataConfig,
    ModalityConfig,
    apply_set,
    from_dict,
    load_yaml,
    parse_set,
    resolve,
)
from mmcli.errors import ConfigError, UsageError


def _write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- defaults


def test_defaults():
    config = from_dict({})
    assert isinstance(config, Config)
    assert config == Config()
    assert config.data.manifest is None
    assert config.data.label == "label" and config.data.id_column == "id" and config.data.split_column == "split"
    assert config.data.modalities == {}
    assert config.data.on_error == "fail"
    assert config.data.image_size == 64
    assert config.model.fusion == "concat"
    assert config.model.modalities is None
    assert config.model.task == "classification"
    assert config.train.batch_size == 64 and config.train.seed == 0
    assert config.train.epochs is None and config.train.patience is None and config.train.min_epochs is None  # derived from the data (training.setup.budget)
    assert config.model.aux_loss_weight == 1.0 and config.train.augment and not config.train.hflip
    assert config.train.trained_lr_scale == pytest.approx(0.1)
    assert config.train.lr == pytest.approx(3e-3)
    assert config.eval.split == "test" and config.eval.metric is None  # the task's own: accuracy for classification
    assert from_dict(None) == Config()
    assert resolve() == Config()


def test_default_lists_are_not_shared():
    a, b = Config(), Config()
    a.data.image_mean.append(1.0)
    assert b.data.image_mean == [0.5, 0.5, 0.5]


def test_copy_is_independent():
    config = from_dict({"train": {"epochs": 3}})
    dup = config.copy()
    assert dup == config and dup is not config
    dup.train.epochs = 9
    assert config.train.epochs == 3


# --------------------------------------------------------------------------- precedence


def test_file_values_override_defaults(tmp_path):
    path = _write(tmp_path, "train:\n  epochs: 7\nmodel:\n  fusion: sum\n")
    config = resolve(path)
    assert config.train.epochs == 7
    assert config.model.fusion == "sum"
    assert config.train.batch_size == 64  # untouched keys keep their defaults


def test_precedence_file_then_flags_then_set(tmp_path):
    path = _write(tmp_path, "train:\n  epochs: 7\n  batch_size: 16\n  lr: 0.5\n  seed: 4\n")
    flags = {"train.epochs": 8, "train.batch_size": 32, "train.seed": None}
    sets = ["train.epochs=9"]
    config = resolve(path, flags, sets)
    assert config.train.epochs == 9  # file < flag < --set
    assert config.train.batch_size == 32  # file < flag
    assert config.train.lr == 0.5  # file only
    assert config.train.seed == 4  # a None flag is skipped, the file's value stays


def test_base_is_below_file_and_not_mutated(tmp_path):
    base = {"train": {"epochs": 2, "batch_size": 8}}
    path = _write(tmp_path, "train:\n  epochs: 5\n")
    config = resolve(path, base=base)
    assert config.train.epochs == 5 and config.train.batch_size == 8
    assert base == {"train": {"epochs": 2, "batch_size": 8}}


def test_later_set_wins():
    config = resolve(sets=["train.epochs=2", "train.epochs=3"])
    assert config.train.epochs == 3


def test_set_reaches_nested_dicts():
    config = resolve(sets=["model.encoders.text=textcnn", "model.fusion_options.weights=[1, 0, 2]"])
    assert config.model.encoders == {"text": "textcnn"}
    assert config.model.fusion_options == {"weights": [1, 0, 2]}


# --------------------------------------------------------------------------- unknown keys and types


def test_unknown_top_level_key_is_named():
    with pytest.raises(ConfigError, match="'training'"):
        from_dict({"training": {"epochs": 3}})


def test_unknown_section_key_is_named_with_its_section():
    with pytest.raises(ConfigError) as info:
        from_dict({"train": {"epoch": 3}})
    assert "train.epoch" in str(info.value)
    assert "epochs" in str(info.value)  # the known keys are listed


def test_unknown_key_from_file_and_set(tmp_path):
    path = _write(tmp_path, "data:\n  labels: y\n")
    with pytest.raises(ConfigError, match=r"data\.labels"):
        resolve(path)
    with pytest.raises(ConfigError, match=r"model\.fuse"):
        resolve(sets=["model.fuse=sum"])


def test_config_error_is_a_usage_error():
    assert issubclass(ConfigError, UsageError)
    assert ConfigError.exit_code == 2


@pytest.mark.parametrize("section, key, value", [
    ("train", "epochs", "3"),  # string for int
    ("train", "epochs", True),  # bool for int
    ("train", "epochs", 2.5),  # float for int
    ("train", "lr", "fast"),  # string for float
    ("train", "lr", True),  # bool for float
    ("train", "deterministic", 1),  # int for bool
    ("train", "device", 0),  # int for str
    ("data", "image_mean", 0.5),  # scalar for list
    ("data", "image_mean", [0.5, "x", 0.5]),  # wrong item type, reported by index
    ("model", "encoders", ["cnn"]),  # list for dict
    ("data", "modalities", {"photo": "image"}),  # string for a ModalityConfig mapping
])
def test_wrong_types_raise_naming_the_key(section, key, value):
    with pytest.raises(ConfigError) as info:
        from_dict({section: {key: value}})
    assert f"{section}.{key}" in str(info.value)


def test_section_must_be_a_mapping():
    with pytest.raises(ConfigError, match="train"):
        from_dict({"train": 5})


def test_int_is_accepted_for_float():
    config = from_dict({"train": {"lr": 1, "grad_clip": 2}, "data": {"image_mean": [0, 1, 0]}})
    assert config.train.lr == 1.0 and isinstance(config.train.lr, float)
    assert isinstance(config.train.grad_clip, float)
    assert config.data.image_mean == [0.0, 1.0, 0.0]
    assert all(isinstance(v, float) for v in config.data.image_mean)


def test_optional_keys_accept_none_and_values():
    config = from_dict({"data": {"split_seed": None, "manifest": "x.csv"}, "model": {"modalities": ["image"]}})
    assert config.data.split_seed is None and config.data.manifest == "x.csv"
    assert config.model.modalities == ["image"]
    assert from_dict({"data": {"split_seed": 3}}).data.split_seed == 3
    with pytest.raises(ConfigError, match="data.split_seed"):
        from_dict({"data": {"split_seed": "three"}})


@pytest.mark.parametrize("values, key", [
    ({"data": {"on_error": "ignore"}}, "data.on_error"),
    ({"data": {"test_fraction": 1.0}}, "data.test_fraction"),
    ({"data": {"val_fraction": -0.1}}, "data.val_fraction"),
    ({"train": {"epochs": 0}}, "train.epochs"),
    ({"train": {"batch_size": 0}}, "train.batch_size"),
    ({"train": {"lr": 0}}, "train.lr"),
])
def test_cross_key_validation(values, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        from_dict(values)


# --------------------------------------------------------------------------- modalities


def test_declared_modalities_become_dataclasses():
    config = from_dict({"data": {"modalities": {"photo": {"column": "pic", "kind": "image"},
                                                "words": {"column": "caption", "kind": "text"}}}})
    assert config.data.modalities == {"photo": ModalityConfig("pic", "image"),
                                      "words": ModalityConfig("caption", "text")}


def test_modality_with_unknown_kind_raises():
    with pytest.raises(ConfigError) as info:
        from_dict({"data": {"modalities": {"clip": {"column": "v", "kind": "smell"}}}})
    message = str(info.value)
    assert "data.modalities.clip.kind" in message and "smell" in message


def test_modality_with_unknown_or_missing_field_raises():
    with pytest.raises(ConfigError, match=r"data\.modalities\.clip\.path"):
        from_dict({"data": {"modalities": {"clip": {"column": "v", "kind": "audio", "path": "x"}}}})
    with pytest.raises(ConfigError, match="data.modalities.clip"):
        from_dict({"data": {"modalities": {"clip": {"column": "v"}}}})


# --------------------------------------------------------------------------- parse_set


@pytest.mark.parametrize("expr", ["noequals", "nosection=1", ".epochs=1", "train.=1", "train..epochs=1", "=1"])
def test_parse_set_rejects_malformed(expr):
    with pytest.raises(ConfigError):
        parse_set(expr)


@pytest.mark.parametrize("expr, parts, value", [
    ("train.epochs=3", ["train", "epochs"], 3),
    ("train.lr=0.01", ["train", "lr"], 0.01),
    ("train.deterministic=true", ["train", "deterministic"], True),
    ("train.deterministic=false", ["train", "deterministic"], False),
    ("model.modalities=[image, text]", ["model", "modalities"], ["image", "text"]),
    ("data.image_mean=[0.1, 0.2, 0.3]", ["data", "image_mean"], [0.1, 0.2, 0.3]),
    ("data.split_seed=null", ["data", "split_seed"], None),
    ("data.label=class", ["data", "label"], "class"),
    ("data.label=", ["data", "label"], ""),
    ("data.label=a=b", ["data", "label"], "a=b"),  # only the first '=' splits
    (" train.epochs =4", ["train", "epochs"], 4),
    ("model.encoder_options.text.hidden=32", ["model", "encoder_options", "text", "hidden"], 32),
])
def test_parse_set_reads_yaml_values(expr, parts, value):
    got_parts, got_value = parse_set(expr)
    assert got_parts == parts
    assert got_value == value
    assert type(got_value) is type(value)


def test_parse_set_unreadable_yaml_raises():
    with pytest.raises(ConfigError, match="train.epochs"):
        parse_set("train.epochs=[1, 2")


def test_scientific_notation_is_a_float(tmp_path):
    assert resolve(sets=["train.lr=1e-3"]).train.lr == pytest.approx(1e-3)
    assert resolve(_write(tmp_path, "train:\n  lr: 5e-4\n")).train.lr == pytest.approx(5e-4)


def test_apply_set_through_a_non_section_raises():
    values = {"train": 5}
    with pytest.raises(ConfigError, match="train"):
        apply_set(values, ["train", "epochs"], 3)


# --------------------------------------------------------------------------- YAML files


def test_load_yaml_errors(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_yaml(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml(_write(tmp_path, "train: [1, 2\n", "bad.yaml"))
    with pytest.raises(ConfigError, match="mapping"):
        load_yaml(_write(tmp_path, "- 1\n- 2\n", "list.yaml"))
    assert load_yaml(_write(tmp_path, "", "empty.yaml")) == {}


def test_resolved_config_round_trips_through_yaml(tmp_path):
    path = _write(tmp_path, (
        "data:\n"
        "  manifest: data/manifest.csv\n"
        "  modalities:\n"
        "    photo: {column: pic, kind: image}\n"
        "    words: {column: caption, kind: text}\n"
        "  split_seed: 5\n"
        "  image_mean: [0.4, 0.5, 0.6]\n"
        "model:\n"
        "  modalities: [photo, words]\n"
        "  encoders: {words: textcnn}\n"
        "  encoder_options: {photo: {width: 8}}\n"
        "  fusion: weighted\n"
        "  fusion_options: {weights: [1, 2]}\n"
    ))
    config = resolve(path, {"train.epochs": 4}, ["train.lr=0.00001", "train.deterministic=true"])
    text = config.to_yaml()
    loaded = yaml.safe_load(text)
    assert loaded == config.to_dict()
    again = from_dict(loaded)
    assert again == config
    assert again.to_yaml() == text
    assert again.train.lr == pytest.approx(1e-5) and isinstance(again.train.lr, float)
    assert again.data.modalities["photo"] == ModalityConfig("pic", "image")
    # the saved form is readable as a config file too
    saved = _write(tmp_path, text, "resolved.yaml")
    assert resolve(saved) == config


def test_default_config_round_trips():
    config = Config()
    assert from_dict(yaml.safe_load(config.to_yaml())) == config
    assert isinstance(from_dict({}).data, DataConfig)
