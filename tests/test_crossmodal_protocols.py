"""The field's protocols for cross-modal data (issue 20): the rows of one source (a photo
with five captions) stay in one split and are scored together; captions against every
reference, retrieval with several positives; beam search without repeated n-grams."""

from __future__ import annotations

import json
import logging
import random

import pytest
import torch

from mmcli.data.splits import assign_splits, content_groups
from test_datasets import SHARED_DATA, rows_of

needs_coco = pytest.mark.skipif(not (SHARED_DATA / "coco-mini" / "annotations").is_dir(),
                                reason="../shared/data/coco-mini is absent")


def test_a_drawn_split_keeps_each_source_whole():
    groups = [i // 5 for i in range(200)]  # 40 photos, five caption rows each
    splits = assign_splits(None, None, 3, 0.1, 0.2, groups=groups)
    for g in set(groups):
        assert len({s for s, h in zip(splits, groups) if h == g}) == 1
    assert splits.count("test") == 40 and splits.count("val") == 20  # 8 and 4 photos of the 40
    per_row = assign_splits(["_"] * 200, None, 3, 0.1, 0.2)  # without groups, a photo's rows are drawn apart
    assert any(len({per_row[i] for i in range(200) if groups[i] == g}) > 1 for g in set(groups))


def test_a_split_column_that_straddles_a_source_is_reported(caplog):
    groups = [0, 0, 1, 1, 2, 2]
    with caplog.at_level(logging.WARNING, logger="mmcli"):
        assign_splits(None, ["train", "test", "train", "train", "val", "val"], 0, 0.1, 0.2, "m.csv", groups)
    assert "1 of the 3 sources" in caplog.text


def test_equal_inputs_share_a_group():
    x = torch.tensor([[1, 2, 0], [3, 4, 0], [1, 2, 0], [1, 2, 9]])
    assert content_groups(x) == [0, 1, 0, 3]
    assert content_groups(x, torch.tensor([2, 2, 2, 2])) == [0, 1, 0, 0]  # equal up to their lengths


def test_captions_are_scored_per_source_against_every_reference():
    from mmcli.config import Config
    from mmcli.heads.captioning import Captioning, bleu, cider

    refs = ["a dog on the grass", "a brown dog running", "dog in a field", "a red bus on the street",
            "a bus parked by the road", "two cats on a bed"]
    task = Captioning(Config())
    vocab = task.names(refs)
    targets = task.encode(refs, vocab)
    said = ["a brown dog on the grass", "a bus parked on the street", "two cats on a bed"]
    generated = task.encode([said[0]] * 3 + [said[1]] * 2 + [said[2]], vocab)[:, 1:]  # without <bos>, as generated
    groups = [0, 0, 0, 3, 3, 5]
    scores = task.evaluate(generated, targets, vocab, groups)
    hyps = [s.split() for s in said]
    multi = [[r.split() for r in refs[:3]], [r.split() for r in refs[3:5]], [refs[5].split()]]
    assert scores["n_examples"] == 3 and scores["n_references"] == 6
    assert scores["bleu4"] == pytest.approx(bleu(hyps, multi)["bleu4"]) and scores["bleu4"] > 0
    assert scores["cider"] == pytest.approx(cider(hyps, multi))
    # one reference per row (the old scoring) gives other numbers: the five references matter
    single = task.evaluate(generated, targets, vocab)
    assert single["n_examples"] == 6 and single["bleu2"] != pytest.approx(scores["bleu2"])
    assert scores["distinct_captions"] == 1.0 and scores["samples"][0]["references"] == refs[:3]


def test_one_caption_for_everything_is_named():
    from mmcli.config import Config
    from mmcli.heads.captioning import Captioning

    refs = [f"a photo of thing {i}" for i in range(12)]
    task = Captioning(Config())
    vocab = task.names(refs)
    generated = task.encode(["a photo of thing"] * 12, vocab)[:, 1:]
    scores = task.evaluate(generated, task.encode(refs, vocab), vocab)
    assert scores["top_caption_share"] == 1.0 and scores["distinct_captions"] == pytest.approx(1 / 12)
    assert "one caption ('a photo of thing') to 100%" in task.final_warnings(scores)[0]
    varied = task.evaluate(task.encode(refs, vocab)[:, 1:], task.encode(refs, vocab), vocab)
    assert varied["distinct_captions"] == 1.0 and task.final_warnings(varied) == []


def test_the_kept_epoch_prefers_captions_of_their_own_over_one_safe_caption():
    """The default metric, the one that keeps an epoch, is BLEU times the share of distinct
    captions: a generic caption for every photo that matches more n-grams than specific,
    less fluent ones loses to them, though its BLEU is higher."""
    from mmcli.config import Config
    from mmcli.heads.captioning import Captioning

    refs = [f"a man riding a wave on a {thing}" for thing in ("surfboard", "board", "boat", "raft", "log", "kayak")]
    task = Captioning(Config())
    vocab = task.names(refs)
    labels = task.encode(refs, vocab)
    safe = task.evaluate(task.encode(["a man riding a wave on a board"] * 6, vocab)[:, 1:], labels, vocab)
    specific = task.evaluate(task.encode([f"a man on a wave on a {t}" for t in ("surfboard", "board", "boat", "raft", "log", "kayak")],
                                         vocab)[:, 1:], labels, vocab)
    assert task.default_metric == "distinct_bleu"
    assert safe["bleu"] > specific["bleu"]
    assert safe["distinct_bleu"] == pytest.approx(safe["bleu"] / 6)
    assert specific["distinct_bleu"] == pytest.approx(specific["bleu"]) and specific["distinct_bleu"] > safe["distinct_bleu"]


def _hand_recalls(sim_rows: torch.Tensor, image_of: list[int], k: int) -> tuple[float, float]:
    """R@k by a direct count; sim_rows[i, j]: row i's image against row j's caption (images repeat)."""
    images = sorted(set(image_of), key=image_of.index)
    first = {g: image_of.index(g) for g in images}
    t2i = 0
    for i in range(len(image_of)):  # caption -> image: its own image among the distinct images
        scores = [(float(sim_rows[first[g], i]), -n) for n, g in enumerate(images)]
        order = [images[-s[1]] for s in sorted(scores, key=lambda s: (-s[0], -s[1]))]
        t2i += image_of[i] in order[:k]
    i2t = 0
    for g in images:  # image -> caption: a hit when any of its captions is within k of all captions
        scores = sorted(range(len(image_of)), key=lambda j: (-float(sim_rows[first[g], j]), j))
        i2t += any(image_of[j] == g for j in scores[:k])
    return i2t / len(images), t2i / len(image_of)


@pytest.mark.parametrize("seed", [0, 1])
def test_multi_positive_recall_equals_a_direct_count(seed):
    from mmcli.config import Config
    from mmcli.heads.retrieval import Retrieval

    rng = random.Random(seed)
    image_of = [g for g in range(12) for _ in range(rng.randint(1, 5))]
    rng.shuffle(image_of)
    torch.manual_seed(seed)
    photos = torch.nn.functional.normalize(torch.randn(12, 8), dim=-1)
    outputs = torch.stack([photos[image_of], torch.nn.functional.normalize(torch.randn(len(image_of), 8), dim=-1)], dim=1)
    config = Config()
    config.model.modalities = ["image", "text"]
    task = Retrieval(config)
    groups = [image_of.index(g) for g in image_of]  # each row's first row with the same photo
    scores = task.evaluate(outputs, torch.zeros(len(image_of)), ["pair"], (groups, list(range(len(image_of)))))
    sim = outputs[:, 0] @ outputs[:, 1].t()  # [row's image, row's caption]
    for k in (1, 5, 10):
        i2t, t2i = _hand_recalls(sim, image_of, k)
        assert scores[f"image_to_text_R@{k}"] == pytest.approx(i2t)
        assert scores[f"text_to_image_R@{k}"] == pytest.approx(t2i)
    assert scores["n_image"] == 12 and scores["n_text"] == len(image_of)
    assert scores["image_to_text_chance_R@1"] == pytest.approx(len(image_of) / 12 / len(image_of))


def test_beam_search_never_repeats_an_ngram_when_the_rule_is_on():
    from types import SimpleNamespace

    from mmcli.heads.decoders import EOS, PAD, CaptionHead

    torch.manual_seed(0)
    feats = {"image": SimpleNamespace(pooled=torch.randn(3, 12), tokens=torch.randn(3, 4, 12),
                                      token_mask=torch.ones(3, 4, dtype=torch.bool))}
    captions = {}
    for rule in (0, 2):
        head = CaptionHead("image", 12, vocab=12, hidden=16, max_len=10, no_repeat=rule).eval()
        with torch.no_grad():  # a decoder that loves word 5 and word 6
            head.out.bias.zero_()
            head.out.bias[5], head.out.bias[6], head.out.bias[EOS] = 8.0, 7.5, -8.0
        memory, pad = head.memory(feats)
        out = head.generate(memory, pad, beam=3).tolist()
        captions[rule] = [[t for t in row if t not in (PAD, EOS)] for row in out]
    for words in captions[2]:
        bigrams = list(zip(words, words[1:]))
        assert len(bigrams) == len(set(bigrams)) and len(words) <= 10
    assert any(len(set(zip(w, w[1:]))) < len(w) - 1 for w in captions[0])  # without the rule it repeats
    assert all(len(w) <= 10 for w in captions[0])  # max_len words at most


@needs_coco
def test_coco_mini_no_photo_in_two_splits_and_scored_per_photo(cli, tmp_path):
    coco = tmp_path / "coco"
    assert cli("datasets", "get", "coco-captions", str(coco), "--source", str(SHARED_DATA), "--quiet").exit_code == 0
    rows = rows_of(coco / "captions.csv")
    drop_split = coco / "nosplit.csv"  # no split column: mmcli draws the split, by photo
    with open(drop_split, "w", encoding="utf-8") as fh:
        fh.write("id,image,text\n" + "".join(f"{r['id']},{r['image']},\"{r['text']}\"\n" for r in rows))
    common = ["--epochs", "1", "--set", "data.image_size=32", "--modalities", "image,text"]
    run = tmp_path / "ret"
    result = cli("train", str(drop_split), "--task", "retrieval", "--out", str(run), *common)
    assert result.exit_code == 0, result.output
    record = json.loads((run / "splits.json").read_text())
    photos = {s: {i.rsplit("-", 1)[0] for i in record["splits"][s]["ids"]} for s in ("train", "val", "test")}
    assert photos["test"] and photos["val"] and not (photos["train"] & photos["test"]) \
        and not (photos["train"] & photos["val"]) and not (photos["val"] & photos["test"])
    scores = json.loads((run / "eval-test.json").read_text())
    assert scores["n_image"] == len(photos["test"]) and scores["n_examples"] == 5 * len(photos["test"])
    # R@K against a direct count from the run's own embeddings of the test rows
    test_ids = set(record["splits"]["test"]["ids"])
    test_csv = tmp_path / "test.csv"
    with open(test_csv, "w", encoding="utf-8") as fh:
        fh.write("id,image,text\n" + "".join(f"{r['id']},{coco / r['image']},\"{r['text']}\"\n"
                                             for r in rows if r["id"] in test_ids))
    embedded = cli("predict", str(run), str(test_csv), "--embed")
    assert embedded.exit_code == 0, embedded.output
    lines = [json.loads(x) for x in embedded.stdout.splitlines() if x.strip()]
    image = torch.tensor([x["image"] for x in lines])
    text = torch.tensor([x["text"] for x in lines])
    image_of = [x["id"].rsplit("-", 1)[0] for x in lines]
    for k in (1, 5):
        i2t, t2i = _hand_recalls(image @ text.t(), image_of, k)
        assert scores[f"image_to_text_R@{k}"] == pytest.approx(i2t, abs=1e-6)
        assert scores[f"text_to_image_R@{k}"] == pytest.approx(t2i, abs=1e-6)
    # captioning on the recipe's split column (train2017 / val2017): five references per photo
    cap = tmp_path / "cap"
    result = cli("train", str(coco / "captions.csv"), "--task", "captioning", "--out", str(cap), *common)
    assert result.exit_code == 0, result.output
    scores = json.loads((cap / "eval-test.json").read_text())
    assert scores["n_examples"] == 79 and scores["n_references"] == 5 * 79
    assert all(len(s["references"]) == 5 for s in scores["samples"])


def test_a_group_column_names_the_sources(tmp_path):
    from mmcli.config import DataConfig
    from mmcli.data.preprocess import preprocess
    from mmcli.data.splits import source_groups

    rows = [f"r{i},{'ab'[i % 2]} caption {i},{'' if i == 5 else f'p{i // 2}'},x{i % 3}" for i in range(8)]
    (tmp_path / "m.csv").write_text("id,text,group,label\n" + "\n".join(rows) + "\n")
    table = preprocess(str(tmp_path / "m.csv"), DataConfig(), str(tmp_path / "cache"))
    assert "group" not in table.modalities  # the group column is not a text modality
    groups = source_groups(table)
    assert groups is not None and groups[0] == groups[1] and groups[2] == groups[3] and groups[0] != groups[2]
    assert groups[5] not in (groups[4], groups[6])  # an empty value: a source of its own
    splits = assign_splits(["_"] * 8, None, 0, 0.25, 0.25, groups=groups)
    assert splits[0] == splits[1] and splits[2] == splits[3] and splits[6] == splits[7]


def test_preprocess_takes_caption_data_without_a_label_column(cli, toy_small):
    captions = toy_small.parent / "captions.csv"
    refused = cli("preprocess", str(captions))  # classification, the default task, needs one
    assert refused.exit_code == 2 and "no label column" in refused.output
    for task in ("retrieval", "captioning"):
        result = cli("preprocess", str(captions), "--set", f"model.task={task}")
        assert result.exit_code == 0, result.output
        counts = [int(x) for x in result.output.strip().splitlines()[-1].split(",")]  # train, val, test, total
        assert counts[3] == 240 and sum(counts[:3]) == 240 and min(counts[:3]) > 0


def test_recalls_and_ranks_are_drawn_in_separate_panels(tmp_path):
    from PIL import Image

    from mmcli.reporting.plots import CURVES_SIZE, learning_curves

    records = [{"epoch": e, "train_loss": 3.0 / e, "val_loss": 3.2 / e, "val_a_to_b_R@1": 0.1 * e,
                "val_a_to_b_median_rank": 40.0 / e, "val_n_examples": 79} for e in (1, 2, 3)]
    with Image.open(learning_curves(records, tmp_path / "ret.png", 2)) as im:
        assert im.size == (CURVES_SIZE[0] * 3 // 2, CURVES_SIZE[1])  # loss, recalls, ranks
    rates = [{k: v for k, v in r.items() if "rank" not in k} for r in records]
    with Image.open(learning_curves(rates, tmp_path / "cls.png", 2)) as im:
        assert im.size == CURVES_SIZE  # loss and rates


def test_cider_as_the_kept_metric_needs_pycocoevalcap(monkeypatch):
    """Without it no epoch has a CIDEr-D to keep: refused before anything trains."""
    from mmcli.config import from_dict
    from mmcli.errors import ConfigError
    from mmcli.heads import captioning

    config = from_dict({"model": {"task": "captioning", "modalities": ["image", "text"]}, "eval": {"metric": "cider"}})
    kinds = {"image": "image", "text": "text"}
    monkeypatch.setattr(captioning, "cider_installed", lambda: False)
    with pytest.raises(ConfigError, match="pip install 'mmcli\\[cider\\]'"):
        captioning.Captioning(config).adapt_config(config, kinds)
    monkeypatch.setattr(captioning, "cider_installed", lambda: True)
    assert captioning.Captioning(config).adapt_config(config, kinds).model.modalities == ["image"]
