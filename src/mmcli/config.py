"""Typed, validated configuration: one dataclass per section, YAML in and out.

A config comes from defaults, then a YAML file, then command-line flags, then
`--set section.key=value` expressions, in that order. Unknown keys and wrong types are
a `ConfigError` that names the key. The resolved config is saved in every run folder.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import yaml

from mmcli.errors import ConfigError

MODALITY_KINDS = ("image", "text", "audio", "tabular")


@dataclass
class ModalityConfig:
    column: str = ""  # image, text, audio: the column that holds it
    kind: str = ""
    columns: list[str] = field(default_factory=list)  # tabular: its columns
    categorical: list[str] = field(default_factory=list)  # tabular: those of its columns that hold categories


@dataclass
class DataConfig:
    manifest: Optional[str] = None  # a path, a folder, or "builtin:toy"
    label: str = "label"
    id_column: str = "id"
    split_column: str = "split"
    modalities: dict[str, ModalityConfig] = field(default_factory=dict)
    split_seed: Optional[int] = None  # None: the training seed
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    image_size: int = 64
    image_mean: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    image_std: list[float] = field(default_factory=lambda: [0.25, 0.25, 0.25])
    text_max_len: int = 32
    vocab_size: int = 2000
    sample_rate: int = 16000
    n_mels: int = 64
    n_fft: int = 512
    hop_length: int = 256
    win_length: Optional[int] = None  # audio: the analysis window's length in samples (None: n_fft)
    window: str = "hann"  # audio: the window's shape (any that scipy.signal.get_window knows: hann, hamming, ...)
    max_seconds: float = 2.0
    on_error: str = "fail"
    label_separator: str = "|"  # multilabel: labels joined by this in the label column


@dataclass
class ModelConfig:
    modalities: Optional[list[str]] = None  # None: every modality of the data
    encoders: dict[str, str] = field(default_factory=dict)  # modality or kind -> encoder
    encoder_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    fusion: str = "concat"
    fusion_options: dict[str, Any] = field(default_factory=dict)
    task: str = "classification"
    task_options: dict[str, Any] = field(default_factory=dict)  # retrieval and captioning settings
    loss: Optional[str] = None  # None: the task's own; regression: mse or huber
    feature_dim: int = 128
    hidden_dim: int = 128
    dropout: float = 0.1
    modality_dropout: float = 0.0  # training: hide each modality of an example with this rate
    aux_loss_weight: float = 0.0  # weight of the per-modality auxiliary losses (0: none)
    crossmodal: Optional[str] = None  # align (contrastive pre-alignment) or translate (MCTN-style; source = first modality)
    translate_weight: float = 1.0  # translate: weight of the translation loss


@dataclass
class TrainConfig:
    epochs: int = 12
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 0.01
    warmup_epochs: float = 1.0
    patience: int = 5
    grad_clip: float = 1.0
    seed: int = 0
    device: str = "auto"
    deterministic: bool = False
    gradient_blending: bool = False  # weigh the fused and per-modality losses (Wang et al., 2020)
    class_weights: str = "none"  # classification: none or balanced (n / (classes x count))
    sampler: str = "random"  # classification: random or weighted (rare classes drawn as often as common)
    logger: str = "none"  # none or tensorboard (events in the run folder's tensorboard/)
    precision: str = "fp32"  # fp32, bf16 or fp16 (through torch.autocast; fp16 with a gradient scaler)
    accumulate: int = 1  # batches per optimizer step (gradient accumulation)
    compile: bool = False  # torch.compile the encoders (opt-in: compiling takes a while)
    feature_cache: bool = True  # frozen encoders: compute their features once, into the cache folder
    align_epochs: int = 3  # model.crossmodal=align: epochs of contrastive alignment before fine-tuning
    loader_workers: Optional[int] = None  # processes that assemble batches; None: 0 on the CPU, up to 4 with a GPU
    prefetch: int = 2  # batches each loader worker prepares ahead


@dataclass
class EvalConfig:
    split: str = "test"
    metric: Optional[str] = None  # None: the task's own (accuracy, micro_f1, mae)
    batch_size: int = 256


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def copy(self) -> "Config":
        return from_dict(self.to_dict())


def _check(value: Any, hint: Any, key: str) -> Any:
    """Check `value` against the type hint `hint`; convert dicts to dataclasses."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _check(value, inner[0], key)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping, got {value!r}")
        return _build(hint, value, key)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"config key '{key}' must be a list, got {value!r}")
        return [_check(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping, got {value!r}")
        return {str(k): _check(v, args[1], f"{key}.{k}") for k, v in value.items()}
    if hint is Any:
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"config key '{key}' must be an integer, got {value!r}")
    if hint in (str, float, bool) and not isinstance(value, hint):
        raise ConfigError(f"config key '{key}' must be of type {hint.__name__}, got {value!r}")
    return value


def _build(cls: type, values: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in values:
        if key not in names:
            where = f"{prefix}.{key}" if prefix else key
            raise ConfigError(f"unknown config key '{where}' (known: {', '.join(sorted(names))})")
    kwargs = {k: _check(v, hints[k], f"{prefix}.{k}" if prefix else k) for k, v in values.items()}
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required field is missing
        raise ConfigError(f"config section '{prefix}': {exc}") from None


def from_dict(values: dict[str, Any] | None) -> Config:
    config = _build(Config, values or {}, "")
    validate(config)
    return config


def validate(config: Config) -> None:
    """Checks that span keys; types were checked while building."""
    for name, mod in config.data.modalities.items():
        if mod.kind not in MODALITY_KINDS:
            raise ConfigError(
                f"config key 'data.modalities.{name}.kind': unknown kind '{mod.kind}' "
                f"(known: {', '.join(MODALITY_KINDS)})"
            )
        if mod.kind == "tabular":
            stray = [c for c in mod.categorical if c not in mod.columns]
            if not mod.columns or stray:
                raise ConfigError(f"config key 'data.modalities.{name}': a tabular modality lists its columns under "
                                  f"columns, and categorical names some of them" + (f" ({stray} are not in columns)" if stray else ""))
        elif not mod.column:
            raise ConfigError(f"config key 'data.modalities.{name}.column' is missing: the column that holds the {mod.kind}")
    if config.data.on_error not in ("fail", "skip"):
        raise ConfigError("config key 'data.on_error' must be 'fail' or 'skip'")
    for key in ("val_fraction", "test_fraction"):
        value = getattr(config.data, key)
        if not 0.0 <= value < 1.0:
            raise ConfigError(f"config key 'data.{key}' must be in [0, 1), got {value}")
    if config.train.epochs < 1 or config.train.batch_size < 1:
        raise ConfigError("config keys 'train.epochs' and 'train.batch_size' must be at least 1")
    for section, keys in (("data", ("image_size", "n_mels", "n_fft", "hop_length", "sample_rate", "text_max_len", "max_seconds")),
                          ("model", ("feature_dim", "hidden_dim")), ("eval", ("batch_size",))):
        for key in keys:
            if getattr(getattr(config, section), key) <= 0:
                raise ConfigError(f"config key '{section}.{key}' must be positive, got {getattr(getattr(config, section), key)}")
    if config.data.win_length is not None and not 0 < config.data.win_length <= config.data.n_fft:
        raise ConfigError(f"config key 'data.win_length' must be in 1..n_fft ({config.data.n_fft}), got {config.data.win_length}")
    if config.data.window != "hann":
        from scipy.signal import get_window

        try:
            get_window(config.data.window, 16)
        except ValueError:
            raise ConfigError(f"config key 'data.window': unknown window '{config.data.window}' (e.g. hann, hamming, blackman)") from None
    if config.data.vocab_size < 3:
        raise ConfigError(f"config key 'data.vocab_size' must be at least 3, got {config.data.vocab_size}")
    for key in ("modality_dropout", "dropout"):
        if not 0.0 <= getattr(config.model, key) < 1.0:
            raise ConfigError(f"config key 'model.{key}' must be in [0, 1), got {getattr(config.model, key)}")
    if config.model.aux_loss_weight < 0:
        raise ConfigError("config key 'model.aux_loss_weight' must not be negative")
    _validate_train(config.train)
    if config.model.crossmodal not in (None, "align", "translate"):
        raise ConfigError(f"config key 'model.crossmodal' must be align or translate, got '{config.model.crossmodal}'")
    if config.model.translate_weight < 0 or config.train.align_epochs < 0:
        raise ConfigError("config keys 'model.translate_weight' and 'train.align_epochs' must not be negative")
    if config.model.loss not in (None, "mse", "huber"):
        raise ConfigError(f"config key 'model.loss' must be mse or huber (regression), got '{config.model.loss}'")
    if not config.data.label_separator:
        raise ConfigError("config key 'data.label_separator' must not be empty")
    if config.train.lr <= 0:
        raise ConfigError(f"config key 'train.lr' must be positive, got {config.train.lr}")


def _validate_train(train: TrainConfig) -> None:
    if train.loader_workers is not None and train.loader_workers < 0:
        raise ConfigError(f"config key 'train.loader_workers' must be 0 or more, got {train.loader_workers}")
    if train.prefetch < 1:
        raise ConfigError(f"config key 'train.prefetch' must be at least 1, got {train.prefetch}")
    if train.accumulate < 1:
        raise ConfigError(f"config key 'train.accumulate' must be at least 1, got {train.accumulate}")
    for key, allowed in (("class_weights", ("none", "balanced")), ("sampler", ("random", "weighted")), ("precision", ("fp32", "bf16", "fp16")),
                         ("logger", ("none", "tensorboard"))):
        if getattr(train, key) not in allowed:
            raise ConfigError(f"config key 'train.{key}' must be one of {', '.join(allowed)}, got '{getattr(train, key)}'")


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads 1e-3 as a float (YAML 1.1 wants a dot: 1.0e-3)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def read_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)


def load_yaml(path: Path) -> dict[str, Any]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        values = read_yaml(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections")
    return values


def parse_set(expr: str) -> tuple[list[str], Any]:
    """Parse `section.key=value`; the value is read as YAML (numbers, lists, booleans)."""
    if "=" not in expr:
        raise ConfigError(f"--set expects section.key=value, got '{expr}'")
    key, raw = expr.split("=", 1)
    parts = key.strip().split(".")
    if len(parts) < 2 or not all(parts):
        raise ConfigError(f"--set key must look like section.key, got '{key}'")
    try:
        value = read_yaml(raw) if raw.strip() else ""
    except yaml.YAMLError:
        raise ConfigError(f"--set {key}: cannot read value '{raw}'") from None
    return parts, value


def apply_set(values: dict[str, Any], parts: list[str], value: Any) -> None:
    node = values
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {'.'.join(parts)}: '{part}' is not a section")
        node = child
    node[parts[-1]] = value


def resolve(
    path: Path | None = None,
    flags: dict[str, Any] | None = None,
    sets: list[str] | None = None,
    base: dict[str, Any] | None = None,
) -> Config:
    """Defaults < base < YAML file < flags (`section.key` -> value, None skipped) < --set."""
    values: dict[str, Any] = _deep_copy(base or {})
    if path is not None:
        merge(values, load_yaml(path))
    for key, value in (flags or {}).items():
        if value is not None:
            apply_set(values, key.split("."), value)
    for expr in sets or []:
        apply_set(values, *parse_set(expr))
    return from_dict(values)


def merge(into: dict[str, Any], new: dict[str, Any]) -> None:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            merge(into[key], value)
        else:
            into[key] = value


def _deep_copy(values: dict[str, Any]) -> dict[str, Any]:
    return yaml.safe_load(yaml.safe_dump(values))
