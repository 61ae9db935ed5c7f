"""Hostile config files and values, damaged run folders and caches (issue 23, items 8, 10
and 11), through the real CLI. Each case is one input and its outcome: exit 2 with a
message that names the config key and its allowed range, or the damaged file; quickly;
never a traceback, "internal error" or a hang. The valid cases exit 0."""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import time
from pathlib import Path
from typing import Callable

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from conftest import write_own_manifest
from mmcli.cli import app

RUNNER = CliRunner()


def check(result, code: int, needles: list[str], name: str = "") -> None:
    output = result.output
    assert result.exit_code == code, f"{name}: exit {result.exit_code}\n{output}\n{result.exception!r}"
    assert "Traceback" not in output and "internal error" not in output, output
    for needle in needles:
        assert needle in output, f"{name}: {needle!r} not in\n{output}"


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A user's data (12 rows), and a run trained on it for one epoch."""
    folder = tmp_path_factory.mktemp("hostile")
    manifest = write_own_manifest(folder / "own", n=12)
    result = RUNNER.invoke(app, ["train", str(manifest), "--epochs", "1", "--out", str(folder / "run"), "--quiet"])
    assert result.exit_code == 0, result.output
    return folder


# --- 11. config values: every numeric key has a range, checked before any work -----------

def S(*exprs: str) -> list[str]:
    return [a for e in exprs for a in ("--set", e)]


VALUES = [
    ("lr_nan", S("train.lr=.nan"), ["train.lr", "(0, 10]"]),
    ("lr_infinite", S("train.lr=.inf"), ["train.lr", "(0, 10]"]),
    ("lr_zero", S("train.lr=0"), ["train.lr", "(0, 10]"]),
    ("lr_flag_nan", ["--lr", "nan"], ["train.lr", "(0, 10]"]),
    ("seed_above_2_63", S("train.seed=9223372036854775808"), ["train.seed", "0..9223372036854775807"]),
    ("seed_flag_above_2_64", ["--seed", "99999999999999999999"], ["train.seed", "0..9223372036854775807"]),
    ("seed_negative", S("train.seed=-1"), ["train.seed", "0..9223372036854775807"]),
    ("split_seed_above_2_63", S("data.split_seed=18446744073709551616"), ["data.split_seed", "0..9223372036854775807"]),
    ("image_size_below_the_encoder", S("data.image_size=2"), ["data.image_size", "4..1024"]),
    ("image_size_huge", S("data.image_size=100000"), ["data.image_size", "4..1024"]),
    ("image_batch_beyond_memory", S("data.image_size=1024", "train.batch_size=4096"), ["train.batch_size", "GiB", "at most 170"]),
    ("eval_image_batch_beyond_memory", S("data.image_size=1024"), ["eval.batch_size", "GiB"]),
    ("audio_batch_beyond_memory", S("data.max_seconds=3600", "data.hop_length=1"), ["train.batch_size", "GiB", "data.n_mels"]),
    ("image_mean_empty", S("data.image_mean=[]"), ["data.image_mean", "a list of 3 numbers"]),
    ("image_mean_four_items", S("data.image_mean=[0.5, 0.5, 0.5, 0.5]"), ["data.image_mean", "a list of 3 numbers"]),
    ("image_mean_not_numbers", S("data.image_mean=[a, b, c]"), ["data.image_mean[0]"]),
    ("image_std_with_a_zero", S("data.image_std=[0.25, 0, 0.25]"), ["data.image_std", "[0.001, 10]"]),
    ("image_std_nan", S("data.image_std=[.nan, 0.25, 0.25]"), ["data.image_std", "[0.001, 10]"]),
    ("text_max_len_1e8", S("data.text_max_len=100000000"), ["data.text_max_len", "1..16384"]),
    ("text_max_len_float", S("data.text_max_len=1e8"), ["data.text_max_len", "integer"]),
    ("vocab_size_two", S("data.vocab_size=2"), ["data.vocab_size", "3..1000000"]),
    ("weight_decay_negative", S("train.weight_decay=-0.1"), ["train.weight_decay", "[0, 10]"]),
    ("warmup_epochs_negative", S("train.warmup_epochs=-1"), ["train.warmup_epochs", "[0, 100000]"]),
    ("patience_negative", S("train.patience=-1"), ["train.patience", "0..100000"]),
    ("fractions_sum_to_one", S("data.val_fraction=0.5", "data.test_fraction=0.5"), ["data.val_fraction", "data.test_fraction", "below 1"]),
    ("val_fraction_one", S("data.val_fraction=1"), ["data.val_fraction", "[0, 1)"]),
    ("test_fraction_negative", S("data.test_fraction=-0.2"), ["data.test_fraction", "[0, 1)"]),
    ("epochs_zero", S("train.epochs=0"), ["train.epochs", "1..100000"]),
    ("epochs_ten_billion", S("train.epochs=10000000000"), ["train.epochs", "1..100000"]),
    ("batch_size_zero", S("train.batch_size=0"), ["train.batch_size", "1..65536"]),
    ("eval_batch_size_zero", S("eval.batch_size=0"), ["eval.batch_size", "1..65536"]),
    ("dropout_one", S("model.dropout=1"), ["model.dropout", "[0, 1)"]),
    ("modality_dropout_negative", S("model.modality_dropout=-0.5"), ["model.modality_dropout", "[0, 1)"]),
    ("feature_dim_zero", S("model.feature_dim=0"), ["model.feature_dim", "1..4096"]),
    ("hidden_dim_a_billion", S("model.hidden_dim=1000000000"), ["model.hidden_dim", "1..4096"]),
    ("aux_loss_weight_negative", S("model.aux_loss_weight=-1"), ["model.aux_loss_weight", "[0, 1000]"]),
    ("translate_weight_infinite", S("model.translate_weight=.inf"), ["model.translate_weight", "[0, 1000]"]),
    ("sample_rate_ten_hz", S("data.sample_rate=10"), ["data.sample_rate", "1000..384000"]),
    ("n_mels_zero", S("data.n_mels=0"), ["data.n_mels", "1..512"]),
    ("n_fft_a_million", S("data.n_fft=1000000"), ["data.n_fft", "8..16384"]),
    ("hop_length_zero", S("data.hop_length=0"), ["data.hop_length", "1..16384"]),
    ("win_length_above_n_fft", S("data.win_length=1024"), ["data.win_length", "n_fft (512)"]),
    ("max_seconds_zero", S("data.max_seconds=0"), ["data.max_seconds", "(0, 3600]"]),
    ("max_seconds_nan", S("data.max_seconds=.nan"), ["data.max_seconds", "(0, 3600]"]),
    ("grad_clip_negative", S("train.grad_clip=-1"), ["train.grad_clip", "[0, 1e+06]"]),
    ("accumulate_zero", S("train.accumulate=0"), ["train.accumulate", "1..1024"]),
    ("align_epochs_negative", S("train.align_epochs=-3"), ["train.align_epochs", "0..100000"]),
    ("loader_workers_negative", S("train.loader_workers=-1"), ["train.loader_workers", "0..64"]),
    ("prefetch_zero", S("train.prefetch=0"), ["train.prefetch", "1..64"]),
]


@pytest.mark.parametrize("name, args, needles", VALUES, ids=[c[0] for c in VALUES])
def test_config_value_out_of_range(base, tmp_path, name, args, needles):
    """Refused before any work: no cache entry, no run folder."""
    out, cache = tmp_path / "run", tmp_path / "cache"
    result = RUNNER.invoke(app, ["train", str(base / "own" / "data.csv"), "--epochs", "1", "--out", str(out),
                                 "--cache-dir", str(cache), *args])
    check(result, 2, needles, name)
    assert not out.exists() and not cache.exists()


def test_image_size_below_a_backbone_s_need_names_the_key(base, tmp_path):
    """convnext_tiny needs 32 pixels, more than the range's floor (the default encoder's 4)."""
    result = RUNNER.invoke(app, ["train", str(base / "own" / "data.csv"), "--epochs", "1", "--out", str(tmp_path / "r"),
                                 "--modalities", "photo", "--encoder", "image=convnext_tiny", "--set", "data.image_size=16"])
    check(result, 2, ["data.image_size", "at least 32"])


OPTIONS = [
    ("encoder_width_negative", S("model.encoder_options.image.width=-1"), ["cannot build encoder image.cnn", "negative"]),
    ("encoder_width_a_trillion", S("model.encoder_options.image.width=1000000000000"), ["cannot build encoder image.cnn"]),
    ("fusion_dropout_two", S("model.fusion_options.dropout=2"), ["cannot build fusion concat", "dropout"]),
]


@pytest.mark.parametrize("name, args, needles", OPTIONS, ids=[c[0] for c in OPTIONS])
def test_component_option_that_cannot_be_built(base, tmp_path, name, args, needles):
    """Options of an encoder or fusion are the component's own (free-form mappings): a size
    torch refuses, negative or beyond memory, is exit 2 naming the component, not a crash."""
    result = RUNNER.invoke(app, ["train", str(base / "own" / "data.csv"), "--epochs", "1", "--out", str(tmp_path / "r"), *args])
    check(result, 2, needles, name)


def test_every_numeric_and_list_key_declares_a_range():
    """The class, not the examples: a new numeric key without a range fails here."""
    import dataclasses
    import typing

    from mmcli.config import Config, from_dict

    config = from_dict({})  # the defaults hold their own ranges
    for section in dataclasses.fields(Config):
        cls = type(getattr(config, section.name))
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            hint = str(hints[f.name])
            if any(t in hint for t in ("int", "float")) and "dict" not in hint:
                assert "range" in f.metadata, f"{section.name}.{f.name} has no declared range"


def test_the_docs_state_every_range():
    """docs/hostile-inputs.md lists each key's range as the messages word it."""
    import dataclasses
    import typing

    from mmcli.config import Config

    docs = " ".join((Path(__file__).parents[1] / "docs" / "hostile-inputs.md").read_text(encoding="utf-8").split())
    for section in dataclasses.fields(Config):
        cls = typing.get_type_hints(Config)[section.name]
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if "range" in f.metadata:
                integer = "int" in str(hints[f.name]) and "list" not in str(hints[f.name])
                assert f"`{section.name}.{f.name}`: {f.metadata['range'].describe(integer)}" in docs, f.name


# --- 8. config files: bounded, whatever they hold ---------------------------------------

def alias_bomb(levels: int = 9) -> str:
    """The issue's bomb: nine levels of nine aliases, 387 million strings once expanded."""
    lines = ["model:", "  fusion_options:", "    a: &a [" + ", ".join(["x"] * 9) + "]"]
    for prev, cur in zip("abcdefgh", "bcdefghi"[: levels - 1]):
        lines.append(f"    {cur}: &{cur} [" + ", ".join([f"*{prev}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def text_file(text: str | bytes) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        path = folder / "hostile.yaml"
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return path
    return make


def folder_named_yaml(folder: Path) -> Path:
    (folder / "hostile.yaml").mkdir()
    return folder / "hostile.yaml"


def fifo(folder: Path) -> Path:
    os.mkfifo(folder / "hostile.yaml")
    return folder / "hostile.yaml"


FILES = [
    ("alias_bomb", text_file(alias_bomb()), 2, ["hostile.yaml", "expands to more than 100,000 values"]),
    ("alias_bomb_in_a_list_key", text_file(alias_bomb().replace("model:\n  fusion_options:", "data:\n  x:")
                                           + "  image_mean: *i\n"), 2, ["hostile.yaml", "expands to more than"]),
    ("alias_refers_to_itself", text_file("model:\n  fusion_options: &a {x: *a}\n"), 2, ["hostile.yaml", "refers to itself"]),
    ("nested_ten_thousand_deep", text_file("model:\n  fusion_options: {x: " + "[" * 10000 + "]" * 10000 + "}\n"), 2,
     ["hostile.yaml", "nests deeper than 64"]),
    ("config_of_300_kib", text_file("# padding\n" * 30000 + "train:\n  epochs: 1\n"), 2, ["hostile.yaml", "longer than 256 KiB"]),
    ("config_not_utf8", text_file(b"train:\n  device: \xff\xfe\n"), 2, ["hostile.yaml", "not UTF-8"]),
    ("config_is_a_folder", folder_named_yaml, 2, ["hostile.yaml", "not a regular file"]),
    ("config_is_a_fifo", fifo, 2, ["hostile.yaml", "not a regular file"]),
    ("python_tag", text_file("train: !!python/object/apply:os.system ['touch pwned']\n"), 2, ["hostile.yaml", "not valid YAML"]),
    ("nan_in_the_file", text_file("train:\n  lr: .nan\n"), 2, ["train.lr", "(0, 10]"]),
    ("binary_value", text_file("data:\n  image_mean: !!binary aGVsbG8=\n"), 2, ["data.image_mean"]),
    ("small_aliases_are_fine", text_file("data: &d\n  image_size: 32\n  image_mean: &m [0.5, 0.5, 0.5]\n"
                                         "  image_std: *m\n"), 0, []),
]


@pytest.mark.parametrize("name, make, code, needles", FILES, ids=[c[0] for c in FILES])
def test_config_file(base, tmp_path, name, make, code, needles):
    config = make(tmp_path)
    start = time.monotonic()
    result = RUNNER.invoke(app, ["preprocess", str(base / "own" / "data.csv"), "--config", str(config)])
    check(result, code, needles, name)
    assert time.monotonic() - start < 20  # the bomb is refused at once, not after minutes
    assert not (Path.cwd() / "pwned").exists()


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_alias_bomb_as_mmcli_config_is_refused_fast(base, tmp_path, command):
    bomb = text_file(alias_bomb())(tmp_path)
    args = ["train", str(base / "own" / "data.csv"), "--epochs", "1", "--out", str(tmp_path / "r")] \
        if command == "train" else ["evaluate", str(base / "run")]
    start = time.monotonic()
    result = RUNNER.invoke(app, args, env={"MMCLI_CONFIG": str(bomb)})
    if command == "train":
        check(result, 2, ["hostile.yaml", "expands to more than"])
    else:  # evaluate reads the run's own config, not $MMCLI_CONFIG: unaffected
        check(result, 0, [])
    assert time.monotonic() - start < 30


# --- 10. damaged run folders -------------------------------------------------------------

def weights(change: Callable[[dict, dict], None]) -> Callable[[Path], None]:
    """Rewrite best.safetensors with `change(state, metadata)` applied."""
    def damage(run: Path) -> None:
        path = run / "best.safetensors"
        state = load_file(str(path))
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata()
        change(state, meta)
        save_file(state, str(path), metadata=meta)
    return damage


def first_matrix(state: dict) -> str:
    return next(k for k, v in state.items() if v.is_floating_point() and v.dim() >= 2)


def grow(state: dict, meta: dict) -> None:
    key = first_matrix(state)
    state[key] = torch.zeros(state[key].shape[0] + 1, *state[key].shape[1:])


def nan(state: dict, meta: dict) -> None:
    key = first_matrix(state)
    state[key] = state[key].clone()
    state[key].view(-1)[0] = float("nan")


def as_int(state: dict, meta: dict) -> None:
    key = first_matrix(state)
    state[key] = state[key].to(torch.int32)


def raw(name: str, data: bytes | Callable[[bytes], bytes]) -> Callable[[Path], None]:
    def damage(run: Path) -> None:
        path = run / name
        path.write_bytes(data(path.read_bytes()) if callable(data) else data)
    return damage


def edit_json(name: str, change: Callable) -> Callable[[Path], None]:
    """Replace a JSON file by change(value), or edit it in place where change returns None."""
    def damage(run: Path) -> None:
        path = run / name
        value = json.loads(path.read_text())
        new = change(value)
        path.write_text(json.dumps(value if new is None else new))
    return damage


def edit_yaml(change: Callable[[str], str]) -> Callable[[Path], None]:
    def damage(run: Path) -> None:
        path = run / "config.yaml"
        path.write_text(change(path.read_text()))
    return damage


def remove(name: str) -> Callable[[Path], None]:
    return lambda run: (run / name).unlink()


def replace_by_folder(name: str) -> Callable[[Path], None]:
    def damage(run: Path) -> None:
        (run / name).unlink()
        (run / name).mkdir()
    return damage


def grown_vocab(tok: dict) -> None:
    vocab = tok["model"]["vocab"]
    vocab.update({f"extra{i}": len(vocab) + i for i in range(10)})


def shifted_vocab(tok: dict) -> None:
    tok["model"]["vocab"]["zzz"] = 99999


def swapped_specials(tok: dict) -> None:
    vocab = tok["model"]["vocab"]
    vocab["[PAD]"], vocab["[UNK]"] = vocab["[UNK]"], vocab["[PAD]"]


def template_with_foreign_ids(tok: dict) -> None:
    tok["post_processor"] = {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "[X]", "type_id": 0}},
                                                                      {"Sequence": {"id": "A", "type_id": 0}}],
                             "pair": [{"Sequence": {"id": "A", "type_id": 0}}],
                             "special_tokens": {"[X]": {"id": "[X]", "ids": [99999], "tokens": ["[X]"]}}}


def modality(name: str, change: Callable[[dict], object]) -> Callable[[dict], None]:
    def edit(data: dict) -> None:
        change(data["modalities"][name])
    return edit


def drop(key: str) -> Callable[[dict], None]:
    def edit(value: dict) -> None:
        value.pop(key)
    return edit


def rename_modality(data: dict) -> None:
    data["modalities"]["../../caption"] = data["modalities"].pop("caption")


T = "tokenizer-caption.json"
EVALUATE, PLOTS, INSPECT, PREDICT = ["evaluate"], ["evaluate", "--plots"], ["inspect"], ["predict", "--text", "a red cat"]
RUNS = [
    # weights
    ("weights_other_shape", weights(grow), EVALUATE, 2, ["best.safetensors", "has shape"]),
    ("weights_nan", weights(nan), EVALUATE, 2, ["best.safetensors", "NaN"]),
    ("weights_integers", weights(as_int), EVALUATE, 2, ["best.safetensors", "torch.int32"]),
    ("weights_tensor_missing", weights(lambda s, m: s.pop(first_matrix(s))), EVALUATE, 2, ["best.safetensors", "missing"]),
    ("weights_tensor_extra", weights(lambda s, m: s.update(stray=torch.zeros(2))), EVALUATE, 2, ["best.safetensors", "unexpected"]),
    ("weights_epoch_not_a_number", weights(lambda s, m: m.update(epoch="ten")), EVALUATE, 2, ["best.safetensors", "epoch"]),
    ("weights_newer_format", weights(lambda s, m: m.update(format_version="9")), EVALUATE, 2, ["best.safetensors", "format '9'"]),
    ("weights_header_claims_a_terabyte", raw("best.safetensors", struct.pack("<Q", 2**40) + b"{}"), EVALUATE, 2,
     ["best.safetensors", "cannot read weights"]),
    ("weights_header_not_json", raw("best.safetensors", struct.pack("<Q", 10) + b"not json!!"), EVALUATE, 2,
     ["best.safetensors", "cannot read weights"]),
    ("weights_truncated", raw("best.safetensors", lambda b: b[: len(b) // 2]), EVALUATE, 2, ["best.safetensors"]),
    ("weights_missing", remove("best.safetensors"), EVALUATE, 2, ["best.safetensors"]),
    # labels.json
    ("labels_one_short", edit_json("labels.json", lambda v: v[:-1]), EVALUATE, 2, ["labels.json", "n_classes is 3"]),
    ("labels_one_more", edit_json("labels.json", lambda v: v + ["hamster"]), PREDICT, 2, ["labels.json", "n_classes is 3"]),
    ("labels_a_mapping", edit_json("labels.json", lambda v: {"cat": 0}), EVALUATE, 2, ["labels.json", "not a list"]),
    ("labels_numbers", edit_json("labels.json", lambda v: [1, 2, 3]), EVALUATE, 2, ["labels.json", "strings"]),
    ("labels_repeated", edit_json("labels.json", lambda v: [v[0]] * len(v)), EVALUATE, 2, ["labels.json", "twice"]),
    ("labels_not_json", raw("labels.json", b"[cat, dog"), EVALUATE, 2, ["labels.json", "cannot read"]),
    ("labels_a_folder", replace_by_folder("labels.json"), EVALUATE, 2, ["labels.json", "not a regular file"]),
    # the tokenizer
    ("tokenizer_ids_beyond_the_embedding", edit_json(T, grown_vocab), EVALUATE, 2, [T, "gives ids up to 44", "has 35"]),
    ("tokenizer_id_far_beyond", edit_json(T, shifted_vocab), PREDICT, 2, [T, "ids are not 0..35"]),
    ("tokenizer_pad_not_zero", edit_json(T, swapped_specials), EVALUATE, 2, [T, "[PAD] 0"]),
    ("tokenizer_other_model", edit_json(T, lambda t: t["model"].update(type="BPE")), EVALUATE, 2, [T, "not a tokenizer mmcli wrote"]),
    ("tokenizer_not_json", raw(T, b"garbage"), EVALUATE, 2, [T, "not a tokenizer file"]),
    ("tokenizer_missing", remove(T), EVALUATE, 2, [T]),
    ("tokenizer_foreign_template_is_ignored", edit_json(T, template_with_foreign_ids), PREDICT, 0, ['"label"']),
    # data.json
    ("data_json_extra_key", edit_json("data.json", lambda d: d.update(extra=1)), EVALUATE, 2, ["data.json", "unknown extra"]),
    ("data_json_missing_key", edit_json("data.json", drop("n_classes")), EVALUATE, 2, ["data.json", "missing n_classes"]),
    ("data_json_extra_modality_key", edit_json("data.json", modality("photo", lambda m: m.update(depth=3))), EVALUATE, 2,
     ["data.json", "modalities.photo: unknown depth"]),
    ("data_json_modality_without_column", edit_json("data.json", modality("sound", drop("column"))), EVALUATE, 2,
     ["data.json", "modalities.sound: missing column"]),
    ("data_json_image_size_disagrees", edit_json("data.json", modality("photo", lambda m: m.update(image_size=32))), EVALUATE, 2,
     ["data.json", "modalities.photo.image_size' is 32, config.yaml gives 64"]),
    ("data_json_frames_disagree", edit_json("data.json", modality("sound", lambda m: m.update(frames=7))), PREDICT, 2,
     ["data.json", "frames"]),
    ("data_json_vocab_below_the_tokenizer", edit_json("data.json", modality("caption", lambda m: m.update(vocab_size=50))), EVALUATE, 2,
     [T, "embedding in data.json has 50"]),
    ("data_json_unknown_kind", edit_json("data.json", modality("photo", lambda m: m.update(kind="smell"))), EVALUATE, 2,
     ["data.json", "'modalities.photo.kind' is 'smell'"]),
    ("data_json_size_a_string", edit_json("data.json", modality("photo", lambda m: m.update(image_size="64"))), EVALUATE, 2,
     ["data.json", "image_size' must be int"]),
    ("data_json_name_leaves_the_folder", edit_json("data.json", rename_modality), EVALUATE, 2, ["data.json", "file name"]),
    ("data_json_modalities_a_list", edit_json("data.json", lambda d: d.update(modalities=[1])), EVALUATE, 2,
     ["data.json", "'modalities' must be dict"]),
    ("data_json_a_list", edit_json("data.json", lambda d: []), EVALUATE, 2, ["data.json", "not an object"]),
    ("data_json_n_classes_a_bool", edit_json("data.json", lambda d: d.update(n_classes=True)), EVALUATE, 2, ["data.json", "n_classes"]),
    ("data_json_pretrained_without_backbone", edit_json("data.json", modality("caption", lambda m: m.update(tokenizer="pretrained"))),
     EVALUATE, 2, ["data.json", "backbone_config"]),
    # target.json
    ("target_json_other_task", edit_json("target.json", lambda t: t.update(task="regression")), EVALUATE, 2,
     ["target.json", "config.yaml's task is 'classification'"]),
    ("target_json_counts_short", edit_json("target.json", lambda t: t.update(class_counts=[1])), EVALUATE, 2,
     ["target.json", "class_counts' must be 3 counts"]),
    ("target_json_unknown_key", edit_json("target.json", lambda t: t.update(temperature=2)), EVALUATE, 2,
     ["target.json", "unknown key 'temperature'"]),
    ("target_json_a_list", edit_json("target.json", lambda t: [1, 2]), EVALUATE, 2, ["target.json", "not an object"]),
    # config.yaml of the run
    ("run_config_alias_bomb", lambda run: (run / "config.yaml").write_text(alias_bomb()), EVALUATE, 2,
     ["config.yaml", "expands to more than"]),
    ("run_config_val_fraction_nan", edit_yaml(lambda t: t.replace("val_fraction: 0.1", "val_fraction: .nan")), EVALUATE, 2, ["config.yaml", "data.val_fraction"]),
    ("run_config_unknown_key", edit_yaml(lambda t: t + "extra: 1\n"), PREDICT, 2, ["config.yaml", "unknown config key 'extra'"]),
    ("run_config_image_size_changed", edit_yaml(lambda t: t.replace("image_size: 64", "image_size: 32")), EVALUATE, 2,
     ["data.json", "config.yaml gives 32"]),
    ("run_config_text_max_len_changed", edit_yaml(lambda t: re.sub(r"text_max_len: \d+", "text_max_len: 99", t)), EVALUATE, 2,
     ["data.json", "max_len"]),
    ("run_config_unknown_modality", edit_yaml(lambda t: t.replace("  modalities: null", "  modalities: [nothing]")), EVALUATE, 2,
     ["config.yaml and data.json describe no model"]),
    ("run_config_not_a_mapping", edit_yaml(lambda t: "- a list\n"), EVALUATE, 2, ["config.yaml", "mapping"]),
    # files that evaluate --plots and inspect read
    ("metrics_jsonl_not_json", raw("metrics.jsonl", b"{epoch: 1\n"), PLOTS, 2, ["metrics.jsonl, line 1"]),
    ("metrics_jsonl_loss_a_string", raw("metrics.jsonl", b'{"epoch": 1, "train_loss": "low"}\n'), INSPECT, 2, ["metrics.jsonl, line 1"]),
    ("provenance_a_number", raw("provenance.json", b"42"), PLOTS, 2, ["provenance.json", "not an object"]),
    ("eval_json_not_json", raw("eval-test.json", b"{"), INSPECT, 2, ["eval-test.json", "cannot read"]),
    ("inspect_data_json_damaged", edit_json("data.json", modality("photo", drop("kind"))), INSPECT, 2,
     ["data.json", "missing kind"]),
]


@pytest.mark.parametrize("name, damage, command, code, needles", RUNS, ids=[c[0] for c in RUNS])
def test_damaged_run_folder(base, name, damage, command, code, needles):
    run = base / name  # a sibling of the run: its config's relative manifest path still holds
    shutil.copytree(base / "run", run)
    damage(run)
    result = RUNNER.invoke(app, [command[0], str(run), *command[1:]])
    check(result, code, needles, name)


# --- 10. damaged cache entries -----------------------------------------------------------

@pytest.fixture(scope="module")
def cache(base) -> Path:
    root = base / "cache"
    result = RUNNER.invoke(app, ["preprocess", str(base / "own" / "data.csv"), "--cache-dir", str(root), "--quiet"])
    assert result.exit_code == 0, result.output
    return root


def table(change: Callable[[dict], object]) -> Callable[[Path], None]:
    return lambda entry: edit_json("table.json", change)(entry)


def lengths_beyond(entry: Path) -> None:
    n = json.loads((entry / "table.json").read_text())["arrays"]["sound.lengths"]["shape"][0]
    (entry / "sound.lengths.bin").write_bytes(torch.full((n,), 10**6, dtype=torch.int64).numpy().tobytes())


def array(name: str, key: str, value) -> Callable[[dict], None]:
    return lambda meta: meta["arrays"][name].update({key: value(meta["arrays"][name][key])})


J = "table.json"
CACHES = [
    ("table_labels_shorter_than_ids", table(lambda m: m.update(labels=m["labels"][:-1])), 2, [J, "labels, given_splits and given_groups must be"]),
    ("table_one_id_more", table(lambda m: m.update(ids=m["ids"] + ["extra"])), 2, [J, "13"]),
    ("table_texts_shorter", table(lambda m: m["texts"].update(caption=m["texts"]["caption"][:3])), 2, [J, "texts of 'caption'"]),
    ("table_array_rows_disagree", table(array("photo", "shape", lambda s: [s[0] + 1, *s[1:]])), 2, [J, "array 'photo'"]),
    ("table_array_dtype_changed", table(array("sound", "dtype", lambda d: "float32")), 2, [J, "array 'sound'"]),
    ("table_image_with_4_channels", table(array("photo", "shape", lambda s: [s[0], 4, *s[2:]])), 2, [J, "3 colour channels"]),
    ("table_array_dtype_unknown", table(array("photo", "dtype", lambda d: "complex128")), 2, [J, "array 'photo'"]),
    ("table_extra_array", table(lambda m: m["arrays"].update(ghost={"dtype": "uint8", "shape": [12]})), 2, [J, "ghost"]),
    ("table_unknown_kind", table(lambda m: m["modalities"]["photo"].update(kind="smell")), 2, [J, "modality 'photo'"]),
    ("table_key_missing", table(drop("bad_rows")), 2, [J, "its keys are not"]),
    ("table_a_list", table(lambda m: []), 2, ["cache format None"]),
    ("table_not_json", raw(J, b"{"), 2, ["not a readable mmcli cache"]),
    ("table_bad_rows_wrong_fields", table(lambda m: m.update(bad_rows=[{"x": 1}])), 2, [J, "bad_rows"]),
    ("table_audio_lengths_beyond_frames", lengths_beyond, 2, [J, "sound.lengths"]),
    ("table_array_file_truncated", raw("photo.bin", lambda b: b[:100]), 2, ["not a readable mmcli cache"]),
]


@pytest.mark.parametrize("name, damage, code, needles", CACHES, ids=[c[0] for c in CACHES])
def test_damaged_cache_entry_given_as_data(cache, name, damage, code, needles):
    entry = next((cache / "tensors").iterdir())
    copy = cache.parent / "entries" / name
    shutil.copytree(entry, copy)
    damage(copy)
    result = RUNNER.invoke(app, ["preprocess", str(copy)])
    check(result, code, needles, name)


SETTINGS = [
    ("cache_of_other_image_size", ["--set", "data.image_size=32"], ["data.image_size=32 gives [3, 32, 32]", "[3, 64, 64]"]),
    # the cache's 0.5 s clips: data.max_seconds derived as 0.5, 32 frames
    ("cache_of_other_n_mels", ["--set", "data.n_mels=32"], ["'sound' of shape [64, 32]", "[32, 32]"]),
    ("cache_of_other_max_seconds", ["--set", "data.max_seconds=1"], ["'sound' of shape [64, 32]", "[64, 63]"]),
    ("cache_of_the_same_settings", [], []),
]


@pytest.mark.parametrize("name, args, needles", SETTINGS, ids=[c[0] for c in SETTINGS])
def test_a_cache_given_as_data_must_match_the_settings(cache, tmp_path, name, args, needles):
    """A cache made with other data settings than the config in force would build a model
    for other inputs than it trains on (and save a run that predicts on yet others)."""
    entry = next((cache / "tensors").iterdir())
    result = RUNNER.invoke(app, ["train", str(entry), "--epochs", "1", "--out", str(tmp_path / "run"), *args])
    check(result, 2 if needles else 0, needles, name)


def test_a_damaged_entry_in_the_cache_is_named_and_listed(base, cache, tmp_path):
    root = tmp_path / "cache"
    shutil.copytree(cache, root)
    entry = next((root / "tensors").iterdir())
    edit_json("table.json", lambda m: m.update(labels=m["labels"][:-1]))(entry)
    result = RUNNER.invoke(app, ["preprocess", str(base / "own" / "data.csv"), "--cache-dir", str(root)])
    check(result, 2, [str(entry / "table.json"), "mmcli cache clean"])
    (entry / "table.json").write_text("[1, 2]")
    check(RUNNER.invoke(app, ["cache", "list", "--cache-dir", str(root)]), 0, [])


def test_the_checks_know_every_key_training_writes(base):
    """runfiles' schema of data.json is what training writes, and ModalitySpec's fields: a
    key added to either without the check is a failure here, not a refused run folder."""
    import dataclasses

    from mmcli import runfiles
    from mmcli.encoders import ModalitySpec

    assert set(runfiles.SPEC_KEYS) == {f.name for f in dataclasses.fields(ModalitySpec)}
    data = json.loads((base / "run" / "data.json").read_text())
    assert set(data) == set(runfiles.DATA_KEYS)
    assert all(set(m) <= set(runfiles.SPEC_KEYS) | set(runfiles.SOURCE_KEYS) for m in data["modalities"].values())


def test_the_batch_memory_bound_follows_the_kinds_of_the_data(tmp_path):
    """Only images and spectrograms have a per-batch memory bound: a batch of 50,000 rows of
    a numbers-only table trains, while the same batch of the photos of another set is refused
    before any preprocessing."""
    import numpy as np

    rng = np.random.default_rng(0)
    table = tmp_path / "numbers.csv"
    table.write_text("a,b,label\n" + "".join(f"{rng.normal():.3f},{rng.normal():.3f},{'xy'[i % 2]}\n" for i in range(40)))
    result = RUNNER.invoke(app, ["train", str(table), "--epochs", "1", "--batch-size", "50000", "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    photos = write_own_manifest(tmp_path / "own", n=12)
    cache = tmp_path / "cache"
    refused = RUNNER.invoke(app, ["train", str(photos), "--epochs", "1", "--batch-size", "50000", "--cache-dir", str(cache),
                                  "--out", str(tmp_path / "r2")])
    assert refused.exit_code == 2 and "train.batch_size" in refused.output and "images" in refused.output, refused.output
    assert not cache.exists() or not any(cache.rglob("table.json"))
