"""A saved run's files, read and checked as `mmcli.pipeline.load_run` reads them.

Run folders travel between machines, so any of their files may be damaged, or written by
someone else. Each file is checked against what training writes and against the other
files (data.json's shapes against config.yaml, labels.json against data.json, each
tokenizer against its embedding, target.json against labels.json; the weights' shapes
against the model, in `runs.load_weights`). A problem is a `UsageError` (exit 2) that
names the file, never a crash deeper down.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Callable

from mmcli import runs
from mmcli.config import Config, ModalityConfig, from_dict, load_yaml
from mmcli.encoders import ModalitySpec
from mmcli.kinds import KINDS
from mmcli.errors import ConfigError, UsageError

# data.json, as `pipeline.save_run_inputs` writes it: each key and its JSON type
DATA_KEYS: dict[str, type] = {"source": str, "data_key": str, "modalities": dict, "splits": dict, "n_classes": int}
SOURCE_KEYS: dict[str, type] = {"column": str, "columns": list, "categorical": list, "start": str, "end": str}
SPEC_KEYS: dict[str, type] = {"name": str, "kind": str, "image_size": int, "channels": int, "vocab_size": int,
                              "max_len": int, "n_mels": int, "frames": int, "tokenizer": str, "backbone_config": str,
                              "numeric": int, "categories": list}  # ModalitySpec's fields (a test checks)
SAFE_NAME = re.compile(r"^[^/\\\0.][^/\\\0]{0,199}$")  # no folder, no parent, no hidden file
MAX_COUNT = 1_000_000  # columns, categories, tokens: far beyond what training writes


def damaged(path: Path, why: str) -> UsageError:
    return UsageError(f"{path}: damaged run file: {why}")


def _is_int(value: Any) -> bool:
    return type(value) is int


def _is_number(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


def _check_keys(path: Path, value: dict, types: dict[str, type], required: set[str], where: str) -> None:
    missing = sorted(required - set(value))
    unknown = sorted(str(k) for k in value if k not in types)
    if missing or unknown:
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + ([f"unknown {', '.join(unknown)}"] if unknown else [])
        raise damaged(path, f"{where or 'its top level'}: {'; '.join(parts)}")
    for key, item in value.items():
        wanted = types[key]
        if not isinstance(item, wanted) or (wanted is int and not _is_int(item)):
            raise damaged(path, f"'{where + '.' if where else ''}{key}' must be {wanted.__name__}, got {item!r:.60}")


def read_config(run_dir: Path) -> Config:
    path = run_dir / "config.yaml"
    try:
        config = from_dict(load_yaml(path), trained=True)
    except ConfigError as exc:
        if str(path) in str(exc):
            raise
        raise ConfigError(f"{path}: {exc}") from None
    unset = [k for k in ("text_max_len", "max_seconds") if getattr(config.data, k) is None]
    if unset:  # training saves the limits it derived: the model's inputs were made with them
        raise damaged(path, f"data.{unset[0]} is null; a run folder holds the value it was trained with")
    return config


NORMED_TEXT = ("text.bag", "text.transformer")  # encoders with the `norm` option, on since issue 19


def with_defaults_of_then(config_file: Path, config: Config, specs: dict[str, ModalitySpec]) -> Config:
    """A run trained before issue 19 changed the defaults (its config.yaml has no
    `train.augment`) was built with the defaults of then, which its config.yaml does not
    spell out: text.textcnn for text, image.cnn 16 channels wide, no image augmentation,
    no normalised pooling in the text encoders that now have it, full-sized positions in
    text.transformer. A run from before `train.trained_lr_scale` trained its pretrained
    weights at the full learning rate (so --resume keeps its optimizer's groups), and one from
    before `train.min_epochs` could stop early at any epoch, one from before
    `train.max_cycles` trained one learning-rate cycle, and a classifier from before
    `label_smoothing` trained without it.
    Without this its weights no longer fit the model that today's defaults build."""
    from mmcli.models import encoder_choice

    raw = load_yaml(config_file)
    if not isinstance(raw, dict):
        return config
    config = config.copy()
    train, model = raw.get("train") or {}, raw.get("model") or {}
    if "trained_lr_scale" not in train:  # pretrained weights learnt at the full rate then
        config.train.trained_lr_scale = 1.0
    if "min_epochs" not in train:  # early stopping could end a run at any epoch then
        config.train.min_epochs = 0
    if "max_cycles" not in train:  # one learning-rate cycle then
        config.train.max_cycles = 1
    if model.get("task", "classification") == "classification" and "label_smoothing" not in (model.get("task_options") or {}):
        config.model.task_options = {**config.model.task_options, "label_smoothing": 0.0}  # none before issue 19
    if "augment" in train:
        return config
    config.train.augment = False
    for name, spec in specs.items():
        old = KINDS[spec.kind].old_default_encoder
        if old and not (config.model.encoders.get(name) or config.model.encoders.get(spec.kind)):
            config.model.encoders[name] = f"{spec.kind}.{old}"
        choice, options = encoder_choice(config, spec)
        if choice == "image.cnn" and "width" not in options:
            config.model.encoder_options[name] = {**options, "width": 16}
        if choice in NORMED_TEXT:  # their pooled vectors were not normalised, their positions full-sized
            then = {"norm": False, **({"position_scale": 1.0} if choice == "text.transformer" else {})}
            config.model.encoder_options[name] = {**then, **options}
    return config


def read_data(run_dir: Path, config: Config) -> tuple[dict[str, ModalitySpec], dict[str, ModalityConfig], int]:
    """data.json: each modality's spec (what the encoders are built for) and source (its
    columns in a manifest), and the number of outputs."""
    path = run_dir / "data.json"
    data = runs.read_json(path, dict)
    _check_keys(path, data, DATA_KEYS, set(DATA_KEYS), "")
    if not data["modalities"]:
        raise damaged(path, "lists no modality")
    if not 1 <= data["n_classes"] <= MAX_COUNT:
        raise damaged(path, f"n_classes is {data['n_classes']}")
    if not all(_is_int(v) and v >= 0 for v in data["splits"].values()):
        raise damaged(path, f"splits must map each split to a number of rows, got {data['splits']!r:.80}")
    specs, sources = {}, {}
    for name, entry in data["modalities"].items():
        specs[name], sources[name] = _modality(path, name, entry, config)
    return specs, sources, data["n_classes"]


def _modality(path: Path, name: str, entry: Any, config: Config) -> tuple[ModalitySpec, ModalityConfig]:
    where = f"modalities.{name}"
    if not isinstance(entry, dict):
        raise damaged(path, f"'{where}' must be an object, got {entry!r:.60}")
    _check_keys(path, entry, SPEC_KEYS | SOURCE_KEYS, {"kind", "column"}, where)
    kind = entry["kind"]
    if kind not in KINDS:
        raise damaged(path, f"'{where}.kind' is '{kind}' (known: {', '.join(KINDS)})")
    if KINDS[kind].fitted and not SAFE_NAME.match(name):  # its tokenizer or statistics file is named by it
        raise damaged(path, f"modality name {name!r:.60} cannot be part of a file name")
    columns, categorical = entry.get("columns", []), entry.get("categorical", [])
    if not all(isinstance(c, str) for c in columns + categorical) or not set(categorical) <= set(columns):
        raise damaged(path, f"'{where}': columns must be names, and categorical some of them")
    many = KINDS[kind].many_columns
    if many != bool(columns) or (not many) != bool(entry["column"]):
        raise damaged(path, f"'{where}': a {kind} modality comes from " + ("columns" if many else "one column"))
    spec_args = {k: v for k, v in entry.items() if k in SPEC_KEYS}
    if not all(_is_int(c) and 0 <= c <= MAX_COUNT for c in spec_args.get("categories", [])):
        raise damaged(path, f"'{where}.categories' must be numbers of values, got {spec_args['categories']!r:.60}")
    spec = ModalitySpec(**{**spec_args, "name": name, "categories": tuple(spec_args.get("categories", ()))})
    if spec_args.get("name", name) != name:
        raise damaged(path, f"'{where}.name' is '{spec_args['name']}'")
    _check_spec(path, where, spec, config)
    if (entry.get("start") or entry.get("end")) and not KINDS[kind].windowed:
        raise damaged(path, f"'{where}': a {kind} modality has no clip window (start, end)")
    return spec, ModalityConfig(column=entry["column"], kind=kind, columns=columns, categorical=categorical,
                                start=entry.get("start", ""), end=entry.get("end", ""))


def _check_spec(path: Path, where: str, spec: ModalitySpec, config: Config) -> None:
    """The shapes training wrote for every modality come from config.yaml: they must agree."""
    from mmcli.data.decode import audio_frames

    d = config.data
    expected = {"channels": 3, "image_size": d.image_size, "max_len": d.text_max_len, "n_mels": d.n_mels,
                "frames": audio_frames(d)}
    if not KINDS[spec.kind].tokenized:  # a tokenizer's own vocabulary otherwise
        expected["vocab_size"] = d.vocab_size
    for key, want in expected.items():
        if getattr(spec, key) != want:
            raise damaged(path, f"'{where}.{key}' is {getattr(spec, key)}, config.yaml gives {want}")
    if not (3 <= spec.vocab_size <= MAX_COUNT + 1 and 0 <= spec.numeric <= MAX_COUNT):
        raise damaged(path, f"'{where}': vocab_size {spec.vocab_size} or numeric {spec.numeric} out of range")
    tokenized = KINDS[spec.kind].tokenized  # a pretrained text model's config goes with its tokenizer; others' alone
    if spec.tokenizer not in ("own", "pretrained") or (spec.tokenizer == "pretrained") != (tokenized and bool(spec.backbone_config)):
        raise damaged(path, f"'{where}.tokenizer' is '{spec.tokenizer}' (own, or pretrained with its backbone_config)")
    if spec.backbone_config:
        try:
            backbone = json.loads(spec.backbone_config)
        except (ValueError, RecursionError):
            backbone = None
        if not isinstance(backbone, dict) or not isinstance(backbone.get("model_type"), str) or \
                any(_is_int(v) and not 0 <= v <= MAX_COUNT for v in backbone.values()):
            raise damaged(path, f"'{where}.backbone_config' is not a model config (JSON with model_type, sizes in 0..{MAX_COUNT})")


def read_labels(run_dir: Path, n_classes: int) -> list[str]:
    path = run_dir / "labels.json"
    labels = runs.read_json(path, list)
    if not all(isinstance(label, str) for label in labels):
        raise damaged(path, "must hold a list of label names (strings)")
    if len(set(labels)) != len(labels):
        raise damaged(path, "names a label twice")
    if len(labels) != n_classes:
        raise damaged(path, f"holds {len(labels)} labels, data.json's n_classes is {n_classes}")
    return labels


def _counts(value: Any, n: int) -> str | None:
    ok = isinstance(value, list) and len(value) == n and all(_is_int(v) and v >= 0 for v in value)
    return None if ok else f"must be {n} counts (one per label)"


def _thresholds(value: Any, n: int) -> str | None:
    ok = isinstance(value, list) and len(value) == n and all(_is_number(v) and 0 <= v <= 1 for v in value)
    return None if ok else f"must be {n} numbers in [0, 1] (one per label)"


# target.json: each key a task's fit_state or after_fit writes, and its check
STATE_CHECKS: dict[str, Callable[[Any, int], str | None]] = {
    "class_counts": _counts,
    "thresholds": _thresholds,
    "mean": lambda v, n: None if _is_number(v) else "must be a finite number",
    "std": lambda v, n: None if _is_number(v) and v > 0 else "must be a positive number",
    "constant_caption": lambda v, n: None if isinstance(v, str) else "must be a text",
    "constant_transcript": lambda v, n: None if isinstance(v, str) else "must be a text",
    "bleu_order": lambda v, n: None if isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 4 else "must be 1, 2, 3 or 4",
    "threshold": lambda v, n: None if _is_number(v) and -1 <= v <= 1 else "must be a cosine in [-1, 1]",
    "threshold_rule": lambda v, n: None if isinstance(v, str) else "must be a text",
    "val_eer": lambda v, n: None if _is_number(v) and 0 <= v <= 1 else "must be a number in [0, 1]",
}


def read_target(run_dir: Path, config: Config, labels: list[str]) -> dict[str, Any]:
    """target.json: the task's state (older runs have none: {})."""
    path = run_dir / "target.json"
    if not path.exists():
        return {}
    state = runs.read_json(path, dict)
    task = state.pop("task", config.model.task)
    if task != config.model.task:
        raise damaged(path, f"is for the task {task!r:.40}, config.yaml's task is '{config.model.task}'")
    for key, value in state.items():
        check = STATE_CHECKS.get(key)
        problem = f"unknown key '{key}'" if check is None else check(value, len(labels))
        if problem:
            raise damaged(path, f"'{key}' {problem}" if check else problem)
    return state


def read_fitted(run_dir: Path, config: Config, specs: dict[str, ModalitySpec], sources: dict[str, ModalityConfig]) -> dict:
    """What was fitted on the training split: each text modality's tokenizer, each tabular
    modality's statistics (each kind loads and checks its own)."""
    from mmcli.pipeline import fitted_file

    return {name: KINDS[spec.kind].load_fitted(run_dir / fitted_file(name, spec.kind), config, spec, sources[name])
            for name, spec in specs.items() if KINDS[spec.kind].fitted}


def build_model(run_dir: Path, config: Config, specs: dict[str, ModalitySpec], n_outputs: int):
    """The model config.yaml and data.json describe, with no pretrained weights (the run's
    own replace them)."""
    from mmcli.encoders import skip_pretrained
    from mmcli.models import build

    try:
        with skip_pretrained():
            return build(config, specs, n_outputs)
    except (ConfigError, ValueError, TypeError, KeyError, RuntimeError) as exc:
        raise UsageError(f"{run_dir}: config.yaml and data.json describe no model mmcli can build ({str(exc)[:300]})") from None
