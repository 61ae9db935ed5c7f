"""Label smoothing for classification (`model.task_options.label_smoothing`, issue 19)."""

from __future__ import annotations

import pytest
import torch

from mmcli.config import Config
from mmcli.errors import ConfigError
from mmcli.heads import make_task


def _task(smoothing=None):
    config = Config()
    if smoothing is not None:
        config.model.task_options = {"label_smoothing": smoothing}
    task = make_task(config)
    task.adapt_config(config, {})  # where the options are checked
    return task


def test_smoothing_raises_the_loss_of_a_confident_right_answer_to_its_known_floor():
    logits = torch.tensor([[20.0, 0.0, 0.0, 0.0]])
    batch = {"label": torch.tensor([0])}
    plain, smoothed = _task(0.0).loss(logits, batch), _task(0.2).loss(logits, batch)
    assert float(plain) < 1e-6 and _task().option("label_smoothing") == pytest.approx(0.1)  # the default
    # the target puts 0.8 + 0.2 / 4 on the label and 0.05 on each other class: the wrong
    # classes' share costs 3 x 0.05 x 20 nats, almost all of the smoothed loss
    assert float(smoothed) == pytest.approx(3 * 0.05 * 20.0, rel=1e-3)


@pytest.mark.parametrize("bad", [1.0, -0.1, "a lot", True])
def test_a_smoothing_outside_zero_to_one_is_refused_naming_the_key(bad):
    with pytest.raises(ConfigError, match="model.task_options.label_smoothing"):
        _task(bad)


def test_the_cli_refuses_it_with_exit_2(cli, tmp_path):
    result = cli("train", "--set", "model.task_options.label_smoothing=1.5", "--out", tmp_path / "run")
    assert result.exit_code == 2 and "label_smoothing" in result.output
