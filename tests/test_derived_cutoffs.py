"""Length limits derived from the data (issue 19, the cut-offs): by default data.max_seconds
and data.text_max_len fit the data (95th percentile, rounded up, within bounds), are
logged, saved in the run folder and shared by every variant of a comparison; a limit set
in the config still says how many examples it cuts."""

from __future__ import annotations

import csv
import logging

import numpy as np
import pytest
import yaml

from mmcli.data import lengths

CUT = "cut there"


def long_data(folder, n: int = 12, seconds: float = 6.0, words: int = 60):
    """n rows of `seconds`-long clips at 8 kHz (a tone, per label) and texts of `words` words."""
    import soundfile

    (folder / "clips").mkdir(parents=True)
    rng = np.random.default_rng(3)
    vocabulary = [f"word{i}" for i in range(40)]
    rows = []
    for i in range(n):
        label = ["low", "high"][i % 2]
        t = np.arange(int(seconds * 8000)) / 8000.0
        soundfile.write(folder / "clips" / f"c{i}.wav", (0.3 * np.sin(2 * np.pi * (300 if label == "low" else 900) * t))
                        .astype(np.float32), 8000)
        text = " ".join([label, *rng.choice(vocabulary, words - 1)])
        rows.append({"id": f"r{i}", "sound": f"clips/c{i}.wav", "note": text, "label": label})
    path = folder / "data.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return long_data(tmp_path_factory.mktemp("long"))


def saved(run) -> dict:
    return yaml.safe_load((run / "config.yaml").read_text())["data"]


def test_long_clips_and_texts_are_not_cut_by_default(data, tmp_path, cli, caplog):
    caplog.set_level(logging.INFO, logger="mmcli")
    result = cli("train", data, "--epochs", "1", "--out", tmp_path / "run", "--cache-dir", tmp_path / "cache")
    assert result.exit_code == 0, result.output
    assert CUT not in result.output and "upper bound" not in result.output
    config = saved(tmp_path / "run")
    assert config["max_seconds"] == 6.0  # not the 2 s of the toy set
    assert config["text_max_len"] == 60  # 60 words of the vocabulary: 60 tokens, not 32
    spec = __import__("json").loads((tmp_path / "run" / "data.json").read_text())["modalities"]["sound"]
    assert spec["frames"] == int(6.0 * 16000) // 256 + 1
    messages = [r.getMessage() for r in caplog.records]
    assert any("data.max_seconds=6 s (95th percentile of 12 recordings of 'sound' in all rows" in m
               and "cuts 0 of them" in m for m in messages), messages
    assert any(m.startswith("data.text_max_len=60 tokens (99th percentile of") and "cuts 0 of them" in m
               for m in messages), messages
    # evaluate reads the saved limits: the same spectrograms and token ids as in training
    evaluated = cli("evaluate", tmp_path / "run", "--cache-dir", tmp_path / "cache")
    assert evaluated.exit_code == 0, evaluated.output


def test_a_limit_set_in_the_config_says_how_many_it_cuts(data, tmp_path, cli):
    result = cli("train", data, "--epochs", "1", "--out", tmp_path / "run", "--cache-dir", tmp_path / "cache",
                 "--set", "data.max_seconds=2", "--set", "data.text_max_len=32")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if CUT in line]
    assert any(line.startswith("warning: sound:") and "data.max_seconds=2 s" in line for line in lines), result.output
    assert any(line.startswith("warning: note:") and "data.text_max_len=32 tokens" in line for line in lines), result.output
    assert all(" of the 8 training examples" in line and line.split(": ")[2].startswith("8 of") for line in lines), lines
    assert saved(tmp_path / "run")["max_seconds"] == 2.0 and saved(tmp_path / "run")["text_max_len"] == 32


def test_null_means_derived_and_compare_shares_the_derived_limits(data, tmp_path, cli):
    """`--set data.max_seconds=null` is the default; compare's plan holds the derived values,
    so every variant (and --job K in another process) uses the same ones."""
    out = tmp_path / "cmp"
    result = cli("compare", "unimodal", "--data", data, "--seeds", "1", "--out", out, "--print-jobs",
                 "--cache-dir", tmp_path / "cache", "--set", "data.max_seconds=null", "--set", "data.text_max_len=null")
    assert result.exit_code == 0, result.output
    plan = __import__("json").loads((out / "compare.json").read_text())
    assert plan["config"]["data"]["max_seconds"] == 6.0 and plan["config"]["data"]["text_max_len"] == 60


def test_an_unseen_word_is_one_unknown_token_never_a_known_word_it_begins_with(tmp_path, cli):
    """mmcli's vocabulary has no spelling pieces: a word outside it is one [UNK], so a new
    text makes as many tokens as a training text of as many words, and "carry" never reads
    as "car" (mdi-icons' names: 86.3 -> 88.0 %, docs/results.md#unseen-words)."""
    import random

    from mmcli.data.text import fit_tokenizer, token_counts

    texts = ["car red", "account tag", "all clear"]
    tokenizer = fit_tokenizer(texts, 2000, 16)
    assert token_counts(tokenizer, texts) == [2, 2, 2]
    assert [t for t in tokenizer.encode("carry tag allergy c").tokens if t != "[PAD]"] == ["[UNK]", "tag", "[UNK]", "c"]
    assert not any(t.startswith("##") for t in tokenizer.get_vocab())
    assert fit_tokenizer(texts, 15, 16).get_vocab_size() == 15  # [PAD], [UNK], 11 characters and 2 words: the cap counts all
    rng = random.Random(0)
    rows = [{"id": f"r{i}", "name": f"{['cat', 'dog'][i % 2]} {''.join(rng.choice('abcdefghij') for _ in range(10))}",
             "label": ["cat", "dog"][i % 2]} for i in range(40)]
    path = tmp_path / "names.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    result = cli("train", path, "--epochs", "1", "--out", tmp_path / "run", "--cache-dir", tmp_path / "cache")
    assert result.exit_code == 0, result.output
    assert saved(tmp_path / "run")["text_max_len"] == 8  # two tokens a name, new or not: the lower bound
    from mmcli.data.text import load_tokenizer

    fitted = load_tokenizer(tmp_path / "run" / "tokenizer-name.json", 8)  # none of the 40 names is cut
    assert not any(e.overflowing for e in fitted.encode_batch([r["name"] for r in rows]))


@pytest.mark.parametrize("lengths_, bounds, step, value, cut, capped", [
    ([1.0] * 19 + [100.0], lengths.SECONDS, 0.1, 6.0, 1, False),  # one outlier does not set the limit (p95 = 5.95)
    ([6.0] * 20, lengths.SECONDS, 0.1, 6.0, 0, False),  # exactly 6 s stays 6.0, not 6.1
    ([0.14, 0.2, 0.3], lengths.SECONDS, 0.1, 0.5, 0, False),  # the lower bound
    ([120.0] * 10, lengths.SECONDS, 0.1, 30.0, 10, True),  # the upper bound
    ([3, 4, 5], lengths.TOKENS, 1, 8, 0, False),
    (list(range(1, 101)), lengths.TOKENS, 1, 96, 4, False),  # p95 = 95.05, rounded up
    ([2000] * 5, lengths.TOKENS, 1, 512, 5, True),
])
def test_derive(lengths_, bounds, step, value, cut, capped):
    limit = lengths.derive(lengths_, bounds, step)
    assert (limit.value, limit.cut, limit.capped, limit.measured) == (pytest.approx(value), cut, capped, len(lengths_))


def test_the_cache_key_holds_the_derived_seconds(tmp_path):
    """Clips of another length make another derived limit: the cache is not reused for it."""
    from mmcli.config import DataConfig
    from mmcli.data.preprocess import preprocess

    short = preprocess(long_data(tmp_path / "short", n=4, seconds=1.0, words=3), config := DataConfig(), tmp_path / "c")
    assert config.max_seconds == 1.0 and short.tensors["sound"].shape[2] == 16000 // 256 + 1
    longer = preprocess(long_data(tmp_path / "long", n=4, seconds=3.0, words=3), other := DataConfig(), tmp_path / "c")
    assert other.max_seconds == 3.0 and longer.key != short.key and longer.tensors["sound"].shape[2] == 3 * 16000 // 256 + 1


def test_with_a_split_column_only_the_train_rows_set_the_seconds(tmp_path):
    """The test rows' 3 s clips do not raise the limit that the 1 s training clips derive."""
    from mmcli.config import DataConfig
    from mmcli.data.manifest import detect_modalities, read_manifest

    short, longer = long_data(tmp_path / "a", n=4, seconds=1.0, words=3), long_data(tmp_path / "b", n=2, seconds=3.0, words=3)
    rows = list(csv.DictReader(open(short))) + [dict(r, id=f"t{i}", sound=f"../b/{r['sound']}")
                                                for i, r in enumerate(csv.DictReader(open(longer)))]
    path = tmp_path / "a" / "split.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*rows[0], "split"])
        writer.writeheader()
        writer.writerows(dict(r, split="test" if r["id"].startswith("t") else "train") for r in rows)
    manifest, config = read_manifest(path), DataConfig()
    lengths.resolve_seconds(config, manifest, detect_modalities(manifest, config))
    assert config.max_seconds == 1.0
    config = DataConfig(split_column="none")  # without a split column: every row
    lengths.resolve_seconds(config, manifest, detect_modalities(manifest, config))
    assert config.max_seconds == 3.0


def test_a_derived_limit_capped_by_its_bound_is_a_warning(caplog):
    from mmcli.config import DataConfig
    from mmcli.data.text import fit_tokenizer

    texts = [" ".join(["word"] * 600), " ".join(["word"] * 700)]
    tokenizer, config = fit_tokenizer(texts, 50, 16), DataConfig()
    lengths.resolve_tokens(config, {"note": tokenizer}, {"note": texts})
    assert config.text_max_len == 512 and tokenizer.truncation["max_length"] == 512
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("data.text_max_len=512 tokens (the upper bound" in w and "cuts 2 of them" in w for w in warnings), warnings


def test_a_run_folder_with_null_limits_is_refused(data, tmp_path, cli):
    """A run folder holds the limits it was trained with; null there is a damaged file, not a crash."""
    run = tmp_path / "run"
    assert cli("train", data, "--epochs", "1", "--out", run, "--cache-dir", tmp_path / "cache").exit_code == 0
    text = (run / "config.yaml").read_text()
    (run / "config.yaml").write_text(text.replace("max_seconds: 6.0", "max_seconds: null"))
    result = cli("evaluate", run, "--cache-dir", tmp_path / "cache")
    assert result.exit_code == 2 and "config.yaml" in result.output and "data.max_seconds is null" in result.output, \
        result.output


def test_the_limits_default_to_derived_and_keep_their_ranges():
    from mmcli.config import from_dict
    from mmcli.errors import ConfigError

    config = from_dict({})
    assert config.data.max_seconds is None and config.data.text_max_len is None  # derived from the data
    assert from_dict({"data": {"max_seconds": None, "text_max_len": None}}) == config
    assert from_dict({"data": {"max_seconds": 6, "text_max_len": 61}}).data.max_seconds == 6.0
    with pytest.raises(ConfigError, match="data.text_max_len"):
        from_dict({"data": {"text_max_len": 0}})


def test_transcription_keeps_every_clip_whole(tmp_path, caplog):
    """20 clips of 1 s and one of 3 s: the 95th percentile (other tasks) cuts the long one,
    transcription's limit (its length_percentile, 100) covers it, and the log says which."""
    from mmcli.config import DataConfig, from_dict
    from mmcli.data.manifest import detect_modalities, read_manifest
    from mmcli.heads import make_task

    short, longer = long_data(tmp_path / "a", n=20, seconds=1.0, words=3), long_data(tmp_path / "b", n=1, seconds=3.0, words=3)
    rows = list(csv.DictReader(open(short))) + [dict(r, id="long", sound=f"../b/{r['sound']}") for r in csv.DictReader(open(longer))]
    path = tmp_path / "a" / "all.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    manifest = read_manifest(path)
    chosen = {}
    for task in ("classification", "transcription"):
        caplog.clear()
        config = DataConfig()
        percentile = make_task(from_dict({"model": {"task": task}})).length_percentile
        with caplog.at_level(logging.INFO, logger="mmcli"):
            lengths.resolve_seconds(config, manifest, detect_modalities(manifest, config), percentile)
        chosen[task] = config.max_seconds, " ".join(r.getMessage() for r in caplog.records)
    assert chosen["classification"][0] == 1.0 and "95th percentile" in chosen["classification"][1]
    assert "cuts 1 of them" in chosen["classification"][1]
    assert chosen["transcription"][0] == 3.0 and "100th percentile" in chosen["transcription"][1]
    assert "cuts 0 of them" in chosen["transcription"][1]


def test_a_text_run_s_fingerprint_holds_the_tokenizer_s_revision(toy_small, tmp_path, monkeypatch):
    """A comparison resumed after mmcli's tokenizer changed trains its text runs again
    (their vocabulary, and so their embedding rows, differ), and keeps its other runs."""
    from mmcli.config import from_dict
    from mmcli.data import text
    from mmcli.pipeline import prepare_training
    from mmcli.training.api import data_fingerprint

    data = prepare_training(from_dict({"data": {"manifest": str(toy_small)}}), cache_dir=str(tmp_path), report=False)
    configs = {m: from_dict({"data": {"manifest": str(toy_small)}, "model": {"modalities": m.split(",")}})
               for m in ("audio", "text", "audio,text")}
    before = {m: data_fingerprint(c, data) for m, c in configs.items()}
    monkeypatch.setattr(text, "TOKENIZER_REVISION", text.TOKENIZER_REVISION + 1)
    after = {m: data_fingerprint(c, data) for m, c in configs.items()}
    assert after["audio"] == before["audio"]
    assert after["text"] != before["text"] and after["audio,text"] != before["audio,text"]
