"""Families and named variants of a comparison.

- `unimodal`: one variant per modality (`unimodal:image`);
- `multimodal`: the default fusion set over all modalities (`multimodal:concat`, ...);
  `multimodal:all` is every registered fusion;
- `subsets`: every non-empty subset of the modalities with the configured fusion
  (`model.fusion`): the single modalities are the unimodal variants, the full set is
  `multimodal:<fusion>`, the others are named `subset:image+text`. It is what modality
  attribution (Shapley values) needs;
- `crossmodal`: `crossmodal:align` (encoders aligned contrastively, then fused with
  `model.fusion` and fine-tuned), `crossmodal:translate:<m>` for every modality m as the
  source (MCTN-style: predicts from m alone, scored with the others missing), each
  beside its baseline `unimodal:<m>`, and `crossmodal:cross_attention` (the fusion).
  `crossmodal:translate` alone takes the first modality as the source.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from itertools import combinations
from typing import Any

from mmcli.errors import UsageError

FAMILIES = ("unimodal", "multimodal", "subsets", "crossmodal")


@dataclass(frozen=True)
class Variant:
    name: str
    family: str
    modalities: tuple[str, ...]
    fusion: str | None = None
    crossmodal: str | None = None  # model.crossmodal: align or translate

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> "Variant":
        return cls(value["name"], value["family"], tuple(value["modalities"]), value.get("fusion"), value.get("crossmodal"))


def expand(items: list[str], modalities: list[str], fusions: list[str], default_fusions: tuple[str, ...],
           subset_fusion: str = "concat") -> list[Variant]:
    """Families and variant names -> variants, in order, without repeats."""
    out: list[Variant] = []
    default = ["unimodal", "multimodal"] if len(modalities) > 1 else ["unimodal"]
    for item in items or default:
        for variant in _expand_one(item.strip(), modalities, fusions, default_fusions, subset_fusion):
            if variant not in out:
                out.append(variant)
    return out


def subset_variant(subset: tuple[str, ...], modalities: list[str], fusion: str) -> Variant:
    """The variant that trains on exactly these modalities (in the data's order)."""
    ordered = tuple(m for m in modalities if m in subset)
    if len(ordered) == 1:
        return Variant(f"unimodal:{ordered[0]}", "unimodal", ordered)
    if len(ordered) == len(modalities):
        return Variant(f"multimodal:{fusion}", "multimodal", ordered, fusion)
    return Variant(f"subset:{'+'.join(ordered)}", "subsets", ordered, fusion)


def _expand_one(item: str, modalities: list[str], fusions: list[str], default_fusions: tuple[str, ...],
                subset_fusion: str) -> list[Variant]:
    if item == "unimodal":
        return [Variant(f"unimodal:{m}", "unimodal", (m,)) for m in modalities]
    if item == "multimodal":
        _need_two(modalities, item)
        return [Variant(f"multimodal:{f}", "multimodal", tuple(modalities), f) for f in default_fusions]
    if item == "subsets":
        _need_two(modalities, item)
        return [subset_variant(c, modalities, subset_fusion)
                for k in range(1, len(modalities) + 1) for c in combinations(modalities, k)]
    if item == "crossmodal" or item.startswith("crossmodal:"):
        _need_two(modalities, item)
        return _crossmodal(item, modalities, subset_fusion)
    family, _, arg = item.partition(":")
    if family == "unimodal" and arg:
        if arg not in modalities:
            raise UsageError(f"variant '{item}': the data has no modality '{arg}' (it has: {', '.join(modalities)})")
        return [Variant(item, "unimodal", (arg,))]
    if item == "multimodal:all":
        _need_two(modalities, item)
        return [Variant(f"multimodal:{f}", "multimodal", tuple(modalities), f) for f in fusions if f != "identity"]
    if family == "multimodal" and arg:
        _need_two(modalities, item)
        if arg not in fusions or arg == "identity":
            raise UsageError(f"variant '{item}': unknown fusion '{arg}' (known: {', '.join(f for f in fusions if f != 'identity')})")
        return [Variant(item, "multimodal", tuple(modalities), arg)]
    if family == "subset" and arg:
        parts = tuple(p.strip() for p in arg.split("+") if p.strip())
        unknown = [p for p in parts if p not in modalities]
        if unknown or len(parts) < 2 or len(set(parts)) != len(parts):
            raise UsageError(f"variant '{item}': name two or more different modalities of the data joined by '+' "
                             f"(it has: {', '.join(modalities)})")
        return [subset_variant(parts, modalities, subset_fusion)]
    raise UsageError(f"unknown family or variant '{item}' (families: {', '.join(FAMILIES)}; variants look like "
                     "unimodal:image, multimodal:concat, subset:image+text)")


def _crossmodal(item: str, modalities: list[str], fusion: str) -> list[Variant]:
    def translate(source: str) -> list[Variant]:
        if source not in modalities:
            raise UsageError(f"variant '{item}': the data has no modality '{source}' (it has: {', '.join(modalities)})")
        order = (source, *(m for m in modalities if m != source))
        return [Variant(f"crossmodal:translate:{source}", "crossmodal", order, None, "translate"),
                Variant(f"unimodal:{source}", "unimodal", (source,))]

    align = Variant("crossmodal:align", "crossmodal", tuple(modalities), fusion, "align")
    attention = Variant("crossmodal:cross_attention", "crossmodal", tuple(modalities), "cross_attention")
    if item == "crossmodal":
        return [align, *(v for m in modalities for v in translate(m)), attention]
    arg = item.partition(":")[2]
    if arg == "align":
        return [align]
    if arg == "cross_attention":
        return [attention]
    if arg == "translate" or arg.startswith("translate:"):
        return translate(arg.partition(":")[2] or modalities[0])
    raise UsageError(f"unknown cross-modal variant '{item}' (known: crossmodal:align, crossmodal:translate[:MODALITY], "
                     "crossmodal:cross_attention)")


def _need_two(modalities: list[str], item: str) -> None:
    if len(modalities) < 2:
        raise UsageError(f"'{item}' needs at least two modalities; the data has {', '.join(modalities) or 'none'}")
