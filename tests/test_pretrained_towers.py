"""image.hf and audio.hf: tiny random Hugging Face models saved into a folder (no download)
train through the real CLI, frozen (through the feature cache) and fine-tuned; a model
that cannot be found offline fails at once, before any data is decoded."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers", reason="the hf extra: pip install -e '.[hf]'")

from mmcli.encoders import ENCODERS, ModalitySpec  # noqa: E402
from mmcli.errors import ConfigError  # noqa: E402

TINY = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 37}
TEXT = {**TINY, "vocab_size": 99, "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1}  # a dual model's text tower
VISION = {**TINY, "image_size": 32, "patch_size": 8}
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]


def _configs() -> dict:
    t = transformers
    return {
        "vit": t.ViTConfig(**VISION),
        "clip": t.CLIPConfig(vision_config=VISION, text_config=TEXT, projection_dim=16),
        "siglip": t.SiglipConfig(vision_config=VISION, text_config=TEXT),
        "dinov2": t.Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, mlp_ratio=1, image_size=32,
                                 patch_size=8),
        "whisper": t.WhisperConfig(d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                                   decoder_attention_heads=2, encoder_ffn_dim=37, decoder_ffn_dim=37, num_mel_bins=80,
                                   max_source_positions=40, max_target_positions=8, vocab_size=99, pad_token_id=1,
                                   bos_token_id=2, eos_token_id=2, decoder_start_token_id=2),
        "ast": t.ASTConfig(**TINY, patch_size=16, frequency_stride=16, time_stride=16, max_length=64, num_mel_bins=32),
    }


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    """Each family's tiny model in its own folder, as save_pretrained writes it."""
    root = tmp_path_factory.mktemp("hf-models")
    torch.manual_seed(0)
    folders = {}
    for name, config in _configs().items():
        transformers.AutoModel.from_config(config).save_pretrained(root / name)
        folders[name] = root / name
    processor = {"do_center_crop": True, "crop_size": {"height": 32, "width": 32}, "size": {"shortest_edge": 40},
                 "image_mean": CLIP_MEAN, "image_std": [0.26862954, 0.26130258, 0.27577711]}
    (folders["clip"] / "preprocessor_config.json").write_text(json.dumps(processor))
    return folders


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    from mmcli.data.toy import make_toy

    return make_toy(tmp_path_factory.mktemp("toy") / "toy", n=48, seed=5)


def ok(result):
    assert result.exit_code == 0, f"exit {result.exit_code}\n{result.output}\n{result.exception!r}"
    return result


def _train(cli, toy: Path, out: Path, modality: str, model: Path, *more: str):
    return ok(cli("train", toy, "--modalities", modality, "--epochs", "1", "--seed", "1", "--out", out,
                  "--set", f"model.encoders.{modality}=hf", "--set", f"model.encoder_options.{modality}.model={model}",
                  *more))


def _tower_changed(run: Path, modality: str, model: Path) -> bool:
    """Whether any weight of the run's tower differs from the saved model's, loaded afresh."""
    from mmcli.pipeline import load_run

    loaded = load_run(run)
    fresh = ENCODERS.get(f"{modality}.hf")(loaded.specs[modality], 8, model=str(model)).backbone.state_dict()
    tower = loaded.model.encoders[modality].backbone.state_dict()
    assert tower.keys() == fresh.keys()
    return any(not torch.equal(tower[k], fresh[k]) for k in tower)


def test_image_hf_frozen_caches_its_features_and_keeps_the_tower(cli, toy, tiny, tmp_path, monkeypatch):
    from mmcli.training.features import features_dir

    monkeypatch.setenv("MMCLI_CACHE_DIR", str(tmp_path / "cache"))
    _train(cli, toy, tmp_path / "a", "image", tiny["vit"], "--set", "model.encoder_options.image.trainable=false")
    config = (tmp_path / "a" / "config.yaml").read_text()
    assert "image: hf" in config and str(tiny["vit"]) in config
    assert "image_size: 32" in config  # the model's, not the default 64
    entries = sorted(features_dir(None).iterdir())
    assert entries  # the frozen tower's features
    stamps = [p.stat().st_mtime_ns for p in entries]
    _train(cli, toy, tmp_path / "b", "image", tiny["vit"], "--set", "model.encoder_options.image.trainable=false")
    assert [p.stat().st_mtime_ns for p in sorted(features_dir(None).iterdir())] == stamps  # read, not written
    from mmcli.pipeline import load_run

    encoder = load_run(tmp_path / "a").model.encoders["image"]
    assert encoder.proj.in_features == 32 and encoder.pool_mode == "cls"
    assert not _tower_changed(tmp_path / "a", "image", tiny["vit"])
    preds = [json.loads(line) for line in ok(cli("predict", tmp_path / "a", toy)).stdout.splitlines()]
    assert len(preds) == 48 and all(p["label"] for p in preds)


def test_image_hf_fine_tunes_a_clip_vision_tower_read_as_its_processor_says(cli, toy, tiny, tmp_path):
    _train(cli, toy, tmp_path / "run", "image", tiny["clip"])
    config = (tmp_path / "run" / "config.yaml").read_text()
    assert f"- {CLIP_MEAN[0]}" in config  # image_mean from preprocessor_config.json
    assert _tower_changed(tmp_path / "run", "image", tiny["clip"])
    scores = json.loads(ok(cli("evaluate", tmp_path / "run", "--json")).stdout)
    assert 0.0 <= scores["accuracy"] <= 1.0


def _spec(kind: str, **sizes) -> ModalitySpec:
    return ModalitySpec(name=kind, kind=kind, **sizes)


@pytest.mark.parametrize("family", ["dinov2", "siglip"])
def test_vision_families_give_a_pooled_vector_and_a_grid_and_random_weights_on_request(tiny, family):
    torch.manual_seed(0)
    encoder = ENCODERS.get("image.hf")(_spec("image", image_size=32), 8, model=str(tiny[family])).eval()
    x = torch.randn(2, 3, 48, 48)  # another size than the model's: interpolated position embeddings
    out = encoder(x)
    assert out.pooled.shape == (2, 8) and out.tokens.shape == (2, 17, 8) and out.token_mask.all()
    with torch.no_grad():
        hidden = encoder.backbone(pixel_values=x, **({} if family == "dinov2" else {"interpolate_pos_encoding": True}))
        assert torch.allclose(out.pooled, encoder.proj(hidden.pooler_output), atol=1e-5)
    scratch = ENCODERS.get("image.hf")(_spec("image"), 8, model=str(tiny[family]), pretrained=False)
    assert scratch.trained_parts == () and encoder.trained_parts == ("backbone.",)
    ours, theirs = encoder.backbone.state_dict(), scratch.backbone.state_dict()
    assert ours.keys() == theirs.keys() and any(not torch.equal(ours[k], theirs[k]) for k in ours)


def test_audio_hf_whisper_frozen_and_ast_fine_tuned(cli, toy, tiny, tmp_path):
    _train(cli, toy, tmp_path / "whisper", "audio", tiny["whisper"], "--set", "model.encoder_options.audio.trainable=false")
    data = (tmp_path / "whisper" / "config.yaml").read_text()
    assert "n_mels: 80" in data and "hop_length: 160" in data and "n_fft: 400" in data  # Whisper's analysis
    assert not _tower_changed(tmp_path / "whisper", "audio", tiny["whisper"])
    preds = [json.loads(line) for line in ok(cli("predict", tmp_path / "whisper", toy)).stdout.splitlines()]
    assert len(preds) == 48 and preds[0]["modalities_used"] == ["audio"]
    _train(cli, toy, tmp_path / "ast", "audio", tiny["ast"])
    assert "n_mels: 32" in (tmp_path / "ast" / "config.yaml").read_text()
    assert _tower_changed(tmp_path / "ast", "audio", tiny["ast"])


def test_audio_hf_masks_frames_past_each_clip_and_refuses_waveform_models(tiny, tmp_path):
    encoder = ENCODERS.get("audio.hf")(_spec("audio", n_mels=64, frames=70), 8, model=str(tiny["whisper"])).eval()
    out = encoder(torch.randn(3, 64, 70), torch.tensor([70, 30, 1]))  # 64 bands resampled to 80; 80 frames kept
    assert out.tokens.shape == (3, 1 + 35, 8)  # the pooled vector, then one token per 2 frames
    assert out.token_mask.sum(1).tolist() == [36, 16, 2]
    transformers.Wav2Vec2Config(**TINY).save_pretrained(tmp_path / "w2v")
    with pytest.raises(ConfigError, match="raw waveforms"):
        ENCODERS.get("audio.hf")(_spec("audio"), 8, model=str(tmp_path / "w2v"))


@pytest.mark.parametrize("modality", ["image", "audio", "text"])
def test_a_model_that_cannot_be_found_offline_fails_at_once_before_decoding(cli, toy, tmp_path, monkeypatch, modality):
    from huggingface_hub import constants

    from mmcli.encoders import pretrained_hf

    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    pretrained_hf.reachable.cache_clear()
    if pretrained_hf.url_reachable(constants.ENDPOINT):  # a machine with network: a Hub that refuses at once
        monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("MMCLI_CACHE_DIR", str(tmp_path / "cache"))
    pretrained_hf.reachable.cache_clear()
    start = time.monotonic()
    result = cli("train", toy, "--modalities", modality, "--epochs", "1", "--out", tmp_path / "run",
                 "--set", f"model.encoders.{modality}=hf", "--set", f"model.encoder_options.{modality}.model=no-org/no-model")
    seconds = time.monotonic() - start
    pretrained_hf.reachable.cache_clear()
    assert result.exit_code == 2, result.output
    assert seconds < 1.0, seconds
    assert "model: PATH" in result.output and str(Path(constants.HF_HUB_CACHE)) in result.output.replace("\n", "")
    assert not (tmp_path / "cache" / "tensors").exists()  # nothing was decoded
    assert not (tmp_path / "run").exists()
    missing = cli("train", toy, "--modalities", modality, "--out", tmp_path / "run",
                  "--set", f"model.encoders.{modality}=hf", "--set", f"model.encoder_options.{modality}.model=./nowhere")
    assert missing.exit_code == 2 and "no such model folder" in missing.output


def test_a_saved_run_needs_not_the_model_files(cli, toy, tiny, tmp_path):
    """data.json keeps the model's config (and AST's normalisation): evaluate and predict
    give the same answers after the model folder is gone."""
    import shutil

    for modality, family, model_type in (("image", "clip", "clip"), ("audio", "ast", "audio-spectrogram-transformer")):
        model = tmp_path / f"{family}-model"
        shutil.copytree(tiny[family], model)
        run = tmp_path / family
        _train(cli, toy, run, modality, model)
        spec = json.loads((run / "data.json").read_text())["modalities"][modality]
        assert json.loads(spec["backbone_config"])["model_type"] == model_type
        before = ok(cli("evaluate", run, "--json")).stdout
        answers = ok(cli("predict", run, toy)).stdout
        shutil.rmtree(model)
        assert ok(cli("evaluate", run, "--json")).stdout == before
        assert ok(cli("predict", run, toy)).stdout == answers
