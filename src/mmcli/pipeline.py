"""The shared road from data to a model's inputs, for training and for a saved run.

Training: preprocess (through the cache) -> split -> label map and tokenizers fitted on
the training split -> `Encoded` tensors per split. A saved run: the same steps with the
run's own label map and tokenizers, so evaluate and predict see what training saw.
"""

from __future__ import annotations

import logging
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path


from mmcli import runs
from mmcli.config import Config, ModalityConfig, check_batch_size
from mmcli.data.dataset import Encoded, encode_table, table_sources
from mmcli.training import degrade
from mmcli.data.decode import audio_frames
from mmcli.data.preprocess import BUILTIN_PREFIX, Progress, preprocess, warn_skipped
from mmcli.data.splits import identity_groups, source_groups, task_splits, validation_sources, warn_small_validation
from mmcli.data.table import Table
from mmcli.encoders import ModalitySpec
from mmcli.kinds import KINDS
from mmcli.errors import BadRow, DataError, MmcliError, UsageError
from mmcli.heads import make_task
from mmcli.models import Model, chosen_modalities



@dataclass
class RunData:
    config: Config
    table: Table
    splits: list[str]
    modalities: list[str]
    labels: list[str]
    tokenizers: dict = field(default_factory=dict)
    specs: dict[str, ModalitySpec] = field(default_factory=dict)
    target_state: dict = field(default_factory=dict)  # the task's state (target.json)
    val_sources: int | None = None  # sources in the validation split (verification: identities), as split
    groups: list[int] | None = None  # each row's source (`splits.source_groups`; None: every row its own)

    @property
    def task(self):
        return make_task(self.config, self.target_state)

    def part(self, split: str | None) -> Encoded:
        """The rows of one split (all rows for None), encoded for the model."""
        rows = [i for i, s in enumerate(self.splits) if split is None or s == split]
        task, table = self.task, self.table.subset(rows)
        return encode_table(table, self.modalities, self.tokenizers, lambda v: task.encode(v, self.labels),
                            task.target_values(table))

    def source_of(self, split: str) -> dict[str, int]:
        """Row id -> its source's number, for the rows of one split (a row without a shared
        source is a source of its own)."""
        return {self.table.ids[i]: (self.groups[i] if self.groups is not None else -1 - i)
                for i, s in enumerate(self.splits) if s == split}

    def counts(self) -> dict[str, int]:
        return {s: self.splits.count(s) for s in ("train", "val", "test")}


def split_seed(config: Config) -> int:
    return config.train.seed if config.data.split_seed is None else config.data.split_seed


def make_specs(config: Config, table: Table, modalities: list[str], tokenizers: dict) -> dict[str, ModalitySpec]:
    d = config.data
    specs = {}
    for name in modalities:
        kind = table.modalities[name].kind
        extra = {"vocab_size": d.vocab_size, **KINDS[kind].spec_extra(config, name, tokenizers.get(name))}
        specs[name] = ModalitySpec(name=name, kind=kind, image_size=d.image_size, max_len=typing.cast(int, d.text_max_len),
                                   n_mels=d.n_mels, frames=audio_frames(d), **extra)
    return specs


def modality_kinds(config: Config) -> dict[str, str]:
    """The data's modalities and their kinds, read cheaply before preprocessing (to set
    what depends on them, such as a pretrained backbone's image size); {} when the data
    cannot be read yet: preprocessing reports why, with the file, row and column."""
    from mmcli.data.manifest import detect_modalities, read_manifest

    source = config.data.manifest
    if source == f"{BUILTIN_PREFIX}toy-captions":
        from mmcli.data.toy import CAPTION_KINDS

        return dict(CAPTION_KINDS)
    if source is None or source.startswith(BUILTIN_PREFIX):
        from mmcli.data.toy import TOY_KINDS

        return dict(TOY_KINDS)
    try:
        path = Path(source)
        if path.is_dir() and (path / "table.json").is_file():
            import json

            return {n: m["kind"] for n, m in json.loads((path / "table.json").read_text())["modalities"].items()}
        return {n: m.kind for n, m in detect_modalities(read_manifest(path), config.data).items()}
    except (MmcliError, OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return {}  # a damaged table.json is named when it is loaded


def fit_tokenizers(config: Config, table: Table, modalities: list[str], train_rows: list[int]) -> dict:
    """What each modality's kind fits on the training rows (a text modality's tokenizer, a
    tabular one's statistics), by modality; then what a kind derives from all of its
    modalities together (an unset data.text_max_len, mmcli.data.lengths)."""
    fitted: dict = {}
    for kind_name, kind in KINDS.items():  # every kind finishes, with none of its modalities too (a limit unused)
        names = [n for n in modalities if table.modalities[n].kind == kind_name and kind.fitted]
        own = {n: kind.fit(config, n, table.modalities[n], [table.texts[n][i] for i in train_rows]) for n in names}
        present = {n: [table.texts[n][i] for i in train_rows if n not in table.present or bool(table.present[n][i])]
                   for n in names}
        kind.finish_fit(config, own, present)
        fitted.update(own)
    return {n: fitted[n] for n in modalities if n in fitted}


def prepare_training(config: Config, cache_dir: str | None = None, workers: int = 1,
                     progress: Progress | None = None, report: bool = True) -> RunData:
    """Preprocess, split, fit labels and tokenizers. The returned RunData's config is a copy
    of `config` with the length limits it left unset derived from the data (mmcli.data.lengths).
    `report`: say what the length limits cut (False where another process said it already)."""
    config = config.copy()
    derived = {name: kind.derived_limit(config.data) for name, kind in KINDS.items()}
    task = make_task(config)
    table = preprocess(config.data.manifest, config.data, cache_dir, workers, progress, task.needs_label,
                       task.length_percentile)
    check_batch_size(config, {m.kind for m in table.modalities.values()})  # again, with max_seconds derived
    values = task.target_values(table)
    warn_skipped(table, cache_dir, values if task.stratify else None, config.data.label)  # before any error below
    if values is None:
        raise DataError(f"{table.source}: no label column '{config.data.label}'")
    groups = source_groups(table, task.crossmodal)
    splits = task_splits(task, values, table.given_splits, split_seed(config), config.data.val_fraction,
                         config.data.test_fraction, table.source, groups, config.data.label)
    counted = identity_groups(values) if task.disjoint_labels else groups  # verification validates on identities
    if report:
        warn_small_validation(splits, counted, config.data.val_fraction, table.source,
                              "identities" if task.disjoint_labels else "sources")
    modalities = chosen_modalities(config, list(table.modalities))
    degrade.check(config.train.corrupt, {n: m.kind for n, m in table.modalities.items()})  # before anything trains
    train_rows = [i for i, s in enumerate(splits) if s == "train"]
    if not train_rows:
        raise DataError(f"{table.source}: the training split is empty")
    train_values = [values[i] for i in train_rows]
    labels = task.names(train_values)
    if not labels:
        raise DataError(f"{table.source}: the training split has no label in column '{config.data.label}'")
    if task.name == "classification" and len(labels) == 1:  # the loss is 0 and every score perfect from the start
        logging.getLogger("mmcli").warning(
            "%s: only one class ('%s') in the training data: the model can only predict it, so its accuracy "
            "(1.0) and other metrics mean nothing; is '%s' the label column?", table.source, labels[0], config.data.label)
    doubt = task.doubt(train_values)
    _check_targets(task, table, splits, labels, doubt=doubt)  # before fit_state: it reads only usable values
    if report and doubt:  # usable, but perhaps not as meant
        logging.getLogger("mmcli").warning("%s, column '%s': %s", table.source, config.data.label, doubt)
    state = task.fit_state(train_values, labels)
    tokenizers = fit_tokenizers(config, table, modalities, train_rows)
    if report:  # a derived limit said what it cuts as it was derived
        warn_cutoffs(config, table, [n for n in modalities if not derived.get(table.modalities[n].kind)], tokenizers,
                     train_rows)
    specs = make_specs(config, table, modalities, tokenizers)
    return RunData(config, table, splits, modalities, labels, tokenizers, specs, state, validation_sources(splits, counted),
                   groups)


def warn_cutoffs(config: Config, table: Table, modalities: list[str], tokenizers: dict, rows: list[int]) -> None:
    """Say how many training examples a length limit set in the config cuts (data.text_max_len
    tokens, data.max_seconds of audio): a limit that cuts most of the data is worth knowing."""
    for name in modalities:
        kind = table.modalities[name].kind
        have = [i for i in rows if bool(table.present[name][i])] if name in table.present else rows
        if not have:
            continue
        found = KINDS[kind].cut(config, table, name, have, tokenizers.get(name))
        if found is None:
            continue
        cut, limit = found
        if cut:
            logging.getLogger("mmcli").warning(
                "%s: %d of the %d training examples reach %s and are cut there; raise it to keep more of them",
                name, cut, len(have), limit)


def _check_targets(task, table: Table, splits: list[str], labels: list[str], rows: list[int] | None = None,
                   doubt: str | None = None) -> None:
    """Every row's target must be usable by the task (a number for regression, a label seen
    in training for classification); all problems are reported at once, with the task's
    `doubt` about the targets where it has one. `rows`: the row of the data each row of
    `table` came from, where `table` is a subset."""
    problems = task.check(task.target_values(table), splits, labels)
    if problems:
        column = task.config.data.label
        bad = [BadRow(table.source, (i if rows is None else rows[i]) + 1, column, reason) for i, reason in problems]
        what = "labels unseen in training" if task.name == "classification" else f"targets the {task.name} task cannot use"
        raise DataError(f"{table.source}: {what}" + (f"; {doubt}" if doubt else ""), bad)


def fitted_file(name: str, kind: str) -> str:
    """What was fitted on the training split for a modality: a tokenizer or tabular statistics."""
    return f"{KINDS[kind].fitted}-{name}.json"


def source_dict(m: ModalityConfig) -> dict:
    """Where a modality comes from in a manifest, for data.json."""
    return KINDS[m.kind].source(m)


def save_run_inputs(run_dir: Path, rd: RunData) -> None:
    """Everything but the weights: config, labels, tokenizers, data description."""
    config = rd.config.copy()
    manifest = config.data.manifest
    if manifest and not manifest.startswith(BUILTIN_PREFIX):
        config.data.manifest = os.path.relpath(Path(manifest).resolve(), run_dir.resolve())
    runs.write_atomic(run_dir / "config.yaml", config.to_yaml())
    runs.write_json(run_dir / "labels.json", rd.labels)
    runs.write_json(run_dir / "target.json", {"task": rd.config.model.task, **rd.target_state})
    for name, tok in rd.tokenizers.items():
        runs.write_atomic(run_dir / fitted_file(name, rd.table.modalities[name].kind), tok.to_str())
    runs.write_json(run_dir / "data.json", {
        "source": config.data.manifest or f"{BUILTIN_PREFIX}toy",  # relative to the run folder
        "data_key": rd.table.key,
        "modalities": {n: runs.spec_dict(rd.specs[n]) | source_dict(rd.table.modalities[n]) for n in rd.modalities},
        "splits": rd.counts(),
        "n_classes": len(rd.labels),
    })
    from mmcli.data import membership

    runs.write_json(run_dir / membership.FILE,
                    membership.record(rd.table, rd.splits, rd.modalities, rd.task.target_values(rd.table)))


@dataclass
class LoadedRun:
    path: Path
    config: Config
    labels: list[str]
    specs: dict[str, ModalitySpec]
    sources: dict[str, ModalityConfig]  # where each modality comes from in a manifest
    tokenizers: dict
    model: Model
    weights_meta: dict[str, str]
    target_state: dict = field(default_factory=dict)
    weights_file: Path = Path()  # the weights loaded (a search index records their checksum)

    @property
    def columns(self) -> dict[str, str]:
        """Each modality's column (a tabular modality's columns, joined by commas)."""
        return {n: m.column or ",".join(m.columns) for n, m in self.sources.items()}

    @property
    def task(self):
        return make_task(self.config, self.target_state)


def load_run(run_dir: Path, weights: str = "best") -> LoadedRun:
    """A saved run, every file checked as it is read (mmcli.runfiles): a damaged or foreign
    file is a UsageError that names it."""
    from mmcli import runfiles

    runs.check_run_dir(run_dir)
    config = runfiles.read_config(run_dir)
    specs, columns, n_classes = runfiles.read_data(run_dir, config)
    config = runfiles.with_defaults_of_then(run_dir / "config.yaml", config, specs)
    labels = runfiles.read_labels(run_dir, n_classes)
    tokenizers = runfiles.read_fitted(run_dir, config, specs, columns)
    state = runfiles.read_target(run_dir, config, labels)
    task = make_task(config, state)
    task.check_state(str(run_dir))
    model = runfiles.build_model(run_dir, config, specs, task.n_outputs(labels))
    meta = runs.load_weights(model, run_dir / f"{weights}.safetensors")
    model.eval()
    return LoadedRun(run_dir, config, labels, specs, columns, tokenizers, model, meta, state,
                     run_dir / f"{weights}.safetensors")


def run_manifest(run: LoadedRun) -> str:
    """The training data of a run, resolved from the run folder."""
    manifest = run.config.data.manifest
    if manifest is None or manifest.startswith(BUILTIN_PREFIX):
        return manifest or f"{BUILTIN_PREFIX}toy"
    return str((run.path / manifest).resolve())


@dataclass
class RunRows:
    """The rows `data_for_run` chose, encoded, with what the user must be told about them."""

    encoded: Encoded
    table: Table
    split: str  # the split scored, or "all" for every row of other data
    warnings: list[str] = field(default_factory=list)
    left_out: int = 0  # rows of other data that the run was trained or validated on


def data_for_run(run: LoadedRun, data: str | None, split: str | None, cache_dir: str | None = None,
                 progress: Progress | None = None, require_label: bool = True, transform=None) -> RunRows:
    """Rows of `data` (default: the run's training data) encoded as the run expects.

    On the run's own data: the rows of `split` (default test) recorded in the run's
    splits.json (mmcli.data.membership), or drawn again as in training for a run folder
    without it. On other data: the split column's rows when it has one, else every row
    (asking for a split of data without a split column is an error); either way without
    the rows the run was trained or validated on.
    """
    same = data is None
    source = run_manifest(run) if same else data
    config = run.config.copy()
    if not same:
        config.data.modalities = {n: m for n, m in run.sources.items()}
        config.data.missing = "allow"  # as predict does: a row lacking a modality is scored with it masked
    task = run.task
    require_label = require_label and task.needs_label
    table = preprocess(source, config.data, cache_dir, 1, progress, require_label)
    missing = [n for n in run.specs if n not in table.modalities]
    if missing:
        raise DataError(f"{source}: lacks the modalities this run uses: {', '.join(missing)}")
    scope, chosen = _choose_rows(run, table, same, split, str(source))
    table = table.subset(chosen.rows)
    values = task.target_values(table)
    if require_label and values is not None:
        _check_targets(task, table, ["given"] * len(table), run.labels, chosen.rows, doubt=task.doubt(run.labels))
    sources = table_sources(table, list(table.modalities))  # of the clean rows: a corruption differs per row
    if transform is not None:  # drop or corrupt a modality (robustness evaluation)
        table = transform(table)
    targets = (lambda v: task.encode(v, run.labels)) if values is not None else None
    encoded = encode_table(table, list(run.specs), run.tokenizers, targets, values, sources)
    return RunRows(encoded, table, scope, chosen.warnings, chosen.left_out)


def _choose_rows(run: LoadedRun, table: Table, same: bool, split: str | None, source: str):
    """(the split scored, or "all"; the rows of `table` to score and what to say about them)."""
    from mmcli.data import membership

    task, config = run.task, run.config
    targets = task.target_values(table)
    has_column = table.given_splits is not None and any(table.given_splits)
    if not same and not has_column:
        if split is not None:
            raise UsageError(f"{source}: has no split column, so --split {split} selects nothing; leave --split out "
                             f"to score every row (rows this run was trained on are left out)")
        rows, scope = list(range(len(table))), "all"
    else:
        scope = split or "test"
        splits = task_splits(task, targets, table.given_splits, split_seed(config), config.data.val_fraction,
                             config.data.test_fraction, table.source, source_groups(table, task.crossmodal), config.data.label)
        rows = [i for i, s in enumerate(splits) if s == scope]
    record = membership.read_record(run.path)
    if record is None:
        chosen = membership.Selection(rows)
        if same:
            chosen.warnings.append(f"{run.path} records no split (an mmcli older than splits.json wrote it): the "
                                   f"{scope} split was drawn again from {source} as it is now; rows added since "
                                   f"training may have been training rows")
    elif same:
        chosen = membership.own_rows(record, table, lambda some: membership.fingerprints(
            table, list(run.specs), targets, some), scope, rows, source, run.path)
    else:
        chosen = membership.unseen_rows(record, table, membership.fingerprints(table, list(run.specs), targets, rows),
                                        rows, source)
    if not chosen.rows:
        raise DataError(f"{source}: the {scope} split is empty")
    return scope, chosen
