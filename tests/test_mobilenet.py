"""MobileNetV2 as an image backbone (issue 19), and encoder choices side by side inside one
`compare` (`unimodal:image@mobilenet_v2:frozen`).

The real ImageNet weights (`../shared/weights/mobilenet_v2-imagenet1k.pth`, Google's
MobileNetV2 read with mean = std = 0.5) are used where present; those tests skip without.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from conftest import SHARED_DATA, write_own_manifest
from mmcli.compare.runner import Plan, load_plan, run_dir_for
from mmcli.compare.variants import Variant
from mmcli.config import from_dict
from mmcli.encoders import ENCODERS, ModalitySpec
from mmcli.errors import ConfigError
from mmcli.models import adapt_data, encoder_choice, with_encoders

WEIGHTS = SHARED_DATA.parent / "weights" / "mobilenet_v2-imagenet1k.pth"
needs_weights = pytest.mark.skipif(not WEIGHTS.is_file(), reason=f"{WEIGHTS} is absent (real MobileNetV2 weights)")
ICONS = SHARED_DATA / "mdi-icons"
COCO = SHARED_DATA / "coco-mini" / "val2017"
BROCCOLI = COCO / "000000019221.jpg"  # a COCO plate of broccoli


# --------------------------------------------------------------------------- the backbone

def test_mobilenet_v2_blocks_freezing_and_the_file_normalisation():
    encoder = ENCODERS.get("image.mobilenet_v2")(ModalitySpec("image", "image", image_size=32), 8)
    assert len(encoder.blocks()) == 18  # 17 inverted-residual blocks and the last 1x1 conv
    encoder.set_trainable(2)
    trains = {n.split(".")[1] for n, p in encoder.named_parameters() if p.requires_grad and n.startswith("body.")}
    assert trains == {"17", "18"}
    out = encoder(torch.rand(2, 3, 32, 32))
    assert out.tokens.shape == (2, 16, 8) and out.pooled.shape == (2, 8)
    # a weights file reads mean = std = 0.5; torchvision's downloaded weights ImageNet's statistics
    from_file = adapt_data(from_dict({"model": {"encoders": {"image": "mobilenet_v2"},
                                                "encoder_options": {"image": {"weights": "w.pth"}}}})).data
    assert (from_file.image_size, from_file.image_mean, from_file.image_std) == (224, [0.5] * 3, [0.5] * 3)
    downloaded = adapt_data(from_dict({"model": {"encoders": {"image": "mobilenet_v2"},
                                                 "encoder_options": {"image": {"pretrained": True}}}})).data
    assert downloaded.image_mean == [0.485, 0.456, 0.406]


def test_pretrained_true_offline_says_to_pass_a_weights_file(monkeypatch):
    from urllib.error import URLError

    import torchvision.models._api as api

    def offline(url, *args, **kwargs):
        assert "mobilenet_v2" in url
        raise URLError("no network")

    monkeypatch.setattr(api, "load_state_dict_from_url", offline)
    with pytest.raises(ConfigError, match="mobilenet_v2: cannot download the pretrained weights .*weights: PATH"):
        ENCODERS.get("image.mobilenet_v2")(ModalitySpec("image", "image"), 8, pretrained=True)


@needs_weights
@pytest.mark.skipif(not BROCCOLI.is_file(), reason=f"{BROCCOLI} is absent (coco-mini)")
def test_the_real_weights_see_broccoli_through_the_encoders_preprocessing():
    import torchvision

    from mmcli.data.decode import decode_image, normalize_image

    config = adapt_data(from_dict({"model": {"encoders": {"image": "mobilenet_v2"},
                                             "encoder_options": {"image": {"weights": str(WEIGHTS)}}}}))
    x = normalize_image(decode_image(BROCCOLI, config.data).unsqueeze(0), config.data)
    classifier = torchvision.models.mobilenet_v2()
    classifier.load_state_dict(torch.load(WEIGHTS, weights_only=True))
    names = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"]
    with torch.no_grad():
        top = classifier.eval()(x)[0].topk(3).indices.tolist()
    assert "broccoli" in [names[i] for i in top]
    build = ENCODERS.get("image.mobilenet_v2")
    spec = ModalitySpec("image", "image", image_size=224)
    loaded, random = build(spec, 8, weights=str(WEIGHTS)).eval(), build(spec, 8).eval()
    with torch.no_grad():  # the encoder's body is the file's network, not a random one
        assert torch.allclose(loaded.body(x), classifier.features(x), atol=1e-5)
        assert not torch.allclose(loaded.body(x), random.body(x), atol=1e-2)


# --------------------------------------------------------------------------- encoder choices

def test_options_keyed_by_the_encoder_name_go_with_that_encoder_only():
    config = from_dict({"model": {"encoder_options": {
        "image": {"width": 8, "mobilenet_v2": {"weights": "w.pth", "trainable": False}},  # what --set writes
        "text.bigru": {"hidden": 16}}}})
    spec = ModalitySpec("photo", "image")
    assert encoder_choice(config, spec) == ("image.cnn", {"width": 8})
    kinds = {"photo": "image", "caption": "text"}
    frozen = with_encoders(config, {"photo": "image.mobilenet_v2"}, kinds, ["photo", "caption"])
    assert encoder_choice(frozen, spec) == ("image.mobilenet_v2", {"weights": "w.pth", "trainable": False})
    assert (frozen.data.image_size, frozen.data.image_std) == (224, [0.5] * 3)
    scratch = with_encoders(config, {"photo": "image.mobilenet_v2:scratch"}, kinds, ["photo"])
    assert encoder_choice(scratch, spec)[1] == {"weights": None, "pretrained": False, "trainable": True}
    assert scratch.data.image_size == 64  # no pretrained weights: the config's images
    text = with_encoders(config, {"caption": "text.bigru:frozen"}, kinds, ["caption"])
    assert encoder_choice(text, ModalitySpec("caption", "text")) == ("text.bigru", {"hidden": 16, "trainable": False})


def test_variants_round_trip_and_their_folders_are_safe_and_distinct():
    plain = Variant("unimodal:image", "unimodal", ("image",))
    chosen = Variant("multimodal:concat@image=mobilenet_v2:frozen,text=bigru", "multimodal", ("image", "text"), "concat",
                     encoders=(("image", "image.mobilenet_v2:frozen"), ("text", "text.bigru")))
    for v in (plain, chosen):
        assert Variant.from_dict(json.loads(json.dumps(v.to_dict()))) == v
    assert Variant.from_dict({"name": "unimodal:image", "family": "unimodal", "modalities": ["image"]}) == plain  # older plans
    assert run_dir_for(chosen, 3) == "runs/multimodal-concat@image-mobilenet_v2-frozen-text-bigru-seed3"
    assert run_dir_for(chosen, 3, clash=True) != run_dir_for(chosen, 3)


@pytest.fixture(scope="module")
def own(tmp_path_factory) -> Path:
    return write_own_manifest(tmp_path_factory.mktemp("own"), n=12)


def test_two_encoders_of_one_modality_side_by_side(cli, own, tmp_path):
    """Planned, run job by job (each job prepares the data its variant reads) and collected."""
    out = tmp_path / "cmp"
    result = cli("compare", "unimodal:photo", "unimodal:photo@mobilenet_v2:scratch", "--data", own, "-m", "photo", "--epochs", "1",
                 "--out", out, "--print-jobs")
    assert result.exit_code == 0 and len(result.stdout.splitlines()) == 2, result.output
    for k in (1, 0):
        assert cli("compare", "--out", out, "--job", k).exit_code == 0
    result = cli("compare", "--collect", out)
    assert result.exit_code == 0 and "unimodal:photo@mobilenet_v2:scratch" in result.stdout, result.output
    plan = load_plan(out)
    assert [v.name for v in plan.variants] == ["unimodal:photo", "unimodal:photo@mobilenet_v2:scratch"]
    assert Plan.from_dict(json.loads(json.dumps(plan.to_dict()))).variants == plan.variants
    runs = [c["run"] for c in plan.cells]
    assert runs == ["runs/unimodal-photo-seed0", "runs/unimodal-photo@mobilenet_v2-scratch-seed0"]
    assert plan.cells[0]["fingerprint"] != plan.cells[1]["fingerprint"]
    import yaml

    model = yaml.safe_load((out / runs[1] / "config.yaml").read_text())["model"]
    assert model["encoders"]["photo"] == "image.mobilenet_v2" and model["encoder_options"]["photo"]["trainable"] is True
    summary = json.loads((out / "summary.json").read_text())
    assert {r["variant"] for r in summary} == {"unimodal:photo", "unimodal:photo@mobilenet_v2:scratch"}
    assert "| unimodal:photo@mobilenet_v2:scratch |" in (out / "report.md").read_text()


def test_the_ensemble_of_a_chosen_encoder_averages_that_encoder_s_runs(cli, own, tmp_path):
    """`multimodal:ensemble@photo=...` reads the outputs of `unimodal:photo@...`, not of the
    default encoder's runs: a different average, tested against the reference like any variant."""
    out = tmp_path / "cmp"
    result = cli("compare", "multimodal:ensemble", "multimodal:ensemble@photo=mobilenet_v2:scratch", "--data", own,
                 "-m", "photo,caption", "--epochs", "1", "--seeds", "2", "--jobs", "1", "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    rows = {r["variant"]: r for r in json.loads((out / "summary.json").read_text())}
    assert set(rows) == {"unimodal:photo", "unimodal:caption", "multimodal:ensemble", "unimodal:photo@mobilenet_v2:scratch",
                         "multimodal:ensemble@photo=mobilenet_v2:scratch"}
    import numpy as np
    import torch

    def probs(run: str) -> torch.Tensor:
        with np.load(out / "runs" / f"{run}-seed0" / "compare-outputs.npz") as z:
            return torch.from_numpy(z["test_outputs"]).softmax(1)

    with np.load(out / "runs" / "unimodal-caption-seed0" / "compare-outputs.npz") as z:
        targets = torch.from_numpy(z["test_targets"])
    with open(out / "results.csv", newline="", encoding="utf-8") as handle:
        values = {(r["variant"], int(r["seed"])): float(r["value"]) for r in csv.DictReader(handle)}
    for photo, late in (("unimodal-photo", "multimodal:ensemble"),
                        ("unimodal-photo@mobilenet_v2-scratch", "multimodal:ensemble@photo=mobilenet_v2:scratch")):
        average = (probs(photo) + probs("unimodal-caption")) / 2  # equal weights: 12 examples, a tiny validation split
        assert values[(late, 0)] == pytest.approx(float((average.argmax(1) == targets).float().mean()))


@pytest.mark.parametrize("item, needles", [
    ("unimodal:photo@nosuchnet", ["unknown encoder 'nosuchnet'", "mobilenet_v2", "resnet18"]),
    ("unimodal:photo@textcnn", ["for none of its modalities, photo (image)", "image encoders cnn"]),
    ("unimodal:photo@mobilenet_v2:warm", ["unknown encoder mode 'warm'", "frozen, finetuned, scratch"]),
    ("multimodal:concat@picture=cnn", ["no modality 'picture'", "photo"]),
], ids=["unknown_encoder", "encoder_of_another_kind", "unknown_mode", "unknown_modality"])
def test_a_wrong_encoder_choice_is_a_usage_error(cli, own, tmp_path, item, needles):
    result = cli("compare", "unimodal:photo", item, "--data", own, "--epochs", "1", "--out", tmp_path / "cmp")
    assert result.exit_code == 2, result.output
    assert all(n in result.output for n in needles), result.output
    assert "Traceback" not in result.output


@needs_weights
@pytest.mark.skipif(not (ICONS / "manifest.csv").is_file(), reason=f"{ICONS} is absent (mdi-icons)")
def test_frozen_pretrained_beside_the_small_cnn_on_grey_icons(cli, tmp_path):
    """Grey PNGs, the weights named once for the encoder, each variant with its own image size."""
    with open(ICONS / "manifest.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    labels = ["Math", "Weather"]
    chosen = [r for label in labels for r in [r for r in rows if r["label"] == label][:8]]
    with open(tmp_path / "icons.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["image", "label", "split"])
        writer.writeheader()
        writer.writerows({"image": str(ICONS / r["image"]), "label": r["label"],
                          "split": "train" if k % 8 < 5 else "val" if k % 8 == 5 else "test"} for k, r in enumerate(chosen))
    out = tmp_path / "cmp"
    result = cli("-v", "compare", "unimodal:image", "unimodal:image@mobilenet_v2:frozen", "--data", tmp_path / "icons.csv",
                 "--epochs", "1", "--jobs", "1", "--out", out, "--set", f"model.encoder_options.image.mobilenet_v2.weights={WEIGHTS}")
    assert result.exit_code == 0, result.output
    assert "feature cache miss: computed image features" in result.output  # frozen: computed once, not per epoch
    import yaml

    small = yaml.safe_load((out / "runs/unimodal-image-seed0/config.yaml").read_text())
    mobile = yaml.safe_load((out / "runs/unimodal-image@mobilenet_v2-frozen-seed0/config.yaml").read_text())
    assert (small["data"]["image_size"], small["model"]["encoders"]) == (64, {})
    assert (mobile["data"]["image_size"], mobile["data"]["image_std"]) == (224, [0.5] * 3)
    assert mobile["model"]["encoder_options"]["image"] == {"trainable": False, "weights": str(WEIGHTS)}
