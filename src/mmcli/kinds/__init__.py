"""Modality kinds: everything one kind of input means, one module per kind, one registry.

A kind says how a column of it is found in a manifest (file extensions, or what the values
look like), what a cell holds (a file decoded into the cache, a text, several numeric and
categorical columns), how a row is stored in a cache entry (its arrays' dtypes and
shapes), what is fitted on the training split (a tokenizer, statistics), how its inputs
reach the model (encoded, padded to a batch's longest, normalised on the device, zeroed
where absent), how `evaluate --corrupt` degrades it, which encoder it gets by default and
which `predict` options read it. The rest of mmcli asks the kind (`get(name)`) and never
tests a kind's name, so a new kind is one module here plus one import line at the end of
this file (docs/adding-a-kind.md).

This module is imported by the configuration, so it stays cheap: the kinds import torch
and the decoders inside their methods.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from mmcli.config import Config, DataConfig, ModalityConfig
    from mmcli.data.manifest import Manifest
    from mmcli.data.table import Table
    from mmcli.encoders import ModalitySpec
    from mmcli.errors import BadRow
    from mmcli.pipeline import RunData


class ModalityKind:
    """The defaults of every kind; a kind overrides what differs. Class attributes are
    facts the core reads; methods are what it calls."""

    name: ClassVar[str]
    about: ClassVar[str] = ""
    extensions: ClassVar[frozenset[str]] = frozenset()  # file suffixes that make a column this kind (detection)
    detect_rank: ClassVar[int] = 50  # with files of several kinds' suffixes, the lower rank is tried first
    from_files: ClassVar[bool] = False  # a cell names a file, decoded into the cache
    preprocess_keys: ClassVar[tuple[str, ...]] = ()  # data settings of its own that change what is cached
    plural: ClassVar[str] = "files"  # what its files are called in messages ("images", "recordings")
    many_columns: ClassVar[bool] = False  # the modality reads several columns (data.modalities.X.columns)
    detects_numbers: ClassVar[bool] = False  # numeric columns, found together, become one modality of this kind
    fallback: ClassVar[bool] = False  # a column that looks like no other kind is this one
    default_encoder: ClassVar[str] = ""  # the registered `<kind>.<name>` encoder used unless the config says
    old_default_encoder: ClassVar[str | None] = None  # the default of runs saved before train.augment existed
    corruptions: ClassVar[tuple[str, ...]] = ()  # what `--corrupt MODALITY:KIND@LEVEL` can do to it
    corrupts_stored: ClassVar[bool] = False  # its corruptions act on the stored inputs, so training can apply them
    padded_to_batch: ClassVar[bool] = False  # inputs are cut to the longest of a batch (their lengths kept)
    zero_missing: ClassVar[bool] = True  # an absent modality's inputs are zeroed (text: its padding ids already are)
    fitted: ClassVar[str | None] = None  # what is fitted on the training split, the prefix of its file in a run
    tokenized: ClassVar[bool] = False  # its inputs are token ids of a tokenizer (a pretrained text model's, too)
    caption_source: ClassVar[bool] = False  # a captioning model can describe it
    caption_target: ClassVar[bool] = False  # a captioning model can write it
    predict_option: ClassVar[tuple[str, str] | None] = None  # (`predict` option for one example, its help)
    query_help: ClassVar[str | None] = None  # `predict --query-<kind>`'s help; None: no such option
    value_type: ClassVar[type] = Path  # what the predict options take: a path or a string
    seconds_limit: ClassVar[bool] = False  # cut at data.max_seconds, derived from the files' durations (`duration`)
    export_refusal: ClassVar[str] = "export has no recipe for this kind's preprocessing"  # why `mmcli export` cannot
    windowed: ClassVar[bool] = False  # a cell may name part of its file: start/end columns, `#t=` (data/window.py)

    # -- a manifest ---------------------------------------------------------------------
    def columns(self, m: ModalityConfig) -> list[str]:
        """The manifest columns a modality reads."""
        if self.many_columns:
            return list(m.columns)
        return [m.column] + [c for c in (m.start, m.end) if c]

    def matches(self, suffixes: list[str]) -> bool:
        """Detection: a column whose values are mostly files of this kind's extensions."""
        return bool(self.extensions) and sum(s in self.extensions for s in suffixes) > len(suffixes) / 2

    def absent(self, row: dict[str, str], m: ModalityConfig) -> bool:
        """The row lacks the modality (an empty cell or a missing key)."""
        return not row.get(m.column, "").strip()

    def cell_problems(self, manifest: Manifest, i: int, m: ModalityConfig) -> list[BadRow]:
        """Cheap checks of a row's cell before anything is decoded."""
        value = manifest.rows[i].get(m.column, "")
        if not value.strip():
            return [manifest.bad(i, m.column, f"{m.kind} is empty")]
        if not self.from_files:
            return []
        from mmcli.data.decode import file_problem
        from mmcli.data.manifest import media_path

        if self.windowed:
            from mmcli.data.window import seconds

            for column in (m.start, m.end):
                try:
                    seconds(manifest.rows[i].get(column, "") if column else "")
                except ValueError as exc:
                    return [manifest.bad(i, column, str(exc))]
            try:
                value = self.clip(self.field(manifest.rows[i], m))[0]
            except ValueError as exc:  # the cell's #t= fragment, or an end before the start
                return [manifest.bad(i, m.end or m.start or m.column, str(exc))]
        # absolute, ~ and ../ paths and symbolic links may lead anywhere the user can read,
        # as in other tools; only what is not a readable regular file is refused
        problem = file_problem(media_path(manifest.root, value))
        return [manifest.bad(i, m.column, f"{problem}: {value}")] if problem else []

    def clip(self, cell: str) -> tuple[str, Any]:
        """A cell into the file it names and the part of it (a window in seconds, None:
        all of it); ValueError with the reason."""
        if not self.windowed:
            return cell, None
        from mmcli.data.window import split

        return split(cell)

    def companions(self, name: str, m: ModalityConfig, paths: list[Path]) -> dict[str, ModalityConfig]:
        """Modalities that a detected column of this kind brings beside its own (a clip's
        sound track); `paths`: its first files."""
        return {}

    def texts(self, rows: list[dict[str, str]], m: ModalityConfig) -> list | None:
        """What a table keeps of the rows as text (None: the kind is decoded into arrays)."""
        return None

    def check_config(self, name: str, m: ModalityConfig) -> str | None:
        """What is wrong with a declared modality (data.modalities.NAME), or None."""
        if self.many_columns:
            stray = [c for c in m.categorical if c not in m.columns]
            if not m.columns or stray:
                return (f"config key 'data.modalities.{name}': a {m.kind} modality lists its columns under columns, "
                        "and categorical names some of them" + (f" ({stray} are not in columns)" if stray else ""))
        elif not m.column:
            return f"config key 'data.modalities.{name}.column' is missing: the column that holds the {m.kind}"
        if (m.start or m.end) and not self.windowed:
            return (f"config key 'data.modalities.{name}.{'start' if m.start else 'end'}': a {m.kind} modality has "
                    f"no clip window (kinds that do: {', '.join(with_trait('windowed'))})")
        return None

    def source(self, m: ModalityConfig) -> dict[str, Any]:
        """Where a modality comes from in a manifest, as data.json and the cache key write it."""
        return ({"column": m.column} | ({"columns": m.columns, "categorical": m.categorical} if self.many_columns else {})
                | {k: c for k, c in (("start", m.start), ("end", m.end)) if c})

    # -- decoding into the cache ---------------------------------------------------------
    def arrays(self) -> dict[str, tuple[str, int]]:
        """The arrays of one row in a cache entry: name suffix -> (dtype, dimensions)."""
        return {}

    def decode(self, path: Path, config: DataConfig, window: Any = None) -> tuple[torch.Tensor, int]:
        """A file into (tensor, length); raise mmcli.data.decode.DecodeError with the reason.
        `window`: a windowed kind's part of the file, (start, end) in seconds, either None
        (only passed when there is one, so a kind without windows may leave it out)."""
        raise NotImplementedError(f"the {self.name} kind is not read from files")

    def decode_cell(self, root: Path, cell: str, config: DataConfig) -> tuple[torch.Tensor, int, list[str]]:
        """A cell (a path relative to `root`, with its window where the kind has one) as
        decode_file reads it; DecodeError with the reason."""
        from mmcli.data.decode import DecodeError, decode_file
        from mmcli.data.manifest import media_path

        try:
            path, window = self.clip(cell)
        except ValueError as exc:
            raise DecodeError(str(exc)) from None
        return decode_file(self.name, media_path(root, path), config, window)

    def blank(self, config: DataConfig) -> tuple[torch.Tensor, int]:
        """What an absent file stores (its mask hides it)."""
        raise NotImplementedError(f"the {self.name} kind is not read from files")

    def warm_up(self, config: DataConfig) -> None:
        """Load what the decoder imports on first use, before preprocessing forks its workers."""

    def batch_input(self, config: DataConfig) -> tuple[str, int] | None:
        """(what, values per example) of one example's input, to bound a batch's memory;
        None: no such bound (or not known yet)."""
        return None

    def pictures(self, config: DataConfig) -> int:
        """Pictures in one example (a clip's frames): an encoder that reads each one runs
        that many times per example, so inference batches hold that many fewer examples."""
        return 1

    def cache_shape(self, config: DataConfig) -> tuple[list[int], str] | None:
        """The shape of a row the config gives, and the keys that give it, checked against a
        cache folder given as data; None: nothing to check."""
        return None

    def array_problem(self, shape: list[int]) -> str | None:
        """What is wrong with a cached array's shape, beyond its number of dimensions."""
        return None

    def texts_problem(self, name: str, texts: object, n: int, m: dict) -> str | None:
        """What is wrong with a cached table's texts of a modality of this kind, or None."""
        return None

    # -- fitted on the training split, encoded for the model ------------------------------
    def fit(self, config: Config, name: str, m: ModalityConfig, texts: list) -> Any:
        """What is fitted on the training rows' texts (a tokenizer, statistics)."""
        return None

    def fit_key(self, config: Config, name: str) -> str | None:
        """What, beyond the data settings, changes what is fitted for a modality (a
        pretrained model's own tokenizer)."""
        return None

    def load_fitted(self, path: Path, config: Config, spec: ModalitySpec, source: ModalityConfig) -> Any:
        raise NotImplementedError(f"the {self.name} kind fits nothing")

    def spec_extra(self, config: Config, name: str, fitted: Any) -> dict[str, Any]:
        """What the fitted part adds to the encoder's ModalitySpec; by default the chosen
        encoder's `backbone_config(options)` where it has one (a pretrained model's
        architecture, so that a saved run rebuilds the tower without the model's files)."""
        from mmcli.encoders import chosen_hook

        found = chosen_hook(config, name, self.name, "backbone_config")
        return {"backbone_config": found[0](found[1])} if found is not None else {}

    def encode(self, table: Table, name: str, fitted: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A table's inputs of a modality for the model, and their lengths (None: fixed size)."""
        tensor = table.tensors[name]
        return tensor, table.tensors.get(f"{name}.lengths")

    def normalize(self, x: torch.Tensor, config: DataConfig) -> torch.Tensor:
        """A batch's stored values (uint8, float16) to what the encoder reads, on its device."""
        return x

    def feature_key(self, config: Config) -> str:
        """Settings outside the stored values that change a frozen encoder's features."""
        return ""

    def input_augment(self, config: Config) -> Any:
        """A module that augments a batch's inputs in training, or None."""
        return None

    def wanted_preprocessing(self, config: Config, name: str) -> tuple[str, dict[str, Any]] | None:
        """(what wants them, the data settings) that a modality's pretrained encoder reads:
        an architecture's image size and normalisation; None: nothing."""
        return None

    # -- length limits -------------------------------------------------------------------
    def derived_limit(self, config: DataConfig) -> bool:
        """The kind's length limit is unset in `config`, so it is derived from the data."""
        return False

    def duration(self, path: Path) -> float | None:
        """Seconds a file of the kind holds, from its header (None: unknown)."""
        return None

    def cut(self, config: Config, table: Table, name: str, rows: list[int], fitted: Any) -> tuple[int, str] | None:
        """How many of `rows` the kind's length limit cuts, and the limit's setting."""
        return None

    def defaults_from_data(self, config: Config, data: RunData, names: list[str], log: Any) -> None:
        """Choose, in `config`, what the kind derives from the training split of `data` for
        `names`, its modalities whose encoder the config leaves unset; `log`: a logger, or
        None to say nothing."""

    def finish_fit(self, config: Config, fitted: dict[str, Any], present: dict[str, list]) -> None:
        """After every modality of the kind is fitted (`present`: each one's present
        training texts): settings derived from all of them together."""

    def show(self, table: Table, name: str, row: int) -> Any:
        """What `evaluate --plots` draws of a row's value: an image array (H x W x 3 uint8, or
        H x W floats), a string, or None (nothing to show)."""
        return None

    # -- robustness ----------------------------------------------------------------------
    def corrupt(self, table: Table, name: str, what: str, level: float, seed: int) -> None:
        """Degrade a modality of `table` (a copy whose tensors and texts may be replaced)."""
        raise NotImplementedError(f"the {self.name} kind has no corruptions")

    # -- predict -------------------------------------------------------------------------
    def export_recipe(self, run: Any, name: str, folder: Path) -> dict[str, Any] | None:
        """preprocessing.json's recipe for modality `name` of `run` (`mmcli export`, mmcli.export.recipes):
        how a raw value becomes its tensors without mmcli; None: the kind cannot be exported
        (`export_refusal` says why)."""
        return None

    def field(self, row: dict[str, str], m: ModalityConfig) -> str:
        """A modality's field of an example given as a row: its cell, with the clip window
        of its start/end columns where it has them (checked when the cell is read)."""
        value = row.get(m.column, "")
        if not (m.start or m.end) or not value.strip():
            return value
        from mmcli.data.window import with_window

        return with_window(value, row.get(m.start, "") if m.start else "", row.get(m.end, "") if m.end else "")

    def from_json(self, item: dict[str, Any], name: str, m: ModalityConfig) -> str:
        """A modality's field of an example given as a JSON object."""
        value = item.get(name, item.get(m.column))
        if value is None:
            return ""
        window = {c: "" if item.get(c) is None else str(item[c]) for c in (m.start, m.end) if c}
        return self.field({m.column: str(value)} | window, m)

    def read(self, raw: str, base: Path, config: DataConfig, spec: ModalitySpec, source: ModalityConfig,
             warn: Callable[[str], None]) -> tuple[Any, list[tuple[str, str]]]:
        """An example's field to its value, and the problems found as (column, reason)."""
        if not self.from_files:
            return raw, []
        from mmcli.data.decode import DecodeError

        try:
            tensor, length, warned = self.decode_cell(base, raw, config)
        except DecodeError as exc:
            return None, [(source.column, f"{exc}: {raw}")]
        for note in warned:
            warn(f"{raw}: {note}")
        return (tensor, length), []

    def stack(self, values: list[Any], spec: ModalitySpec, fitted: Any, config: DataConfig
              ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The examples' values (None where absent) as a batch of inputs, and their lengths."""
        import torch

        blank = self.blank(config)
        pairs = [blank if v is None else v for v in values]
        inputs = torch.stack([p[0] for p in pairs]) if pairs else blank[0][None][:0]
        return inputs, torch.tensor([int(p[1]) for p in pairs]) if ".lengths" in self.arrays() else None


KINDS: dict[str, ModalityKind] = {}


def register(cls: type[ModalityKind]) -> type[ModalityKind]:
    """Class decorator: add a kind to the registry under its `name`."""
    KINDS[cls.name] = cls()
    return cls


def get(name: str) -> ModalityKind:
    try:
        return KINDS[name]
    except KeyError:
        raise KeyError(f"unknown modality kind '{name}' (known: {', '.join(KINDS)})") from None


def names() -> tuple[str, ...]:
    return tuple(KINDS)


def with_trait(trait: str) -> list[str]:
    """The kinds whose class attribute `trait` is true, in registry order."""
    return [n for n, k in KINDS.items() if getattr(k, trait)]


# the built-in kinds: a new kind is one module and one line here
from mmcli.kinds import image, text, audio, tabular, video  # noqa: E402,F401,I001
