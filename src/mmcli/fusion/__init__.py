"""Fusion modules: per-modality features + presence mask -> one fused vector.

Every fusion is built as `factory(in_dims, out_dim, **options)` where `in_dims` maps
each modality name to its encoder's `out_dim`, has `.out_dim`, and is called as
`fusion(features, mask)` with `features[m]` an `EncoderOutput` and `mask[m]` a bool
tensor [B] that is False where the example lacks modality m. An absent modality must
not change the output beyond its absence (tested for every registered fusion).
"""

from __future__ import annotations

from mmcli.registry import Registry

FUSIONS: Registry = Registry("fusion")
DEFAULT_FUSIONS = ("concat", "sum", "weighted", "attention")


def _register_builtins() -> None:
    from mmcli.fusion import basic, late, products, tokens  # noqa: F401  (registration side effects)


_register_builtins()
