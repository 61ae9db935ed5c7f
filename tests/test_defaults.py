"""Defaults derived from the data (issue 19): the training budget from the training
split's size, image augmentation in training only, the bag-of-tokens text encoder."""

from __future__ import annotations

import pytest
import torch
import yaml

from conftest import write_own_manifest
from mmcli.config import Config, TrainConfig
from mmcli.encoders import ENCODERS, ModalitySpec
from mmcli.encoders.augment import ImageAugment
from mmcli.training.setup import BUDGET_STEPS, MAX_EPOCHS, MIN_EPOCHS, budget, stop_floor


@pytest.mark.parametrize("n_train, epochs", [
    (100, MAX_EPOCHS),  # 2 batches an epoch: capped
    (64 * 60, 25),  # 60 steps an epoch: 1500 / 60
    (64 * 1000, MIN_EPOCHS),  # a big set: the floor
])
def test_the_budget_follows_the_training_split_size(n_train, epochs):
    assert BUDGET_STEPS == 1500  # the table above is worked out for it
    got, patience = budget(n_train, TrainConfig(batch_size=64))
    assert got == epochs
    assert patience == max(5, epochs // 4)


def test_set_values_are_kept_and_accumulation_counts_as_a_bigger_batch():
    assert budget(100, TrainConfig(epochs=3, patience=0)) == (3, 0)
    assert budget(64 * 60, TrainConfig(batch_size=32, accumulate=2))[0] == 25


def test_a_run_saves_the_budget_it_derived(tmp_path, cli):
    manifest = write_own_manifest(tmp_path / "own", n=24)
    result = cli("train", manifest, "--modalities", "photo", "--out", tmp_path / "run", "--set", "train.patience=1")
    assert result.exit_code == 0, result.output
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["train"]
    assert saved["epochs"] == MAX_EPOCHS and saved["patience"] == 1  # a tiny set: the cap; the set patience kept


@pytest.mark.parametrize("epochs, warmup, floor", [
    (30, 1.0, 16),  # the rate has halved after 1 + 29 / 2 epochs
    (13, 1.0, 7),
    (12, 0.0, 6),
    (1, 1.0, 1),  # never past the budget
])
def test_early_stopping_waits_until_the_rate_has_halved(epochs, warmup, floor):
    assert stop_floor(epochs, TrainConfig(warmup_epochs=warmup)) == floor
    assert stop_floor(epochs, TrainConfig(min_epochs=3)) == min(3, epochs)  # a set value is kept, within the budget


def test_early_stopping_waits_for_the_floor_and_the_loss():
    from mmcli.training.loop import FitResult
    from mmcli.training.stopping import loss_fell, stops, tie_won_on_loss

    config = Config()
    config.train.patience, config.train.min_epochs = 1, 4
    assert not stops(config, 2, 1) and not stops(config, 3, 5)  # before the floor: never
    assert stops(config, 4, 1) and not stops(config, 4, 0)
    config.train.patience = 0
    assert not stops(config, 40, 40)  # patience 0: no early stopping
    history = [{"epoch": 1, "val_loss": 1.2}, {"epoch": 2, "val_loss": 1.0}]
    assert loss_fell({"val_loss": 0.9}, history) and not loss_fell({"val_loss": 1.05}, history)
    assert not loss_fell({"val_loss": float("nan")}, history) and not loss_fell({}, history)
    result = FitResult(best_epoch=2, best_metric=0.5, metric="accuracy", history=history)
    assert tie_won_on_loss({"val_loss": 0.9}, 0.5, result)  # same score, lower loss: the later epoch
    assert not tie_won_on_loss({"val_loss": 1.1}, 0.5, result) and not tie_won_on_loss({"val_loss": 0.9}, 0.4, result)


def test_a_run_saves_its_floor_and_trains_to_it(tmp_path, cli):
    manifest = write_own_manifest(tmp_path / "own", n=24)
    result = cli("train", manifest, "--modalities", "photo", "--out", tmp_path / "run", "--epochs", "8",
                 "--set", "train.patience=1", "--set", "train.warmup_epochs=0")
    assert result.exit_code == 0, result.output
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["train"]
    assert saved["min_epochs"] == 4  # 8 epochs, no warm-up: the rate halves after 4
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) >= 4


def test_augmentation_changes_images_in_training_only():
    torch.manual_seed(0)
    x = torch.rand(8, 3, 16, 16)
    augment = ImageAugment(0.5)
    changed = augment(x)
    assert changed.shape == x.shape and not torch.allclose(changed, x)
    augment.eval()
    assert torch.equal(augment(x), x)


def test_flip_alone_mirrors_some_examples_exactly():
    torch.manual_seed(0)
    x = torch.rand(32, 1, 8, 8)
    out = ImageAugment(1.0, hflip=True)(x)
    mirrored = [torch.allclose(o, xi.flip(-1), atol=1e-5) for o, xi in zip(out, x)]
    kept = [torch.allclose(o, xi, atol=1e-5) for o, xi in zip(out, x)]
    assert all(m or k for m, k in zip(mirrored, kept)) and any(mirrored) and any(kept)
    assert torch.equal(ImageAugment(1.0)(x), x)  # neither crop nor flip: untouched


def _image_encoder(config: Config):
    from mmcli.models import build

    spec = ModalitySpec(name="photo", kind="image", image_size=16)
    return build(config, {"photo": spec}, 3).encoders["photo"]


def test_trainable_image_encoders_augment_and_frozen_ones_keep_their_feature_cache():
    config = Config()
    assert isinstance(_image_encoder(config).input_augment, ImageAugment)
    config.train.augment = False
    assert _image_encoder(config).input_augment is None
    config.train.augment = True
    config.model.encoder_options = {"image": {"trainable": False}}
    frozen = _image_encoder(config)
    assert frozen.input_augment is None and frozen.cacheable


def test_the_bag_encoder_ignores_padding_and_word_order():
    torch.manual_seed(0)
    bag = ENCODERS.get("text.bag")(ModalitySpec(name="t", kind="text", vocab_size=50), 8)
    bag.eval()
    short = torch.tensor([[5, 7, 9, 0]])
    longer = torch.tensor([[9, 5, 7, 0, 0, 0, 0]])
    assert torch.allclose(bag(short).pooled, bag(longer).pooled, atol=1e-6)
    assert not torch.allclose(bag(short).pooled, bag(torch.tensor([[5, 7, 8, 0]])).pooled)


def test_netpbm_images_are_images(tmp_path):
    """The ORL faces are .pgm files: read as file names (text) their paths gave the person away."""
    import numpy as np
    from PIL import Image

    from mmcli.config import DataConfig
    from mmcli.data.manifest import detect_modalities, read_manifest

    for i in range(4):
        Image.fromarray(np.full((8, 8), 40 * i, dtype=np.uint8)).save(tmp_path / f"{i}.pgm")
    (tmp_path / "m.csv").write_text("image,person\n" + "".join(f"{i}.pgm,s{i % 2}\n" for i in range(4)))
    kinds = {n: m.kind for n, m in detect_modalities(read_manifest(tmp_path / "m.csv"), DataConfig(label="person")).items()}
    assert kinds == {"image": "image"}


def _fused_model(aux: float):
    from mmcli.models import build

    config = Config()
    config.model.aux_loss_weight = aux
    specs = {"photo": ModalitySpec(name="photo", kind="image", image_size=16),
             "name": ModalitySpec(name="name", kind="text", vocab_size=30)}
    torch.manual_seed(0)
    model = build(config, specs, 5)
    model.eval()
    batch = {"photo": torch.rand(4, 3, 16, 16), "name": torch.randint(1, 30, (4, 6)),
             "mask": {"photo": torch.tensor([True, True, True, False]), "name": torch.tensor([True, False, True, True])}}
    return model, batch


def test_an_example_with_one_modality_is_predicted_by_that_modalitys_own_head():
    model, batch = _fused_model(aux=1.0)
    with torch.no_grad():
        out = model(batch)
        features = model.encode(batch)
        fused = model.head(model.fusion(features, batch["mask"]))
        photo_alone = model.aux_heads["photo"](features["photo"].pooled)
        name_alone = model.aux_heads["name"](features["name"].pooled)
    assert torch.allclose(out[[0, 2]], fused[[0, 2]])  # both present: the fused head
    assert torch.allclose(out[1], photo_alone[1]) and not torch.allclose(out[1], fused[1])
    assert torch.allclose(out[3], name_alone[3])
    model.train()  # training always trains the fused head on what it is given
    with torch.no_grad():
        assert model._forward(batch)[0].shape == out.shape


def test_without_auxiliary_heads_the_fused_head_predicts_everything():
    model, batch = _fused_model(aux=0.0)
    assert not len(model.aux_heads)
    with torch.no_grad():
        features = model.encode(batch)
        assert torch.allclose(model(batch), model.head(model.fusion(features, batch["mask"])))


def test_a_run_folder_from_before_the_new_defaults_still_loads(tmp_path, cli):
    """A run trained with the old defaults (text.textcnn, image.cnn 16 wide) has a
    config.yaml that names neither: read with today's defaults, its weights no longer fit."""
    manifest = write_own_manifest(tmp_path / "own", n=24)
    run = tmp_path / "old"
    result = cli("train", manifest, "--epochs", "1", "--modalities", "photo,caption", "--out", run,
                 "--set", "model.encoders.caption=textcnn", "--set", "model.encoder_options.photo.width=16")
    assert result.exit_code == 0, result.output
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["model"]["encoders"], config["model"]["encoder_options"] = {}, {}
    for key in ("augment", "crop_scale", "hflip"):  # the keys an mmcli before issue 19 did not write
        del config["train"][key]
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    result = cli("evaluate", run)
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("name", ["text.bag", "text.transformer"])
def test_text_embeddings_start_small_and_the_pooled_vector_is_normalised(name):
    """N(0, 0.02) embeddings, so that the learning rate moves rare words' vectors, and a
    layer-normalised pooled vector (mdi-icons' names: 79 -> 84 %, docs/results.md)."""
    torch.manual_seed(0)
    spec = ModalitySpec(name="t", kind="text", vocab_size=500)
    encoder = ENCODERS.get(name)(spec, 16)
    encoder.eval()
    table = encoder.embed.weight.detach()
    assert table[0].abs().max() == 0 and 0.015 < table[1:].std() < 0.025
    pooled = encoder(torch.tensor([[5, 7, 9, 0], [3, 0, 0, 0]])).pooled
    assert torch.allclose(pooled.mean(dim=1), torch.zeros(2), atol=1e-5)
    assert torch.allclose(pooled.var(dim=1, unbiased=False), torch.ones(2), atol=0.02)  # within layer_norm's epsilon
    plain = ENCODERS.get(name)(spec, 16, norm=False).eval()
    assert not torch.allclose(plain(torch.tensor([[5, 7, 9, 0]])).pooled.var(dim=1, unbiased=False), torch.ones(1), atol=0.1)


def test_an_old_transformer_run_is_evaluated_without_the_pooled_norm(tmp_path, cli):
    """A run from before issue 19 that chose text.transformer was trained without the
    normalised pooling and with full-sized positions: it must be evaluated so, to the same
    loss."""
    import json

    manifest = write_own_manifest(tmp_path / "own", n=24)
    run = tmp_path / "old"
    result = cli("train", manifest, "--epochs", "2", "--modalities", "caption", "--out", run,
                 "--set", "model.encoders.caption=transformer", "--set", "model.encoder_options.caption.norm=false",
                 "--set", "model.encoder_options.caption.position_scale=1.0")
    assert result.exit_code == 0, result.output
    before = json.loads((run / "eval-test.json").read_text())
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["model"]["encoder_options"] = {}
    for key in ("augment", "crop_scale", "hflip"):
        del config["train"][key]
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    result = cli("evaluate", run)
    assert result.exit_code == 0, result.output
    after = json.loads((run / "eval-test.json").read_text())
    assert after["loss"] == pytest.approx(before["loss"], rel=1e-5)


def test_a_run_from_before_the_stopping_rules_and_smoothing_resumes_as_it_was_trained(tmp_path):
    """Its config.yaml has no `train.min_epochs` and no `label_smoothing`: it stopped on the
    metric alone at any epoch and trained on hard targets, and --resume must go on so."""
    from mmcli.runfiles import with_defaults_of_then

    config = Config()
    old = config.to_dict()
    del old["train"]["min_epochs"], old["train"]["max_cycles"]
    (tmp_path / "old.yaml").write_text(yaml.safe_dump(old))
    then = with_defaults_of_then(tmp_path / "old.yaml", config, {})
    assert then.train.min_epochs == 0 and then.model.task_options["label_smoothing"] == 0.0
    assert then.train.max_cycles == 1  # a run from before the extra cycles resumes within its one cycle
    new = config.to_dict()
    new["train"]["min_epochs"], new["model"]["task_options"] = 16, {"label_smoothing": 0.1}
    (tmp_path / "new.yaml").write_text(yaml.safe_dump(new))
    config.train.min_epochs, config.model.task_options = 16, {"label_smoothing": 0.1}
    now = with_defaults_of_then(tmp_path / "new.yaml", config, {})
    assert now.train.min_epochs == 16 and now.model.task_options["label_smoothing"] == 0.1
