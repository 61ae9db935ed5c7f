"""Families and named variants of a comparison.

- `unimodal`: one variant per modality (`unimodal:image`);
- `multimodal`: the default fusion set over all modalities (`multimodal:concat`, ...);
  `multimodal:all` is every registered fusion. Both add `multimodal:ensemble` (the
  unimodal runs' predictions averaged, nothing trained) when the comparison has every
  unimodal variant; named on its own, `multimodal:ensemble` brings the unimodal variants;
- `subsets`: every non-empty subset of the modalities with the configured fusion
  (`model.fusion`): the single modalities are the unimodal variants, the full set is
  `multimodal:<fusion>`, the others are named `subset:image+text`. It is what modality
  attribution (Shapley values) needs;
- `crossmodal`: `crossmodal:align` (encoders aligned contrastively, then fused with
  `model.fusion` and fine-tuned), `crossmodal:translate:<m>` for every modality m as the
  source (MCTN-style: predicts from m alone, scored with the others missing), each
  beside its baseline `unimodal:<m>`, and `crossmodal:cross_attention` (the fusion).
  `crossmodal:translate` alone takes the first modality as the source.

Any item takes an encoder choice after `@`: `unimodal:image@mobilenet_v2` (the variant's
modality of the encoder's kind), `multimodal:concat@image=mobilenet_v2,text=bigru` (by
modality), each encoder optionally with a mode, `@mobilenet_v2:frozen` (`finetuned`,
`scratch`: see `mmcli.models.ENCODER_MODES`). The variant's name carries the choice, so
several encoders of one modality compare side by side; a family item (`multimodal@...`)
gives the choice to each of its variants that has such a modality. `multimodal:ensemble`
with a choice averages the unimodal variants of those encoders
(`multimodal:ensemble@image=mobilenet_v2:frozen` averages `unimodal:image@mobilenet_v2:frozen`
with the other modalities' default runs), and `multimodal@...` adds it where they all run.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass, replace
from itertools import combinations
from typing import TYPE_CHECKING, Any, Sequence

from mmcli.errors import UsageError

if TYPE_CHECKING:
    from mmcli.config import Config

FAMILIES = ("unimodal", "multimodal", "subsets", "crossmodal")
ENSEMBLE = "ensemble"  # multimodal:ensemble, the unimodal runs averaged: trains nothing (compare/ensemble.py)


@dataclass(frozen=True)
class Variant:
    name: str
    family: str
    modalities: tuple[str, ...]
    fusion: str | None = None
    crossmodal: str | None = None  # model.crossmodal: align or translate
    encoders: tuple[tuple[str, str], ...] = ()  # (modality, registered encoder name[:mode]) chosen after '@'

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "encoders": dict(self.encoders)}

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> "Variant":
        return cls(value["name"], value["family"], tuple(value["modalities"]), value.get("fusion"), value.get("crossmodal"),
                   tuple((str(m), str(e)) for m, e in (value.get("encoders") or {}).items()))


def expand(items: list[str], modalities: list[str], fusions: list[str], default_fusions: tuple[str, ...],
           subset_fusion: str = "concat", kinds: dict[str, str] | None = None, encoders: Sequence[str] = ()) -> list[Variant]:
    """Families and variant names -> variants, in order, without repeats. `kinds` (modality
    -> kind) and `encoders` (the registered names) check the encoders chosen after '@'."""
    out: list[Variant] = []
    default = ["unimodal", "multimodal"] if len(modalities) > 1 else ["unimodal"]
    ensembles: list[tuple[int, Variant]] = []  # where each multimodal family's ensemble goes, with its encoders
    for item in items or default:
        base, at, choice = item.strip().partition("@")
        found = _expand_one(base.strip(), modalities, fusions, default_fusions, subset_fusion)
        for variant in with_encoders(found, item.strip(), choice, kinds or {}, list(encoders)) if at else found:
            if variant not in out:
                out.append(variant)
        if base.strip() in ("multimodal", "multimodal:all"):
            late = ensemble_variant(modalities)
            ensembles.append((len(out), with_encoders([late], item.strip(), choice, kinds or {}, list(encoders))[0]
                              if at else late))
    # the multimodal family shows the late-fusion baseline where it is free: every unimodal run it averages is there
    names = {v.name for v in out}
    for at_index, late in reversed(ensembles):
        if all(name in names for name in ensemble_members(late).values()) and late not in out:
            out.insert(at_index, late)
    return out


def ensemble_variant(modalities: list[str] | tuple[str, ...]) -> Variant:
    return Variant(f"multimodal:{ENSEMBLE}", "multimodal", tuple(modalities), ENSEMBLE)


def ensemble_members(v: Variant) -> dict[str, str]:
    """Modality -> the unimodal variant the ensemble averages: with an encoder chosen after
    '@' (`multimodal:ensemble@image=mobilenet_v2:frozen`), the unimodal variant of that
    encoder (`unimodal:image@mobilenet_v2:frozen`)."""
    chosen = dict(v.encoders)
    return {m: f"unimodal:{m}@{_short(chosen[m])}" if m in chosen else f"unimodal:{m}" for m in v.modalities}


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
    if item == f"multimodal:{ENSEMBLE}":  # with the unimodal runs it averages
        _need_two(modalities, item)
        return [*(Variant(f"unimodal:{m}", "unimodal", (m,)) for m in modalities), ensemble_variant(modalities)]
    if family == "multimodal" and arg:
        _need_two(modalities, item)
        if arg not in fusions or arg == "identity":
            raise UsageError(f"variant '{item}': unknown fusion '{arg}' (known: "
                             f"{', '.join([*(f for f in fusions if f != 'identity'), ENSEMBLE])})")
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


def with_encoders(variants: list[Variant], item: str, choice: str, kinds: dict[str, str], known: list[str]) -> list[Variant]:
    """The variants of `item` with the encoders chosen after its '@' (`ENCODER[:MODE]` or
    `MODALITY=ENCODER[:MODE],...`); a variant without the modalities named keeps its own."""
    from mmcli.models import ENCODER_MODES

    wanted: list[tuple[str | None, str, str]] = []  # (modality or None: by kind, short or full name, mode)
    for part in choice.split(","):
        target, eq, spec = part.strip().rpartition("=")
        name, _, mode = spec.strip().partition(":")
        if not name or (eq and not target.strip()):
            raise UsageError(f"variant '{item}': after '@' give ENCODER[:MODE] or MODALITY=ENCODER[:MODE],... "
                             "(e.g. unimodal:image@mobilenet_v2:frozen, multimodal:concat@image=mobilenet_v2)")
        if mode and mode not in ENCODER_MODES:
            raise UsageError(f"variant '{item}': unknown encoder mode '{mode}' (known: {', '.join(ENCODER_MODES)})")
        if eq and target.strip() not in kinds:
            raise UsageError(f"variant '{item}': the data has no modality '{target.strip()}' (it has: {', '.join(kinds)})")
        if name not in known and not any(f"{k}.{name}" in known for k in kinds.values()):
            raise UsageError(f"variant '{item}': unknown encoder '{name}'; {_known(kinds, known)}")
        wanted.append((target.strip() if eq else None, name, mode))
    out = [_choose(v, item, wanted, kinds, known) for v in variants]
    if all(not v.encoders for v in out):
        mods = dict.fromkeys(f"{m} ({kinds.get(m)})" for v in variants for m in v.modalities)
        raise UsageError(f"variant '{item}': the encoder after '@' is for none of its modalities, {', '.join(mods)}; "
                         f"{_known(kinds, known)}")
    return out


def _choose(variant: Variant, item: str, wanted: list[tuple[str | None, str, str]], kinds: dict[str, str],
            known: list[str]) -> Variant:
    chosen: dict[str, str] = {}
    for target, name, mode in wanted:
        for m in [target] if target else variant.modalities:
            full = name if "." in name else f"{kinds.get(m)}.{name}"
            fits = full in known and full.startswith(f"{kinds.get(m)}.")
            if m not in variant.modalities or (target is None and not fits):
                continue  # a bare encoder name goes to the modalities of its kind
            if not fits:
                raise UsageError(f"variant '{item}': '{name}' is not an encoder for {m} ({kinds[m]}); {_known(kinds, known)}")
            chosen[m] = f"{full}:{mode}" if mode else full
    if not chosen:
        return variant
    if len(variant.modalities) == 1:
        suffix = _short(chosen[variant.modalities[0]])
    else:
        suffix = ",".join(f"{m}={_short(chosen[m])}" for m in variant.modalities if m in chosen)
    return replace(variant, name=f"{variant.name}@{suffix}", encoders=tuple((m, chosen[m]) for m in variant.modalities if m in chosen))


def _short(encoder: str) -> str:
    return encoder.partition(".")[2]


def _known(kinds: dict[str, str], known: list[str]) -> str:
    per_kind = {k: [_short(n) for n in known if n.startswith(f"{k}.")] for k in dict.fromkeys(kinds.values())}
    return "known: " + "; ".join(f"{k} encoders {', '.join(names)}" for k, names in per_kind.items()) + " (mmcli list encoders)"


def variant_config(base: Config, variant: Variant, seed_index: int, kinds: dict[str, str] | None = None,
                   tuned: dict[str, Any] | None = None) -> Config:
    """The config of a variant's run with seed index `seed_index`; `tuned`: the values that
    `--tune` chose for the variant (compare.tune)."""
    if tuned:
        from mmcli.compare.tune import with_values

        base = with_values(base, tuned)
    cfg = base.copy()
    if variant.encoders:  # `@ENCODER`: also the image size and normalization of its weights
        from mmcli.models import with_encoders

        cfg = with_encoders(cfg, dict(variant.encoders), kinds or {}, list(variant.modalities))
    cfg.model.modalities = list(variant.modalities)
    if variant.fusion:
        cfg.model.fusion = variant.fusion
    cfg.model.crossmodal = variant.crossmodal
    cfg.train.seed = base.train.seed + seed_index
    return cfg


def run_dir_for(variant: Variant, seed: int, clash: bool = False) -> str:
    """The run's folder: the variant's name with ':', '+', '@''s '=' and ',' (anything but
    letters, digits, '_', '.', '@', '-') as '-'; `clash`: another variant of the plan reads
    the same, so the name's hash is added."""
    stem = re.sub(r"[^A-Za-z0-9_.@-]", "-", variant.name)
    if clash:
        stem += "-" + hashlib.sha256(variant.name.encode()).hexdigest()[:8]
    return f"runs/{stem}-seed{seed}"
