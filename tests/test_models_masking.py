"""Generated from the registries: for every encoder x every multimodal fusion, a whole
Model ignores a modality that is masked out, and still uses it when it is present."""

from __future__ import annotations

import pytest
import torch

from mmcli.config import from_dict
from mmcli.encoders import ENCODERS, ModalitySpec
from mmcli.fusion import FUSIONS
from mmcli.models import build

FUSIONS_MULTI = [n for n in FUSIONS.names() if n != "identity"]
B = 4
# The pretrained backbones give tokens of the same form as the small encoders of their
# kind (checked in test_models_registry.py); crossing each with every fusion would add
# minutes of large forward passes and test the fusions again, not the backbones.
LIGHT_ENCODERS = [n for n in ENCODERS.names() if not any(t.startswith("weights:") for t in ENCODERS.entry(n).tags)]


def inputs(kind: str, spec: ModalitySpec, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
    if kind == "image":
        return torch.randn(B, 3, spec.image_size, spec.image_size, generator=gen), None
    if kind == "audio":
        return torch.randn(B, spec.n_mels, spec.frames, generator=gen), torch.full((B,), spec.frames)
    if kind == "video":
        return torch.randn(B, 3, 3, spec.image_size, spec.image_size, generator=gen), torch.full((B,), 3)
    if kind == "tabular":
        return torch.cat([torch.randn(B, spec.numeric, generator=gen), torch.randint(0, 3, (B, 1), generator=gen)], dim=1), None
    return torch.randint(1, spec.vocab_size, (B, spec.max_len), generator=gen), None


@pytest.mark.parametrize("fusion", FUSIONS_MULTI)
@pytest.mark.parametrize("encoder", LIGHT_ENCODERS)
def test_masked_modality_does_not_reach_the_output(encoder, fusion):
    kind = encoder.split(".")[0]
    other_kind = "image" if kind != "image" else "text"
    specs = {
        "x": ModalitySpec("x", kind, image_size=32, vocab_size=40, max_len=10, n_mels=16, frames=24, numeric=3, categories=(2,)),
        "y": ModalitySpec("y", other_kind, image_size=32, vocab_size=40, max_len=10, n_mels=16, frames=24),
    }
    config = from_dict({"model": {"encoders": {"x": encoder}, "fusion": fusion, "feature_dim": 16, "hidden_dim": 16}})
    torch.manual_seed(0)
    model = build(config, specs, n_outputs=5).eval()
    gen = torch.Generator().manual_seed(1)
    x, x_len = inputs(kind, specs["x"], gen)
    y, y_len = inputs(other_kind, specs["y"], gen)
    mask = {"x": torch.tensor([False, True, True, True]), "y": torch.ones(B, dtype=torch.bool)}

    def logits(x_in: torch.Tensor) -> torch.Tensor:
        lengths = {k: v for k, v in (("x", x_len), ("y", y_len)) if v is not None}
        with torch.no_grad():
            return model({"x": x_in, "y": y, "lengths": lengths, "mask": mask})

    before = logits(x)
    x2, _ = inputs(kind, specs["x"], torch.Generator().manual_seed(99))
    after = logits(x2)
    assert before.shape == (B, 5)
    assert torch.allclose(before[0], after[0], atol=1e-6), "a masked modality changed the output"
    assert not torch.allclose(before[1:], after[1:], atol=1e-6), "a present modality had no effect"


@pytest.mark.parametrize("fusion", FUSIONS_MULTI)
def test_every_fusion_backpropagates_to_every_encoder(fusion):
    specs = {kind: ModalitySpec(kind, kind, image_size=32, vocab_size=40, max_len=10, n_mels=16, frames=24)
             for kind in ("image", "text", "audio")}
    config = from_dict({"model": {"fusion": fusion, "feature_dim": 16, "hidden_dim": 16}})
    torch.manual_seed(0)
    model = build(config, specs, n_outputs=5)
    gen = torch.Generator().manual_seed(1)
    batch = {"lengths": {}, "mask": {k: torch.ones(B, dtype=torch.bool) for k in specs}, "label": torch.arange(B) % 5}
    for kind, spec in specs.items():
        batch[kind], length = inputs(kind, spec, gen)
        if length is not None:
            batch["lengths"][kind] = length
    from mmcli.heads import TASKS

    model.loss(batch, TASKS.get("classification")()).backward()
    for name, encoder in model.encoders.items():
        grads = [p.grad for p in encoder.parameters() if p.grad is not None]
        assert grads and sum(float(g.abs().sum()) for g in grads) > 0, f"no gradient reaches the {name} encoder"
        assert all(torch.isfinite(g).all() for g in grads)
