"""Typed, validated configuration: one dataclass per section, YAML in and out.

A config comes from defaults, then a YAML file, then command-line flags, then
`--set section.key=value` expressions, in that order. Unknown keys, wrong types and values
outside the range a key declares (`ranged`) are a `ConfigError` that names the key and what
it must be. YAML files are read within bounds (mmcli.yamlio). The resolved config is saved
in every run folder.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import yaml

from mmcli import kinds
from mmcli.errors import ConfigError
from mmcli.yamlio import YamlTooBig, load_yaml, read_yaml  # noqa: F401  (re-exported: config files are read there)

SEEDS = (0, 2**63 - 1)  # what every random number generator mmcli seeds accepts


@dataclass(frozen=True)
class Range:
    """The values a numeric config key (or each item of a list key) may take; `length`:
    how many items a list key holds. Declared beside each field, checked in `_check_range`."""

    lo: float
    hi: float
    lo_open: bool = False
    hi_open: bool = False
    length: Optional[tuple[int, int]] = None

    def holds(self, value: float) -> bool:
        if isinstance(value, float) and not math.isfinite(value):
            return False
        above = self.lo < value if self.lo_open else self.lo <= value
        return above and (value < self.hi if self.hi_open else value <= self.hi)

    def describe(self, integer: bool) -> str:
        """What a key with this range must be, as the messages and docs/hostile-inputs.md say it."""
        if self.length is not None:
            lo, hi = self.length
            each = dataclasses.replace(self, length=None).describe(False)
            return f"a list of {lo if lo == hi else f'{lo} to {hi}'} numbers, each {each}"
        if integer:
            return f"an integer in {self.lo}..{self.hi}"
        return f"a number in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}{')' if self.hi_open else ']'}"


def ranged(default: Any, lo: float, hi: float, lo_open: bool = False, hi_open: bool = False,
           length: Optional[tuple[int, int]] = None) -> Any:
    """A dataclass field with its allowed range; a callable default is a list's factory."""
    meta = {"range": Range(lo, hi, lo_open, hi_open, length)}
    if callable(default):
        return field(default_factory=default, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class ModalityConfig:
    column: str = ""  # image, text, audio: the column that holds it
    kind: str = ""
    columns: list[str] = field(default_factory=list)  # tabular: its columns
    categorical: list[str] = field(default_factory=list)  # tabular: those of its columns that hold categories
    start: str = ""  # video, audio: the column with each clip's start in seconds (empty: the file's start)
    end: str = ""  # video, audio: the column with each clip's end in seconds (empty: the file's end)


@dataclass
class DataConfig:
    manifest: Optional[str] = None  # a path, a folder, or "builtin:toy"
    label: str = "label"
    id_column: str = "id"
    split_column: str = "split"
    group_column: str = "group"  # rows with one value here share a source (a photo): one split, scored together
    modalities: dict[str, ModalityConfig] = field(default_factory=dict)
    split_seed: Optional[int] = ranged(None, *SEEDS)  # None: the training seed
    val_fraction: float = ranged(0.1, 0, 1, hi_open=True)
    test_fraction: float = ranged(0.2, 0, 1, hi_open=True)
    image_size: int = ranged(64, 4, 1024)  # 4: the default image.cnn's stem reads 4x4 patches
    image_mean: list[float] = ranged(lambda: [0.5, 0.5, 0.5], 0, 1, length=(3, 3))  # per RGB channel, pixels in [0, 1]
    image_std: list[float] = ranged(lambda: [0.25, 0.25, 0.25], 0.001, 10, length=(3, 3))
    text_max_len: Optional[int] = ranged(None, 1, 16384)  # None: derived from the training texts (mmcli.data.lengths)
    vocab_size: int = ranged(2000, 3, 1_000_000)
    sample_rate: int = ranged(16000, 1000, 384_000)
    n_mels: int = ranged(64, 1, 512)
    n_fft: int = ranged(512, 8, 16384)
    hop_length: int = ranged(256, 1, 16384)
    win_length: Optional[int] = ranged(None, 1, 16384)  # audio: the analysis window's length in samples (None: n_fft)
    window: str = "hann"  # audio: the window's shape (any that scipy.signal.get_window knows: hann, hamming, ...)
    max_seconds: Optional[float] = ranged(None, 0, 3600, lo_open=True)  # None: derived from the audio files (mmcli.data.lengths)
    video_frames: int = ranged(8, 1, 512)  # video: frames taken from each clip (its frames are data.image_size square)
    video_sampling: str = "uniform"  # video: uniform (evenly spaced), segment (one random frame per segment, as TSN) or rate (data.video_fps a second)
    video_fps: Optional[float] = ranged(None, 0.001, 1000)  # video_sampling rate: frames taken per second (at most video_frames)
    on_error: str = "fail"
    missing: str = "fail"  # a row lacking some modality: fail (a bad row) or allow (kept, masked as in predict)
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
    feature_dim: int = ranged(128, 1, 4096)
    hidden_dim: int = ranged(128, 1, 4096)
    dropout: float = ranged(0.1, 0, 1, hi_open=True)
    modality_dropout: float = ranged(0.0, 0, 1, hi_open=True)  # training: hide each modality of an example with this rate
    aux_loss_weight: float = ranged(1.0, 0, 1000)  # weight of the per-modality auxiliary losses (0: none; docs/fusion.md)
    crossmodal: Optional[str] = None  # align (contrastive pre-alignment) or translate (MCTN-style; source = first modality)
    translate_weight: float = ranged(1.0, 0, 1000)  # translate: weight of the translation loss
    init_from: dict[str, str] = field(default_factory=dict)  # modality -> run folder whose encoder (and head) start this model's (warm start; compare sets it)


@dataclass
class TrainConfig:
    epochs: Optional[int] = ranged(None, 1, 100_000)  # None: derived from the training split's size (training.setup.budget)
    batch_size: int = ranged(64, 1, 65536)
    lr: float = ranged(3e-3, 0, 10, lo_open=True)
    weight_decay: float = ranged(0.01, 0, 10)
    trained_lr_scale: float = ranged(0.1, 0, 1, lo_open=True)  # parameters that start trained (warm start, pretrained weights) learn at lr x this
    warmup_epochs: float = ranged(1.0, 0, 100_000)
    patience: Optional[int] = ranged(None, 0, 100_000)  # 0: no early stopping; None: derived with the epochs
    min_epochs: Optional[int] = ranged(None, 0, 100_000)  # early stopping never ends a run before this epoch; None: the middle of the learning-rate decay
    max_cycles: Optional[int] = ranged(None, 1, 100)  # learning-rate cycles of `epochs` each; another starts while validation still improves; None: 3 with a derived budget, else 1
    grad_clip: float = ranged(1.0, 0, 1e6)  # 0: no clipping
    seed: int = ranged(0, *SEEDS)
    device: str = "auto"
    deterministic: bool = False
    gradient_blending: bool = False  # weigh the fused and per-modality losses (Wang et al., 2020)
    class_weights: str = "none"  # classification: none or balanced (n / (classes x count))
    sampler: str = "random"  # classification: random or weighted (rare classes drawn as often as common)
    logger: str = "none"  # none or tensorboard (events in the run folder's tensorboard/)
    precision: str = "fp32"  # fp32, bf16 or fp16 (through torch.autocast; fp16 with a gradient scaler)
    accumulate: int = ranged(1, 1, 1024)  # batches per optimizer step (gradient accumulation)
    compile: bool = False  # torch.compile the encoders (opt-in: compiling takes a while)
    feature_cache: bool = True  # frozen encoders: compute their features once, into the cache folder
    align_epochs: int = ranged(3, 0, 100_000)  # model.crossmodal=align: epochs of contrastive alignment before fine-tuning
    loader_workers: Optional[int] = ranged(None, 0, 64)  # processes that assemble batches; None: 0 on the CPU, up to 4 with a GPU
    prefetch: int = ranged(2, 1, 64)  # batches each loader worker prepares ahead
    augment: bool = True  # images: random resized crops in training (never in evaluation); not for frozen encoders
    crop_scale: float = ranged(0.8, 0, 1, lo_open=True)  # augment: the smallest fraction of an image's area a crop keeps
    hflip: bool = False  # augment: also mirror images left-right (photos: yes; digits, letters, icons: no)
    corrupt: list[str] = field(default_factory=list)  # MODALITY:KIND@LEVEL: degrade it in training (mmcli.training.degrade)
    corrupt_share: float = ranged(0.5, 0, 1)  # corrupt: the share of each batch's examples degraded (at a random level)


@dataclass
class EvalConfig:
    split: str = "test"
    metric: Optional[str] = None  # None: the task's own (accuracy, micro_f1, mae)
    batch_size: int = ranged(256, 1, 65536)


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
        return _build(Config, self.to_dict(), "")  # a copy of a checked config needs no second check


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
        return _build(typing.cast(type, hint), value, key)
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


def from_dict(values: dict[str, Any] | None, trained: bool = False) -> Config:
    """A checked Config. `trained`: the config.yaml of a run folder, whose train section
    was used and is only read back (an older mmcli allowed other ranges there, and the run
    still evaluates and predicts); its other sections are checked in full."""
    config = _build(Config, values or {}, "")
    validate(config, skip=("train",) if trained else ())
    return config


def _check_ranges(section: Any, prefix: str) -> None:
    """Every numeric key (and every item of a list key) against the range its field declares."""
    for f in dataclasses.fields(section):
        limits, value, key = f.metadata.get("range"), getattr(section, f.name), f"{prefix}.{f.name}"
        if limits is None or value is None:
            continue
        items = value if isinstance(value, list) else [value]
        lo, hi = limits.length or (1, 1)
        if not lo <= len(items) <= hi or not all(limits.holds(v) for v in items):
            raise ConfigError(f"config key '{key}' must be {limits.describe(isinstance(value, int))}, got {value!r:.80}")


# the input values of one batch of images or spectrograms, as float32: beyond this, one
# batch alone would take more than 2 GiB
BATCH_VALUES = 2**29


def check_batch_size(config: Config, kinds: set[str], skip: tuple[str, ...] = ()) -> None:
    """One batch of the data's images or spectrograms (`kinds`: the modality kinds the data
    has) must fit in memory; tabular or text data has no such bound."""
    from mmcli import kinds as registry

    inputs = [x for x in (registry.get(k).batch_input(config.data) for k in registry.names() if k in kinds) if x]
    for key, batch in (("train.batch_size", config.train.batch_size), ("eval.batch_size", config.eval.batch_size)):
        if key.split(".")[0] in skip:
            continue
        for what, per_example in inputs:
            if batch * per_example > BATCH_VALUES:
                raise ConfigError(f"config key '{key}': one batch of {batch} {what} would take "
                                  f"{batch * per_example * 4 / 2**30:.1f} GiB (at most {BATCH_VALUES * 4 // 2**30} GiB); "
                                  f"lower {key} to at most {BATCH_VALUES // per_example} or make the inputs smaller")


def validate(config: Config, skip: tuple[str, ...] = ()) -> None:
    """Each key against its declared range (except the sections in `skip`), then the checks
    that span keys; types were checked while building."""
    for section in dataclasses.fields(config):
        if section.name not in skip:
            _check_ranges(getattr(config, section.name), section.name)
    for name, mod in config.data.modalities.items():
        if mod.kind not in kinds.KINDS:
            raise ConfigError(
                f"config key 'data.modalities.{name}.kind': unknown kind '{mod.kind}' "
                f"(known: {', '.join(kinds.names())})"
            )
        problem = kinds.get(mod.kind).check_config(name, mod)
        if problem:
            raise ConfigError(problem)
    if config.data.video_sampling not in ("uniform", "segment", "rate"):
        raise ConfigError(f"config key 'data.video_sampling' must be 'uniform', 'segment' or 'rate', not "
                          f"'{config.data.video_sampling}'")
    if config.data.video_sampling == "rate" and config.data.video_fps is None:
        raise ConfigError("config key 'data.video_fps' is needed by data.video_sampling=rate: the frames to take per second")
    if config.data.on_error not in ("fail", "skip"):
        raise ConfigError("config key 'data.on_error' must be 'fail' or 'skip'")
    if config.data.missing not in ("fail", "allow"):
        raise ConfigError(f"config key 'data.missing' must be 'fail' or 'allow', not '{config.data.missing}'")
    if config.data.val_fraction + config.data.test_fraction >= 1:
        raise ConfigError(f"config keys 'data.val_fraction' + 'data.test_fraction' must be below 1 (training needs rows), "
                          f"got {config.data.val_fraction} + {config.data.test_fraction}")
    if config.data.modalities:  # declared; detected ones are checked by train and compare (check_batch_size)
        check_batch_size(config, {m.kind for m in config.data.modalities.values()}, skip)
    if config.data.win_length is not None and not 0 < config.data.win_length <= config.data.n_fft:
        raise ConfigError(f"config key 'data.win_length' must be in 1..n_fft ({config.data.n_fft}), got {config.data.win_length}")
    if config.data.window != "hann":
        from scipy.signal import get_window

        try:
            get_window(config.data.window, 16)
        except ValueError:
            raise ConfigError(f"config key 'data.window': unknown window '{config.data.window}' (e.g. hann, hamming, blackman)") from None
    _validate_train(config.train)
    if config.model.crossmodal not in (None, "align", "translate"):
        raise ConfigError(f"config key 'model.crossmodal' must be align or translate, got '{config.model.crossmodal}'")
    if config.model.loss not in (None, "mse", "huber"):
        raise ConfigError(f"config key 'model.loss' must be mse or huber (regression), got '{config.model.loss}'")
    if not config.data.label_separator:
        raise ConfigError("config key 'data.label_separator' must not be empty")


def _validate_train(train: TrainConfig) -> None:
    for key, allowed in (("class_weights", ("none", "balanced")), ("sampler", ("random", "weighted")), ("precision", ("fp32", "bf16", "fp16")),
                         ("logger", ("none", "tensorboard"))):
        if getattr(train, key) not in allowed:
            raise ConfigError(f"config key 'train.{key}' must be one of {', '.join(allowed)}, got '{getattr(train, key)}'")


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
