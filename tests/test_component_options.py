"""Component options are checked (issue 21): a key in `model.fusion_options` or
`model.encoder_options` that no fusion or encoder of its place takes stops `train` and
`compare` with exit 2 naming it, before anything trains; and a modality whose name would
collide with the batch's own keys (`mask`, `index`, ...) is refused naming its column."""

from __future__ import annotations

import json

import pytest

from mmcli.data.dataset import BATCH_KEYS
from mmcli.models import ANY_OPTION, declared_options
from test_data import _write_rows as write_rows


@pytest.mark.parametrize("setting, named, listed", [
    ("model.fusion_options.attn_dimm=7", "model.fusion_options.attn_dimm", "the options of fusion attention: attn_dim"),
    ("model.encoder_options.image.widht=3", "model.encoder_options.image.widht", "the options of encoder image.cnn: trainable, width"),
    ("model.encoder_options.text.layerz=1", "model.encoder_options.text.layerz", "encoder text.transformer: dropout, embed_dim"),
])
def test_a_misspelt_option_stops_train_before_it_trains(toy_small, tmp_path, cli, setting, named, listed):
    result = cli("train", toy_small, "--fusion", "attention", "--epochs", "1", "--out", tmp_path / "run", "--set", setting)
    assert result.exit_code == 2, result.output
    assert f"error: {named}: unknown option" in result.output and listed in result.output, result.output
    assert not (tmp_path / "run").exists()


def test_options_another_component_takes_are_kept(toy_small, tmp_path, cli):
    """A config may carry options for several fusions or encoders (compare trains them all
    with one config): concat trains with attention's attn_dim and a backbone's weights key set."""
    result = cli("train", toy_small, "--fusion", "concat", "--epochs", "1", "--out", tmp_path / "run", "--quiet",
                 "--set", "model.fusion_options.attn_dim=8", "--set", "model.encoder_options.image.pretrained=false")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.strip().splitlines()[-1])["run"]


def test_compare_refuses_a_misspelt_option_before_any_run(toy_small, tmp_path, cli):
    out = tmp_path / "cmp"
    result = cli("compare", "unimodal", "multimodal:sum", "--data", toy_small, "--epochs", "1", "--out", out,
                 "--set", "model.fusion_options.wieghts=[1,2,3]")
    assert result.exit_code == 2, result.output
    assert "model.fusion_options.wieghts: unknown option" in result.output and "fusion sum takes no options" in result.output
    assert not list(out.glob("runs/*")) if out.exists() else True


def test_every_registered_component_declares_its_options():
    """The check needs each built-in's options named in its constructor (`**_` only takes
    what build passes to all); a plug-in with its own **kwargs is not checked."""
    from mmcli.encoders import ENCODERS
    from mmcli.fusion import FUSIONS

    for entry in [*ENCODERS.entries(), *FUSIONS.entries()]:
        assert declared_options(entry.factory) is not ANY_OPTION, entry.name
    assert declared_options(ENCODERS.get("text.transformer")) >= {"layers", "heads", "embed_dim", "dropout"}

    class PlugIn:
        def __init__(self, spec, out_dim, **options):
            self.options = options

    assert declared_options(PlugIn) is ANY_OPTION


@pytest.mark.parametrize("column", ["mask", "index", "lengths", "label"])
def test_a_column_named_like_a_batch_field_trains_and_predicts(tmp_path, cli, column):
    """A batch keeps its modalities' inputs apart from its fields (mask, index, lengths,
    label...), so a text column may be named like one of them: it trains, and its words are
    what the model reads (a column that overwrote the mask, or was overwritten, could not
    tell the two classes apart)."""
    assert column in BATCH_KEYS
    rows = [{"id": f"r{i}", column: f"word{i % 2} thing", "category": f"l{i % 2}"} for i in range(60)]
    data = write_rows(tmp_path / "d.csv", rows)
    result = cli("train", data, "--epochs", "8", "--out", tmp_path / "run", "--quiet", "--set", "data.label=category")
    assert result.exit_code == 0, result.output
    for word, label in (("word0", "l0"), ("word1", "l1")):
        predicted = cli("predict", tmp_path / "run", "--text", f"{word} thing")
        assert predicted.exit_code == 0, predicted.output
        answer = json.loads(predicted.output.strip().splitlines()[-1])
        assert answer["modalities_used"] == [column] and answer["label"] == label, answer
