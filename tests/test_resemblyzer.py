"""audio.resemblyzer (issue 22, item 6): Resemblyzer's pretrained GE2E speaker encoder reads
the audio kind's stored log-mels, agrees with Resemblyzer's own `embed_utterance`, separates
LibriSpeech speakers, is frozen by default and says how to get its weights."""

from __future__ import annotations

import contextlib
import csv
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import SHARED_DATA
from mmcli.config import DataConfig, from_dict
from mmcli.encoders import ENCODERS, ModalitySpec, skip_pretrained
from mmcli.encoders import speaker
from mmcli.errors import ConfigError
from mmcli.models import adapt_data, build

SPEAKERS = SHARED_DATA / "librispeech-speakers"
needs_weights = pytest.mark.skipif(speaker.packaged_weights() is None,
                                   reason="resemblyzer is not installed: pip install -e '.[speaker]'")
needs_data = pytest.mark.skipif(not (SPEAKERS / "manifest.csv").is_file(), reason="../shared/data/librispeech-speakers is absent")
SPEC = ModalitySpec(name="audio", kind="audio", n_mels=40, frames=801)
DATA = DataConfig(**speaker.PREPROCESSING, max_seconds=10.0)  # the test-other clips last 2 to 8 s


def _clips(source: str = "test-other") -> list[dict]:
    with open(SPEAKERS / "manifest.csv", newline="") as handle:
        return [row for row in csv.DictReader(handle) if row["source"] == source]


def _stored(rows: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    """The clips as the audio kind stores and normalises them for the encoder."""
    from mmcli.data.decode import decode_audio, normalize_audio

    decoded = [decode_audio(SPEAKERS / row["audio"], DATA) for row in rows]
    return normalize_audio(torch.stack([x for x, _ in decoded])), torch.tensor([n for _, n in decoded])


def _encoder(**options) -> speaker.Resemblyzer:
    return ENCODERS.get("audio.resemblyzer")(SPEC, 16, **options).eval()


@contextlib.contextmanager
def _without_webrtcvad():
    """Resemblyzer's __init__ imports webrtcvad (used by preprocess_wav's silence trimming
    only), whose own import needs pkg_resources, which recent setuptools lack: a stand-in
    module while resemblyzer is imported, removed after."""
    stand_in = "webrtcvad" not in sys.modules
    if stand_in:
        sys.modules["webrtcvad"] = types.ModuleType("webrtcvad")
    try:
        yield
    finally:
        if stand_in:
            sys.modules.pop("webrtcvad", None)


def _voice_encoder():
    try:
        import resemblyzer
    except ImportError:
        with _without_webrtcvad():
            import resemblyzer
    return resemblyzer.VoiceEncoder(device="cpu", verbose=False)


@needs_weights
@needs_data
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # resemblyzer's scipy.ndimage.morphology import
def test_embedding_agrees_with_resemblyzers_embed_utterance():
    import soundfile

    rows = _clips()[::25]  # 4 clips of 4 speakers
    reference = _voice_encoder()
    x, lengths = _stored(rows)
    with torch.no_grad():
        ours = _encoder().embed(x, lengths).numpy()
    for row, mine in zip(rows, ours):
        wav, rate = soundfile.read(str(SPEAKERS / row["audio"]), dtype="float32")
        assert rate == 16000
        theirs = reference.embed_utterance(wav)
        assert float(mine @ theirs) > 0.999, row["audio"]
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


@needs_weights
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_windows_are_placed_as_resemblyzer_places_them():
    reference = type(_voice_encoder())
    for samples in [*range(1, 40_000, 37), 95_999, 96_000, 128_000]:
        _, slices = reference.compute_partial_slices(samples, 1.3, 0.75)
        assert speaker.window_starts(1 + samples // 160, 77, 0.75) == [s.start for s in slices], samples


@needs_weights
@needs_data
def test_librispeech_speakers_are_separated():
    from mmcli.evaluation.verification import eer

    rows = _clips()
    assert len(rows) == 100 and len({r["speaker"] for r in rows}) == 10
    x, lengths = _stored(rows)
    encoder = _encoder()
    with torch.no_grad():
        embeddings = torch.cat([encoder.embed(x[i:i + 25], lengths[i:i + 25]) for i in range(0, len(rows), 25)]).numpy()
    who = np.array([r["speaker"] for r in rows])
    pairs = np.triu_indices(len(rows), k=1)
    rate, _ = eer((embeddings @ embeddings.T)[pairs], (who[:, None] == who[None, :])[pairs])
    assert rate < 0.05, f"EER {rate:.2%}"


def _config(**options) -> object:
    model = {"feature_dim": 16, "hidden_dim": 16, "encoders": {"audio": "resemblyzer"}}
    return from_dict({"model": {**model, "encoder_options": {"audio": options}} if options else model})


def _batch(frames: int = 300) -> dict:
    x = torch.randn(2, 40, frames).clamp(-1.5, 2.0)
    return {"audio": x, "lengths": {"audio": torch.tensor([frames, 90])}, "mask": {"audio": torch.ones(2, dtype=torch.bool)}}


def test_frozen_by_default_and_built_from_a_config():
    with skip_pretrained():  # the architecture only: no weights file needed
        model = build(_config(), {"audio": SPEC}, n_outputs=3)
        tuned = build(_config(finetune=True), {"audio": SPEC}, n_outputs=3).encoders["audio"]
        last = build(_config(finetune=True, trainable=1), {"audio": SPEC}, n_outputs=3).encoders["audio"]
        scratch = build(_config(pretrained=False), {"audio": SPEC}, n_outputs=3).encoders["audio"]
    encoder = model.encoders["audio"]
    assert isinstance(encoder, speaker.Resemblyzer)
    assert encoder.feature_frozen and encoder.cacheable
    assert not any(p.requires_grad for p in [*encoder.lstm.parameters(), *encoder.linear.parameters()])
    assert all(p.requires_grad for p in encoder.proj.parameters())
    assert model.trained_prefixes == ["encoders.audio.lstm.", "encoders.audio.linear."]
    assert not tuned.feature_frozen and not scratch.feature_frozen
    assert [p.requires_grad for p in (last.lstm.weight_ih_l0, last.linear.weight)] == [False, True]
    assert model.eval()(_batch()).shape == (2, 3)
    raw, mask = encoder.features(_batch()["audio"], torch.tensor([300, 90]))
    assert raw.shape == (2, 3, 256) and mask.tolist() == [[True, True, True], [True, False, False]]
    out = encoder.from_features(raw, mask)
    assert out.pooled.shape == (2, 16) and out.tokens.shape == (2, 3, 16)


def test_encoder_contract_frozen_gradients_cache_and_mask():
    """What tests/test_models_registry.py checks of every encoder, on inputs this one reads
    (40 mel bands, clips of several windows)."""
    torch.manual_seed(0)
    with skip_pretrained():
        encoder = _encoder()
    x, lengths = torch.randn(4, 40, 400).clamp(-1.5, 2.0), torch.tensor([400, 300, 170, 20])
    encoder.train()
    raw, mask = encoder.features(x, lengths)
    assert mask.sum(1).tolist() == [4, 3, 1, 1]  # every 77 frames; a last window covering < 3/4 is dropped
    for row in mask:
        assert row[:int(row.sum())].all() and not row[int(row.sum()):].any()
    assert encoder.features(x).__getitem__(1).all()
    out = encoder(x, lengths)
    assert torch.allclose(encoder.from_features(raw, mask).pooled, out.pooled, atol=1e-6)
    assert torch.allclose(encoder.from_features(raw.half(), mask).pooled, out.pooled, atol=1e-2)  # the cache's float16
    (out.pooled.sum() + out.tokens.sum()).backward()
    for name, p in encoder.named_parameters():
        assert (p.grad is not None and p.grad.abs().sum() > 0) if name.startswith("proj.") else p.grad is None, name
    # more padding after a clip changes nothing
    padded = torch.cat([x, torch.full((4, 40, 100), -1.5)], dim=2)
    with torch.no_grad():
        assert torch.allclose(encoder.embed(padded, lengths), encoder.embed(x, lengths), atol=1e-6)


def test_the_data_settings_follow_the_weights_unless_set():
    data = adapt_data(_config(), {"audio": "audio"}).data
    assert (data.sample_rate, data.n_mels, data.n_fft, data.hop_length) == (16000, 40, 400, 160)
    for key, value in (("n_mels", 48), ("sample_rate", 22050), ("hop_length", 128)):
        with pytest.raises(ConfigError, match=f"data.{key}={value}"):  # set to what the weights do not read
            adapt_data(from_dict({"data": {key: value}, "model": {"encoders": {"audio": "resemblyzer"}}}), {"audio": "audio"})
    with skip_pretrained(), pytest.raises(ConfigError, match="40 mel bands"):
        build(_config(), {"audio": ModalitySpec(name="audio", kind="audio", n_mels=48)}, n_outputs=3)
    assert adapt_data(from_dict({}), {"audio": "audio"}).data.n_mels == DataConfig().n_mels


def test_missing_weights_name_the_fix(monkeypatch, tmp_path):
    monkeypatch.setattr(speaker, "packaged_weights", lambda: None)
    with pytest.raises(ConfigError, match=r"pip install 'mmcli\[speaker\]'.*weights: PATH") as info:
        build(_config(), {"audio": SPEC}, n_outputs=3)
    assert info.value.exit_code == 2
    with pytest.raises(ConfigError, match="not found"):
        build(_config(weights=str(tmp_path / "nothing.pt")), {"audio": SPEC}, n_outputs=3)
    other = tmp_path / "other.pt"
    torch.save({"model_state": {"lstm.weight_ih_l0": torch.zeros(4, 4)}}, other)
    with pytest.raises(ConfigError, match="not Resemblyzer's voice encoder"):
        build(_config(weights=str(other)), {"audio": SPEC}, n_outputs=3)


@needs_weights
def test_a_weights_file_is_loaded_as_the_packaged_one(tmp_path):
    path = tmp_path / "copy.pt"
    state = torch.load(speaker.packaged_weights(), map_location="cpu", weights_only=True)
    torch.save({"model_state": state["model_state"]}, path)
    packaged, from_file = _encoder(), _encoder(weights=str(path))
    assert torch.equal(packaged.lstm.weight_hh_l2, from_file.lstm.weight_hh_l2)
    assert not torch.equal(packaged.lstm.weight_hh_l2, _encoder(pretrained=False).lstm.weight_hh_l2)
    assert Path(speaker.packaged_weights()).name == "pretrained.pt"
