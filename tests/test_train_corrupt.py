"""train.corrupt (mmcli.training.degrade): training batches degraded with evaluate's own
corruptions, in a share of the examples, from the run's seed; the same batches with or
without loader workers; never the evaluation batches; specs that cannot apply refused
with exit 2 naming the key."""

from __future__ import annotations

import pytest
import torch

from mmcli.config import from_dict
from mmcli.errors import ConfigError


@pytest.fixture(scope="module")
def prepared(toy_small, tmp_path_factory):
    from mmcli.pipeline import prepare_training

    config = from_dict({"data": {"manifest": str(toy_small)}, "train": {"batch_size": 48}})
    data = prepare_training(config, cache_dir=str(tmp_path_factory.mktemp("corrupt-cache")))
    return config, data.part("train")


def _loader(config, part, workers: int, corrupt: list[str], share: float = 0.5):
    from mmcli.training.loop import train_loader
    from mmcli.training.distributed import World

    cfg = from_dict({**config.to_dict(), "train": {**config.to_dict()["train"], "corrupt": corrupt, "corrupt_share": share}})
    return train_loader(part, cfg, torch.Generator().manual_seed(0), None, World(), workers=workers)


def test_a_share_of_each_batch_is_degraded_and_the_rest_left_as_it_was(prepared):
    config, part = prepared
    clean, noisy = _loader(config, part, 0, []), _loader(config, part, 0, ["audio:white_noise@1"])
    changed = total = 0
    for a, b in zip(clean, noisy):
        assert torch.equal(a.inputs["image"], b.inputs["image"]) and torch.equal(a.inputs["text"], b.inputs["text"])
        rows = (a.inputs["audio"] != b.inputs["audio"]).flatten(1).any(dim=1)
        changed, total = changed + int(rows.sum()), total + len(rows)
        assert torch.equal(a.inputs["audio"][~rows], b.inputs["audio"][~rows])
    assert 0.25 * total < changed < 0.75 * total  # train.corrupt_share 0.5, at a random level up to 1
    everything = _loader(config, part, 0, ["audio:white_noise@1"], share=1.0)
    assert all(bool((a.inputs["audio"] != b.inputs["audio"]).flatten(1).any(dim=1).float().mean() > 0.9)
               for a, b in zip(_loader(config, part, 0, []), everything))


def test_the_draws_come_from_the_seed_and_the_workers_give_the_same_batches(prepared):
    config, part = prepared
    first = [b.inputs["image"] for b in _loader(config, part, 0, ["image:gaussian_noise@0.8"])]
    again = [b.inputs["image"] for b in _loader(config, part, 0, ["image:gaussian_noise@0.8"])]
    workers = _loader(config, part, 2, ["image:gaussian_noise@0.8"])
    with_workers = [b.inputs["image"] for b in workers]
    workers.close()
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert all(torch.equal(a, b) for a, b in zip(first, with_workers))


@pytest.mark.parametrize("spec, message", [
    ("text:typos@0.5", "a text modality cannot be degraded in training"),
    ("smell:noise@0.5", "no modality 'smell'"),
    ("audio:blur@0.5", "'blur' is not a corruption of audio"),
])
def test_a_spec_that_cannot_apply_is_refused_naming_the_key(prepared, spec, message):
    from mmcli.training.degrade import check

    config, part = prepared
    with pytest.raises(ConfigError, match="train.corrupt") as caught:
        check([spec], part.kinds)
    assert message in str(caught.value)


def test_training_with_a_degraded_modality_runs_and_is_saved(toy_small, tmp_path, cli):
    """Through the CLI: the run trains with its sound degraded, validation scores the clean
    inputs (the same score as a run whose degradation never draws a level above 0 would
    give is not asked: only that the key is kept for evaluate and compare's fingerprints)."""
    result = cli("train", str(toy_small), "--epochs", "2", "--out", str(tmp_path / "run"), "--quiet",
                 "--set", "train.corrupt=[audio:white_noise@1]", "--set", "train.corrupt_share=0.7")
    assert result.exit_code == 0, result.output
    saved = (tmp_path / "run" / "config.yaml").read_text(encoding="utf-8")
    assert "audio:white_noise@1" in saved and "corrupt_share: 0.7" in saved
    for spec in ("text:typos@1", "smell:noise@1"):
        bad = cli("train", str(toy_small), "--epochs", "1", "--set", f"train.corrupt=[{spec}]")
        assert bad.exit_code == 2 and "train.corrupt" in bad.output, bad.output
    alone = cli("train", str(toy_small), "--epochs", "1", "--modalities", "image", "--out", str(tmp_path / "image"),
                "--quiet", "--set", "train.corrupt=[audio:white_noise@1]")  # compare's unimodal variants
    assert alone.exit_code == 0, alone.output
