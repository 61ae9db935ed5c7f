"""Captioning: a source modality (image or audio) to a text target, word by word.

`--modalities SOURCE,TARGET` names the two; the target's column becomes the task's target
(like a label column) and only the source is encoded. The vocabulary is the training
captions' words (lowercased, split by the `tokenizers` library's whitespace and
punctuation rules; punctuation dropped), saved as the run's labels.json.

Scores: BLEU-1..4 (corpus BLEU from NLTK, one reference per example) and, when the
optional `pycocoevalcap` package is installed (`pip install 'mmcli[cider]'`), CIDEr-D.
`constant_bleu4` is the BLEU-4 of the best constant caption (one training caption, chosen
on the training split), the baseline any model must beat.
"""

from __future__ import annotations

import warnings
from collections import Counter
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from mmcli.kinds import KINDS, with_trait
from mmcli.errors import ConfigError
from mmcli.heads import TASKS, Task
from mmcli.heads.decoders import BOS, EOS, PAD, SPECIALS, UNK, CaptionHead

if TYPE_CHECKING:  # pragma: no cover
    from mmcli.data.dataset import Batch

BLEU_WEIGHTS = ((1.0,), (0.5, 0.5), (1 / 3,) * 3, (0.25,) * 4)
COLLAPSED = 0.5  # evaluate warns when one caption is given to this share of the sources or more
BASELINE_CANDIDATES = 40
BASELINE_REFERENCES = 2000


@lru_cache(maxsize=1)
def _splitter():
    from tokenizers.pre_tokenizers import Whitespace

    return Whitespace()


def words(text: str) -> list[str]:
    """Lowercased words, punctuation dropped: "A red Circle." -> ["a", "red", "circle"]."""
    return [w for w, _ in _splitter().pre_tokenize_str(text.lower()) if any(c.isalnum() for c in w)]


def bleu(hypotheses: list[list[str]], references: list[list[list[str]]]) -> dict[str, float]:
    """Corpus BLEU-1..4 (NLTK; a BLEU-n without any matching n-gram is 0)."""
    from nltk.translate.bleu_score import corpus_bleu

    if not hypotheses:
        return {f"bleu{n}": 0.0 for n in range(1, 5)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NLTK warns when a higher-order BLEU is 0
        values = corpus_bleu(references, hypotheses, weights=list(BLEU_WEIGHTS))
    # without any matching n-gram NLTK takes the smallest float for the precision's log, which
    # leaves values like 1e-233 where BLEU is 0
    return {f"bleu{n}": float(v) if v > 1e-12 else 0.0 for n, v in enumerate(values, start=1)}


def cider_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("pycocoevalcap") is not None


def cider(hypotheses: list[list[str]], references: list[list[list[str]]]) -> float | None:
    """CIDEr-D from pycocoevalcap (the COCO caption evaluation's), None when not installed."""
    try:
        from pycocoevalcap.cider.cider import Cider
    except ImportError:
        return None
    if not hypotheses:
        return 0.0
    gts = {i: [" ".join(r) for r in refs] for i, refs in enumerate(references)}
    res = {i: [" ".join(h) or "<empty>"] for i, h in enumerate(hypotheses)}
    return float(Cider().compute_score(gts, res)[0])


# the words outside a vocabulary that references held, numbered in the order met (in this
# process): a reference's id past the vocabulary's end names its word, so samples show it
_UNKNOWN_WORDS: list[str] = []
_UNKNOWN_INDEX: dict[str, int] = {}


def _unknown_index(word: str) -> int:
    if word not in _UNKNOWN_INDEX:
        _UNKNOWN_INDEX[word] = len(_UNKNOWN_WORDS)
        _UNKNOWN_WORDS.append(word)
    return _UNKNOWN_INDEX[word]


def diversity(hypotheses: list[list[str]]) -> dict[str, Any]:
    """The share of distinct generated captions, and the most frequent one with its share."""
    counts = Counter(" ".join(h) for h in hypotheses)
    if not counts:
        return {"distinct_captions": 0.0, "top_caption": "", "top_caption_share": 0.0}
    top, n = counts.most_common(1)[0]
    return {"distinct_captions": len(counts) / len(hypotheses), "top_caption": top, "top_caption_share": n / len(hypotheses)}


def text_pair(config, kinds: dict[str, str], is_source, task: str, needs: str, usage: str) -> tuple[str, str, bool]:
    """(source, target, whether the target is the label column) of a task that writes a text
    modality from a source (captioning, transcription): `--modalities SOURCE,TARGET`, or
    found alone where the data has one text and one source (`is_source`: of a kind name);
    a saved run's config names the source alone, and its target is the label column."""
    pair = config.model.modalities
    if pair is None:
        texts = [n for n, k in kinds.items() if KINDS[k].caption_target]
        sources = [n for n, k in kinds.items() if is_source(k)]
        if len(texts) != 1 or len(sources) != 1:
            raise ConfigError(f"the {task} task needs {needs}: choose them with "
                              f"--modalities {usage} (the data has: {', '.join(kinds) or 'none found'})")
        pair = [sources[0], texts[0]]
    if len(pair) == 1:
        return pair[0], config.data.label, True
    if len(pair) != 2:
        raise ConfigError(f"the {task} task reads --modalities {usage}, two names, not {','.join(pair)}")
    return pair[0], pair[1], False


def with_text_target(config, source: str, target: str):
    """A copy of `config` whose label column is the target modality's column and whose model
    reads the source alone."""
    config = config.copy()
    declared = config.data.modalities.get(target)
    config.data.label = declared.column if declared is not None else target
    config.data.modalities = {n: m for n, m in config.data.modalities.items() if n != target}
    config.model.modalities = [source]
    return config


def by_source(groups: list[int] | None, n: int) -> list[list[int]]:
    """The rows of each source, in order of its first row (`groups`: each row's first row
    with the same input; None: every row its own source)."""
    members: dict[int, list[int]] = {}
    for i, g in enumerate(groups if groups is not None else range(n)):
        members.setdefault(g, []).append(i)
    return list(members.values())


class Captioning(Task):
    name = "captioning"
    beam_search = True
    text_output = "caption"
    # the epoch is kept by BLEU times the share of distinct captions: on COCO-mini's 8
    # validation photos, BLEU alone kept an epoch with a third as many distinct captions as
    # test photos (docs/crossmodal.md)
    default_metric = "distinct_bleu"
    metrics = ("distinct_bleu", "bleu", "bleu4", "bleu1", "bleu2", "bleu3", "cider", "distinct_captions")
    lower_is_better = ()
    needs_label = False
    crossmodal = True
    # a language model needs more steps than a classifier: COCO-mini's 400 captions in
    # batches of 64 got 180 steps from the usual 30 epochs and one caption for every photo;
    # 120 epochs (best at 57) gave 96 % as many distinct captions as photos (docs/crossmodal.md)
    max_epochs = 120
    options = {"decoder": "gru", "layers": 1, "max_len": 20, "beam_size": 3, "min_count": 1, "no_repeat_ngram": 3,
               "label_smoothing": 0.1, "word_dropout": 0.5}

    def adapt_config(self, config, kinds: dict[str, str]):
        self.config = config
        self.check_options()
        if config.eval.metric == "cider" and not cider_installed():  # else no epoch would have a score to keep
            raise ConfigError("eval.metric=cider needs pycocoevalcap, the COCO caption evaluation: "
                              "pip install 'mmcli[cider]' (or keep the default, distinct_bleu)")
        if self.option("decoder") not in ("gru", "transformer"):
            raise ConfigError(f"model.task_options.decoder: gru or transformer, not {self.option('decoder')!r}")
        source, target, from_label = text_pair(config, kinds, lambda k: KINDS[k].caption_source, "captioning",
                                               "a source and a text target", "SOURCE,TARGET")
        if from_label and kinds:
            kinds = {**kinds, target: with_trait("caption_target")[0]}
        if kinds and not (target in kinds and KINDS[kinds[target]].caption_target and source in kinds
                          and KINDS[kinds[source]].caption_source):
            raise ConfigError(f"captioning: '{source}' must be an {' or '.join(with_trait('caption_source'))} modality "
                              f"and '{target}' a {' or '.join(with_trait('caption_target'))} one "
                              f"(the data has: {', '.join(f'{n} ({k})' for n, k in kinds.items())})")
        return with_text_target(config, source, target)

    def names(self, train_values: list[str]) -> list[str]:
        counts = Counter(w for v in train_values for w in words(v))
        kept = sorted((w for w, c in counts.items() if c >= int(self.option("min_count"))), key=lambda w: (-counts[w], w))
        return list(SPECIALS) + kept

    def check(self, values: list[str], where: list[str], names: list[str]) -> list[tuple[int, str]]:
        return [(i, f"the caption ({where[i]}) has no word") for i, v in enumerate(values) if not words(v)]

    def encode(self, values: list[str], names: list[str]) -> torch.Tensor:
        """<bos> words <eos>, whole (the references are scored whole; training reads the
        first max_len + 1). A word outside the vocabulary gets an id of its own past the
        vocabulary's end, the same for the same word, so that a reference keeps its length
        and its n-grams while no generated word can match it; the decoder reads and
        predicts it as <unk>, and `decode` shows the word."""
        index = {w: i for i, w in enumerate(names)}
        rows = [[BOS] + [index.get(w) or len(names) + _unknown_index(w) for w in words(v)] + [EOS] for v in values]
        out = torch.full((len(values), max((len(r) for r in rows), default=2)), PAD, dtype=torch.long)
        for i, ids in enumerate(rows):
            out[i, : len(ids)] = torch.tensor(ids)
        return out

    def fit_state(self, train_values: list[str], names: list[str]) -> dict[str, Any]:
        """The order of the `bleu` metric (4, or the training captions' median length where
        shorter), and the constant caption with the best training BLEU of that order (on up
        to 2,000 training captions), among the most frequent ones."""
        lengths = sorted(len(words(v)) for v in train_values)
        order = max(1, min(4, lengths[len(lengths) // 2])) if lengths else 4
        step = max(1, len(train_values) // BASELINE_REFERENCES)
        refs = [[words(v)] for v in train_values[::step]]
        candidates = [c for c, _ in Counter(" ".join(words(v)) for v in train_values).most_common(BASELINE_CANDIDATES)]
        best = max(candidates, key=lambda c: bleu([c.split()] * len(refs), refs)[f"bleu{order}"]) if candidates else ""
        return {"constant_caption": best, "bleu_order": order}

    def build_model_head(self, in_dims: dict[str, int], n_outputs: int, config) -> nn.Module:
        self.config = config
        (source, dim), = in_dims.items()
        head = CaptionHead(source, dim, n_outputs, config.model.hidden_dim, str(self.option("decoder")),
                           int(self.option("layers")), config.model.dropout, int(self.option("max_len")),
                           int(self.option("beam_size")), no_repeat=int(self.option("no_repeat_ngram")))
        head.word_dropout = float(self.option("word_dropout"))
        return head

    def loss(self, outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        target = batch["label"][:, 1: outputs.shape[1] + 1]
        target = target.masked_fill(target >= outputs.shape[-1], UNK)
        return nn.functional.cross_entropy(outputs.reshape(-1, outputs.shape[-1]).float(), target.reshape(-1), ignore_index=PAD,
                                           label_smoothing=float(self.option("label_smoothing")))

    def decode(self, ids: torch.Tensor, names: list[str]) -> list[list[str]]:
        """Word ids -> words, up to <eos>. A reference's word outside the vocabulary is
        shown as itself (no generated word can match it: only vocabulary words are generated),
        or as "<unk:ID>" where this task did not encode it."""
        out = []
        for row in ids.long().tolist():
            sentence = []
            for i in row:
                if i in (EOS, PAD):
                    break
                if i >= len(names) and i - len(names) < len(_UNKNOWN_WORDS):
                    sentence.append(_UNKNOWN_WORDS[i - len(names)])
                elif i >= len(names) or i == UNK:
                    sentence.append(f"<unk:{i}>")
                elif i != BOS:
                    sentence.append(names[i])
            out.append(sentence)
        return out

    def score(self, outputs, data, names: list[str]) -> dict[str, Any]:
        source = self.config.model.modalities[0] if self.config is not None and self.config.model.modalities else None
        return self.evaluate(outputs, data.labels, names, data.sources.get(source) if source else None)

    def evaluate(self, outputs: torch.Tensor, labels: torch.Tensor, names: list[str],
                 groups: list[int] | None = None) -> dict[str, Any]:
        """Scores per source: the rows that share a source (`groups`: each row's first row
        with the same input; a photo with five caption rows) are one example, its caption
        generated once and scored against all of their captions (multi-reference BLEU and
        CIDEr-D, as the COCO evaluation scores)."""
        rows_hyp, rows_ref = self.decode(outputs, names), self.decode(labels, names)
        members = by_source(groups, len(rows_hyp))
        hyps = [rows_hyp[rows[0]] for rows in members]
        refs = [[rows_ref[i] for i in rows] for rows in members]
        scores: dict[str, Any] = {"n_examples": len(hyps), "n_references": len(rows_ref), **bleu(hyps, refs)}
        scores["bleu"] = sum(scores[f"bleu{n}"] for n in range(1, self.bleu_order() + 1)) / self.bleu_order()
        value = cider(hyps, refs)
        if value is not None:
            scores["cider"] = value
        constant = str(self.state.get("constant_caption", "")).split()
        for key, value in bleu([constant] * len(refs), refs).items() if constant else ():
            scores[f"constant_{key}"] = value
        if constant and "cider" in scores:
            scores["constant_cider"] = cider([constant] * len(refs), refs)
        scores["constant_caption"] = " ".join(constant)
        scores.update(diversity(hyps))
        scores["distinct_bleu"] = scores["bleu"] * scores["distinct_captions"]
        scores["samples"] = [{"generated": " ".join(h), "references": [" ".join(r) for r in rs]}
                             for h, rs in zip(hyps[:5], refs)]
        return scores

    def showcase(self, outputs, data, names: list[str], n: int) -> list[dict[str, Any]]:
        """The first `n` sources: each one's first row, generated caption and references."""
        source = self.config.model.modalities[0]
        members = by_source(data.sources.get(source), len(outputs))[:n]
        hyps = self.decode(outputs[[rows[0] for rows in members]], names)
        refs = self.decode(data.labels, names)
        return [{"query": source, "rows": [{"row": rows[0], "generated": " ".join(h),
                                            "references": [" ".join(refs[i]) for i in rows]}
                                           for h, rows in zip(hyps, members)]}]

    def bleu_order(self) -> int:
        """The `bleu` metric (which `distinct_bleu`, the one that keeps the best epoch,
        weighs) is the mean of BLEU-1 to BLEU-n, n = this order: 4, or the training
        captions' median length in words where that is shorter (a 3-word caption has no
        4-gram: its BLEU-4 is 0). A mean over the
        orders moves as soon as any n-gram matches; BLEU-4 alone stayed 0 on COCO-mini's 8
        validation photos for a dozen epochs while the captions improved."""
        return int(self.state.get("bleu_order", 4))

    def final_warnings(self, scores: dict[str, Any]) -> list[str]:
        share = scores.get("top_caption_share")
        if isinstance(share, float) and share >= COLLAPSED and scores.get("n_examples", 0) >= 10:
            return [f"the model gives one caption ('{scores.get('top_caption', '')}') to {share:.0%} of the "
                    f"{scores['n_examples']} sources: it has not learned to describe them (compare its scores with "
                    f"the constant caption's)"]
        return []

    def predict(self, outputs: torch.Tensor, names: list[str], top_k: int) -> list[dict[str, Any]]:
        return [{"caption": " ".join(w)} for w in self.decode(outputs, names)]


TASKS.register("captioning", "a source (image or audio) to a text target: decoder, beam search; BLEU-1..4, CIDEr")(Captioning)
