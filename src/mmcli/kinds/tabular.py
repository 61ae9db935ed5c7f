"""The tabular kind: several numeric and categorical columns as one modality, kept as
cells in the cache and turned into one vector per row by statistics fitted on the training
split (mmcli.data.tabular). Numeric columns that a manifest does not declare are detected
together as one modality of this kind."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from mmcli import kinds

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from mmcli.config import Config, DataConfig, ModalityConfig
    from mmcli.data.manifest import Manifest
    from mmcli.data.table import Table
    from mmcli.encoders import ModalitySpec
    from mmcli.errors import BadRow


@kinds.register
class Tabular(kinds.ModalityKind):
    name = "tabular"
    about = "numeric and categorical columns together (numeric columns are detected as one)"
    detects_numbers = True
    many_columns = True
    default_encoder = "mlp"
    corruptions = ("missing", "gaussian_noise")
    fitted = "tabular"
    value_type = str


    def export_recipe(self, run: Any, name: str, folder: Path) -> dict[str, Any] | None:
        from mmcli.export.recipes import tabular_recipe

        return tabular_recipe(run, name, folder)
    def absent(self, row: dict[str, str], m: ModalityConfig) -> bool:
        return False  # its empty cells are missing values, filled in by its statistics

    def cell_problems(self, manifest: Manifest, i: int, m: ModalityConfig) -> list[BadRow]:
        from mmcli.data.tabular import cell_problems

        # empty cells are missing values; others must be numbers where numbers belong
        return [manifest.bad(i, column, reason) for column, reason in cell_problems(manifest.rows[i], m)]

    def texts(self, rows: list[dict[str, str]], m: ModalityConfig) -> list | None:
        from mmcli.data.tabular import cells

        return cells(rows, m)

    def texts_problem(self, name: str, texts: object, n: int, m: dict) -> str | None:
        width = len(m.get("columns", []))
        ok = isinstance(texts, list) and len(texts) == n and all(
            isinstance(row, list) and len(row) == width and all(isinstance(c, str) for c in row) for row in texts)
        return None if ok else f"texts of '{name}' must be {n} rows of {width} cells"

    def fit(self, config: Config, name: str, m: ModalityConfig, texts: list) -> Any:
        from mmcli.data.tabular import TabularCodec

        return TabularCodec.fit(m, texts)

    def load_fitted(self, path: Path, config: Config, spec: ModalitySpec, source: ModalityConfig) -> Any:
        from mmcli.data.tabular import TabularCodec

        codec = TabularCodec.load(path)
        _check_codec(path, codec, spec, source)
        return codec

    def spec_extra(self, config: Config, name: str, fitted: Any) -> dict[str, Any]:
        return fitted.spec()

    def encode(self, table: Table, name: str, fitted: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        return fitted.encode(table.texts[name]), None

    def corrupt(self, table: Table, name: str, what: str, level: float, seed: int) -> None:
        from mmcli.data.tabular import numeric_columns
        from mmcli.evaluation.corrupt import corrupt_cells

        numeric = len(numeric_columns(table.modalities[name]))
        table.texts[name] = corrupt_cells(table.texts[name], numeric, what, level, seed)

    def field(self, row: dict[str, str], m: ModalityConfig) -> str:
        """The cells as JSON; present, as in training, when the row has any of the columns, even empty."""
        from mmcli.data.tabular import cells

        return json.dumps(cells([row], m)[0]) if any(c in row for c in m.columns) else ""

    def from_json(self, item: dict[str, Any], name: str, m: ModalityConfig) -> str:
        """Its columns at the top level of the object, or under the modality's name."""
        value = item.get(name, item.get(m.column))
        cells = value if isinstance(value, dict) else item
        return self.field({k: "" if v is None else v if isinstance(v, str) else json.dumps(v) for k, v in cells.items()}, m)

    def read(self, raw: str, base: Path, config: DataConfig, spec: ModalitySpec, source: ModalityConfig,
             warn: Callable[[str], None]) -> tuple[Any, list[tuple[str, str]]]:
        from mmcli.data.tabular import is_number, numeric_columns

        cells = json.loads(raw)
        order = numeric_columns(source) + list(source.categorical)
        bad = [(c, f"'{v}' is not a number") for c, v in zip(order[: spec.numeric], cells) if v and not is_number(v)]
        return cells, bad

    def stack(self, values: list[Any], spec: ModalitySpec, fitted: Any, config: DataConfig
              ) -> tuple[torch.Tensor, torch.Tensor | None]:
        width = spec.numeric + len(spec.categories)
        return fitted.encode([[""] * width if v is None else v for v in values]), None


def _check_codec(path: Path, codec: Any, spec: ModalitySpec, source: ModalityConfig) -> None:
    from mmcli.data.tabular import numeric_columns
    from mmcli.runfiles import _is_number, damaged

    if codec.numeric != numeric_columns(source) or codec.categorical != list(source.categorical):
        raise damaged(path, f"its columns ({codec.numeric + codec.categorical}) are not data.json's ({source.columns})")
    stats_ok = isinstance(codec.stats, dict) and all(
        isinstance(codec.stats.get(c), list) and len(codec.stats[c]) == 2 and all(map(_is_number, codec.stats[c]))
        and codec.stats[c][1] > 0 for c in codec.numeric)
    values_ok = isinstance(codec.values, dict) and all(
        isinstance(codec.values.get(c), list) and all(isinstance(v, str) for v in codec.values[c]) for c in codec.categorical)
    if not stats_ok or not values_ok:
        raise damaged(path, "each numeric column needs [mean, std > 0] and each categorical column a list of values")
    if spec.numeric != len(codec.numeric) or spec.categories != tuple(len(codec.values[c]) for c in codec.categorical):
        raise damaged(path, f"does not fit data.json's numeric {spec.numeric} and categories {list(spec.categories)}")
