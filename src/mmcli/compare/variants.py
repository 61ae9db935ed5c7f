"""Families and named variants of a comparison.

`unimodal` = one variant per modality; `multimodal` = the default fusion set over all
modalities; `multimodal:all` = every registered fusion. A variant is named `unimodal:image`, `multimodal:concat` and so on.
"""

from __future__ import annotations

from dataclasses import dataclass

from mmcli.errors import UsageError

FAMILIES = ("unimodal", "multimodal", "crossmodal")


@dataclass(frozen=True)
class Variant:
    name: str
    family: str
    modalities: tuple[str, ...]
    fusion: str | None = None


def expand(items: list[str], modalities: list[str], fusions: list[str], default_fusions: tuple[str, ...]) -> list[Variant]:
    """Families and variant names -> variants, in order, without repeats."""
    out: list[Variant] = []
    default = ["unimodal", "multimodal"] if len(modalities) > 1 else ["unimodal"]
    for item in items or default:
        for variant in _expand_one(item.strip(), modalities, fusions, default_fusions):
            if variant not in out:
                out.append(variant)
    return out


def _expand_one(item: str, modalities: list[str], fusions: list[str], default_fusions: tuple[str, ...]) -> list[Variant]:
    if item == "unimodal":
        return [Variant(f"unimodal:{m}", "unimodal", (m,)) for m in modalities]
    if item == "multimodal":
        _need_two(modalities, item)
        return [Variant(f"multimodal:{f}", "multimodal", tuple(modalities), f) for f in default_fusions]
    if item == "crossmodal" or item.startswith("crossmodal:"):
        raise UsageError("the crossmodal family is not available in this version (it needs the retrieval and captioning tasks)")
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
    raise UsageError(f"unknown family or variant '{item}' (families: {', '.join(FAMILIES)}; variants look like unimodal:image, multimodal:concat)")


def _need_two(modalities: list[str], item: str) -> None:
    if len(modalities) < 2:
        raise UsageError(f"'{item}' needs at least two modalities; the data has {', '.join(modalities) or 'none'}")
