"""Fuzzing (Hypothesis) of the manifest reader, the config overrides and text
preprocessing: whatever the input, only mmcli's own errors come out."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmcli.config import DataConfig, resolve
from mmcli.data.manifest import detect_modalities, read_manifest
from mmcli.errors import ConfigError, MmcliError

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

cells = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
csv_text = st.lists(st.lists(cells, min_size=1, max_size=5), min_size=0, max_size=6).map(
    lambda rows: "\n".join(",".join(r) for r in rows))


@FAST
@given(body=st.one_of(csv_text, st.text(max_size=200), st.binary(max_size=200).map(lambda b: b.decode("latin-1"))),
       suffix=st.sampled_from([".csv", ".tsv", ".jsonl"]), raw=st.binary(max_size=64), as_bytes=st.booleans())
def test_manifest_reader_raises_only_its_own_errors(body, suffix, raw, as_bytes):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"data{suffix}"
        path.write_bytes(raw if as_bytes else body.encode("utf-8", "surrogatepass"))
        try:
            manifest = read_manifest(path)
            detect_modalities(manifest, DataConfig())
        except MmcliError:
            pass


keys = st.sampled_from(["train.epochs", "train.lr", "model.fusion", "data.modalities", "model.fusion_options.weights",
                        "eval.metric", "data.image_mean", "train", "nodot", "model.encoders.text", "x.y.z", ""])
values = st.one_of(st.text(max_size=20), st.integers().map(str), st.floats(allow_nan=True).map(str),
                   st.sampled_from(["[1, 2]", "{a: 1}", "null", "~", "[", "{", "'", "!!python/object:os.system", "1e-3", "yes"]))


@FAST
@given(expressions=st.lists(st.tuples(keys, values, st.booleans()), max_size=4))
def test_set_expressions_raise_only_config_errors(expressions):
    sets = [f"{k}={v}" if eq else f"{k}{v}" for k, v, eq in expressions]
    try:
        resolve(None, None, sets)
    except ConfigError:
        pass


_tokenizer = None


@FAST
@given(texts=st.lists(st.text(max_size=300), min_size=1, max_size=8))
def test_text_preprocessing_takes_any_text(texts):
    from mmcli.data import text as text_mod

    global _tokenizer
    if _tokenizer is None:
        _tokenizer = text_mod.fit_tokenizer(["a red round thing", "a blue square"] * 5, 50, 16)
    ids = text_mod.encode(_tokenizer, texts)
    assert ids.shape == (len(texts), 16) and int(ids.min()) >= 0
    fitted = text_mod.fit_tokenizer([t for t in texts if t.strip()] or ["x"], 30, 8)
    assert text_mod.encode(fitted, texts).shape == (len(texts), 8)
