"""Transcription: speech to text, one character at a time, with CTC (Graves et al., 2006).

`--modalities SOURCE,TARGET` names a speech modality (a caption source read as a signal in
seconds: audio) and its text transcript; the transcript's column becomes the task's target
and only the source is encoded. The head reads the source encoder's frame tokens, runs a
bidirectional GRU over them (`head`: gru, lstm or linear) and gives log-probabilities over
the vocabulary at every token; `torch.nn.functional.ctc_loss` (blank = 0) sums over all
alignments. Vocabulary (the run's labels.json): `<blank>` and the characters of the
normalised training transcripts (`normalise`).

Defaults measured on FSDD and the spoken COCO captions (docs/transcription.md): the GRU
head beat the LSTM (spoken captions: WER 0.58 against 0.64) and a linear head; a second
recurrent layer and SpecAugment were worse within the budget. Where the config leaves
`train.batch_size` at its default, batches of 16 (BATCH_SIZE): CTC from scratch needs
many updates, and the budget rule (about 1,500 steps, at most 30 epochs) gives the 360
spoken captions only 180 at 64, which never left the all-blank output (WER 1.0).

Time resolution. CTC emits at most one character per token and needs a blank between two
equal characters, so the encoder must give clearly more tokens than the speech has
characters (about 12-16 a second). The audio encoders' default, one token per 8 frames
(7.8 a second at hop_length 256 and 16 kHz), is too coarse. Rule: unless the config sets
`time_stride` for the source's encoder, this task takes the largest stride (8, 4, 2, 1)
that leaves at least TOKENS_PER_SECOND = 40 tokens a second, 2.5 per character at 16
characters a second: stride 1 (62.5 tokens a second) at the default data settings, 2 at
hop_length 160. Other tasks keep stride 8.

Decoding: greedy (the best label per frame, repeats collapsed, blanks dropped) or CTC
prefix beam search (Hannun et al., 2014, "First-pass large vocabulary continuous speech
recognition using bi-directional recurrent DNNs"), with `beam_size` > 1 or `predict
--beam N`; its answer is whichever of its final beams and the greedy answer has the higher
exact CTC probability, so it is never less probable than greedy.

Scores (jiwer): WER and CER over the whole split (edits summed over references' words or
characters); `word_accuracy` = max(0, 1 - WER) for `evaluate --robustness`: a rate in [0, 1]
as mmcli's rates are, where 0 means no better than the empty transcript. `baseline_wer` /
`baseline_cer`: those of the best constant transcript, chosen on the training split by CER.
"""

from __future__ import annotations

import math
import unicodedata
from collections import Counter
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from mmcli.config import TrainConfig
from mmcli.errors import ConfigError
from mmcli.heads import TASKS, Task
from mmcli.heads.base import TaskHead
from mmcli.heads.captioning import text_pair, with_text_target
from mmcli.kinds import KINDS

if TYPE_CHECKING:  # pragma: no cover
    from mmcli.data.dataset import Batch

BLANK = 0
BLANK_NAME = "<blank>"
TOKENS_PER_SECOND = 40.0
BATCH_SIZE = 16  # where the config leaves train.batch_size at its default (64): see the module's docstring
UNKNOWN_CHARS = 0xE000  # a reference's character outside the vocabulary: a private-use code point of its own
BASELINE_CANDIDATES, BASELINE_REFERENCES = 40, 2000
PRUNE = math.log(1e-4)  # beam search: a character below this log-probability at a frame is not tried there
RECURRENT = {"gru": nn.GRU, "lstm": nn.LSTM}
HEADS = (*RECURRENT, "linear")
APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'"})


def normalise(text: str) -> str:
    """Lowercase; letters, digits and apostrophes kept, every other character a space;
    runs of spaces collapsed: "Hot-dogs, 2 of them." -> "hot dogs 2 of them"."""
    text = unicodedata.normalize("NFC", text).translate(APOSTROPHES).lower()
    return " ".join("".join(c if c.isalnum() or c == "'" else " " for c in text).split())


def speech_kinds() -> list[str]:
    return [k for k, kind in KINDS.items() if kind.caption_source and kind.seconds_limit]


def greedy_decode(logp: torch.Tensor) -> list[int]:
    """[T, V] log-probabilities -> label ids: the best per frame, repeats collapsed, blanks dropped."""
    best = logp.argmax(dim=-1).tolist()
    return [c for i, c in enumerate(best) if c != BLANK and (i == 0 or c != best[i - 1])]


def _add(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    return max(a, b) + math.log1p(math.exp(-abs(a - b)))


def prefix_beam_search(logp: torch.Tensor, beam: int) -> list[tuple[int, ...]]:
    """CTC prefix beam search over [T, V] log-probabilities: the `beam` best label prefixes
    (best first), each scored by its probability of ending in a blank plus of ending in
    its last label, summed over the alignments that stayed in the beam."""
    rows = logp.float().tolist()
    beams: dict[tuple[int, ...], tuple[float, float]] = {(): (0.0, -math.inf)}  # prefix -> (log p blank, log p label)
    for row in rows:
        chars = [c for c in range(1, len(row)) if row[c] >= PRUNE] or [max(range(1, len(row)), key=row.__getitem__)]
        nxt: dict[tuple[int, ...], list[float]] = {}
        for prefix, (pb, pl) in beams.items():
            total = _add(pb, pl)
            here = nxt.setdefault(prefix, [-math.inf, -math.inf])
            here[0] = _add(here[0], total + row[BLANK])
            for c in chars:
                longer = nxt.setdefault(prefix + (c,), [-math.inf, -math.inf])
                if prefix and c == prefix[-1]:  # a repeat joins the last label unless a blank came between
                    here[1] = _add(here[1], pl + row[c])
                    longer[1] = _add(longer[1], pb + row[c])
                else:
                    longer[1] = _add(longer[1], total + row[c])
        ranked = sorted(nxt.items(), key=lambda kv: -_add(*kv[1]))[: max(1, beam)]
        beams = {p: (s[0], s[1]) for p, s in ranked}
    return list(beams)


def sequence_logp(logp: torch.Tensor, candidates: list[list[int]]) -> torch.Tensor:
    """The exact CTC log-probability of each label sequence given [T, V] log-probabilities."""
    n = len(candidates)
    width = max(1, max((len(c) for c in candidates), default=1))
    targets = torch.ones(n, width, dtype=torch.long)
    for i, c in enumerate(candidates):
        targets[i, : len(c)] = torch.tensor(c, dtype=torch.long)
    inputs = logp.float().unsqueeze(1).expand(-1, n, -1)
    lengths = torch.full((n,), logp.shape[0], dtype=torch.long)
    return -nn.functional.ctc_loss(inputs, targets, lengths, torch.tensor([len(c) for c in candidates]),
                                   blank=BLANK, reduction="none")


def beam_decode(logp: torch.Tensor, beam: int) -> list[int]:
    """Prefix beam search's answer, or greedy's where that is more probable (see the module's docstring)."""
    greedy = greedy_decode(logp)
    if beam <= 1:
        return greedy
    candidates = [list(p) for p in prefix_beam_search(logp, beam)]
    if greedy not in candidates:
        candidates.append(greedy)
    return candidates[int(sequence_logp(logp, candidates).argmax())]


def error_rates(hypotheses: list[str], references: list[str]) -> tuple[float, float]:
    """(WER, CER) of the whole corpus, by jiwer."""
    import jiwer

    if not references:
        return 0.0, 0.0
    return float(jiwer.wer(references, hypotheses)), float(jiwer.cer(references, hypotheses))


def ctc_losses(logp: torch.Tensor, target: torch.Tensor, zero_infinity: bool = True) -> torch.Tensor:
    """Each clip's CTC loss per target character, from log-probabilities [B, T, V] whose
    padding frames are certain blanks (CTCHead's) and targets [B, L] padded with the blank's
    0; target ids past the vocabulary (characters unseen in training) are left out."""
    keep = (target > BLANK) & (target < logp.shape[-1])
    frames = torch.isfinite(logp[:, :, BLANK + 1:]).any(dim=-1).sum(dim=1)
    lengths = keep.sum(dim=1)
    losses = nn.functional.ctc_loss(logp.transpose(0, 1).float(), target[keep], frames, lengths, blank=BLANK,
                                    reduction="none", zero_infinity=zero_infinity)
    return losses / lengths.clamp(min=1)


def reverse_within(x: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """[B, T, D] with each row's first counts[b] steps in reverse order, the padding left in
    place (its own inverse)."""
    steps = torch.arange(x.shape[1], device=x.device).unsqueeze(0)
    index = counts.to(x.device).unsqueeze(1) - 1 - steps
    index = torch.where(index >= 0, index, steps.expand_as(index))
    return x.gather(1, index.unsqueeze(-1).expand_as(x))


class CTCHead(TaskHead):
    """The source's tokens [B, T, D] -> (a bidirectional LSTM or GRU) -> log-probabilities
    [B, T, V]; a padding frame is a certain blank, so the loss can count each clip's
    frames. Outside training the output is [B, 1 + max_len]: each clip's CTC loss (NaN
    without a target: predict) and its decoded label ids, padded with the blank's 0.

    The two directions are two recurrent stacks, the backward one run on each clip
    reversed within its length: the same as a packed bidirectional layer, at a fifteenth
    of the CPU time (torch's backward pass through packed sequences zero-fills a tensor
    of the whole batch at every step: 2.2 s against 0.16 s a step at 16 x 300 tokens)."""

    def __init__(self, source: str, dim: int, vocab: int, hidden: int, kind: str = "gru", layers: int = 1,
                 dropout: float = 0.1, max_len: int = 400, beam_size: int = 1):
        super().__init__()
        self.source, self.kind, self.max_len, self.beam_size = source, kind, max_len, beam_size
        self.drop = nn.Dropout(dropout)
        if kind in RECURRENT:
            make = RECURRENT[kind]
            self.ahead = make(dim, hidden, layers, batch_first=True, dropout=dropout if layers > 1 else 0.0)
            self.back = make(dim, hidden, layers, batch_first=True, dropout=dropout if layers > 1 else 0.0)
            dim = 2 * hidden
        elif kind != "linear":
            raise ValueError(f"head must be {', '.join(HEADS)}, not {kind!r}")
        self.out = nn.Linear(dim, vocab)

    def log_probs(self, features: dict) -> torch.Tensor:
        f = features[self.source]
        x, mask = f.tokens, f.token_mask
        if self.kind in RECURRENT:
            x, counts = self.drop(x), mask.sum(dim=1).clamp(min=1)
            x = torch.cat([self.ahead(x)[0], reverse_within(self.back(reverse_within(x, counts))[0], counts)], dim=-1)
        logits = self.out(self.drop(x)).float()
        certain_blank = torch.full_like(logits[0, 0], -math.inf)
        certain_blank[BLANK] = 0.0
        logits = torch.where(mask.unsqueeze(-1), logits, certain_blank)
        return torch.log_softmax(logits, dim=-1)

    def forward(self, features: dict, mask: dict, batch: Batch) -> torch.Tensor:
        logp = self.log_probs(features)
        if self.training:
            return logp
        frames = features[self.source].token_mask.sum(dim=1).tolist()
        out = torch.zeros(len(logp), 1 + self.max_len)
        target = batch.get("label")
        out[:, 0] = float("nan") if target is None else ctc_losses(logp, target, zero_infinity=False).cpu()
        for i, (row, n) in enumerate(zip(logp.detach().cpu(), frames)):
            ids = beam_decode(row[: max(1, int(n))], self.beam_size)[: self.max_len]
            out[i, 1: 1 + len(ids)] = torch.tensor(ids, dtype=torch.float)
        return out.to(logp.device)


class Transcription(Task):
    name = "transcription"
    beam_search = True
    text_output = "transcript"
    default_metric = "wer"
    metrics = ("wer", "cer", "word_accuracy")
    lower_is_better = ("wer", "cer", "loss")
    robustness_metric = "word_accuracy"
    needs_label = False
    crossmodal = True
    length_percentile = 100.0  # a derived data.max_seconds keeps every clip whole: a cut clip loses words its transcript keeps
    options = {"head": "gru", "layers": 1, "beam_size": 1, "max_len": 400}

    def adapt_config(self, config, kinds: dict[str, str]):
        self.config = config
        self.check_options()
        if self.option("head") not in HEADS:
            raise ConfigError(f"model.task_options.head: {', '.join(HEADS)}, not {self.option('head')!r}")
        speech = speech_kinds()
        source, target, _ = text_pair(config, kinds, speech.__contains__, "transcription",
                                      "a speech modality and its transcript", "SPEECH,TRANSCRIPT")
        text_target = KINDS[kinds[target]].caption_target if target in kinds else target == config.data.label
        if kinds and not (text_target and kinds.get(source) in speech):
            raise ConfigError(f"transcription: '{source}' must be an {' or '.join(speech)} modality and '{target}' a "
                              f"text one (the data has: {', '.join(f'{n} ({k})' for n, k in kinds.items())})")
        config = with_text_target(config, source, target)
        if config.train.batch_size == TrainConfig().batch_size:
            config.train.batch_size = BATCH_SIZE
        kind = kinds.get(source) or (config.data.modalities[source].kind if source in config.data.modalities else None)
        return with_time_stride(config, source, kind) if kind else config

    def names(self, train_values: list[str]) -> list[str]:
        return [BLANK_NAME] + sorted({c for v in train_values for c in normalise(v)})

    def check(self, values: list[str], where: list[str], names: list[str]) -> list[tuple[int, str]]:
        return [(i, f"the transcript ({where[i]}) has no letter or digit") for i, v in enumerate(values) if not normalise(v)]

    def encode(self, values: list[str], names: list[str]) -> torch.Tensor:
        """The normalised characters' ids, padded with the blank's 0 (no character is 0, so
        the loss counts each row's characters). A character outside the vocabulary gets an
        id past the vocabulary's end, the same for the same character within one call: the
        loss leaves it out, while the reference keeps it, and nothing generated matches it."""
        index = {c: i for i, c in enumerate(names)}
        unknown: dict[str, int] = {}
        rows = [[index.get(c) or unknown.setdefault(c, len(names) + len(unknown)) for c in normalise(v)] for v in values]
        out = torch.zeros((len(values), max((len(r) for r in rows), default=1) or 1), dtype=torch.long)
        for i, ids in enumerate(rows):
            out[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return out

    def decode(self, ids: torch.Tensor, names: list[str]) -> list[str]:
        """Label ids -> strings; an id past the vocabulary becomes a private-use character of its own."""
        out = []
        for row in ids.long().tolist():
            out.append("".join(names[i] if i < len(names) else chr(UNKNOWN_CHARS + i - len(names)) for i in row if i > BLANK))
        return [" ".join(s.split()) for s in out]

    def fit_state(self, train_values: list[str], names: list[str]) -> dict[str, Any]:
        """The constant transcript with the best training CER (then WER), on up to 2,000
        training transcripts, among the most frequent transcripts and words and the empty
        one; saved in target.json as `constant_transcript`.
        By CER, the finer measure: on FSDD every digit word has a WER of about 0.9, and the
        most frequent one (picked by WER) has a CER of 0.9 where the best has 0.75."""
        texts = [normalise(v) for v in train_values]
        refs = [t for t in texts[:: max(1, len(texts) // BASELINE_REFERENCES)] if t]
        common = [t for t, _ in Counter(texts).most_common(BASELINE_CANDIDATES)]
        common += [w for w, _ in Counter(w for t in texts for w in t.split()).most_common(BASELINE_CANDIDATES // 2)]
        candidates = list(dict.fromkeys(["", *common]))
        return {"constant_transcript": min(candidates, key=lambda c: error_rates([c] * len(refs), refs)[::-1])}

    def build_model_head(self, in_dims: dict[str, int], n_outputs: int, config) -> nn.Module:
        self.config = config
        (source, dim), = in_dims.items()
        return CTCHead(source, dim, n_outputs, config.model.hidden_dim, str(self.option("head")), int(self.option("layers")),
                       config.model.dropout, int(self.option("max_len")), int(self.option("beam_size")))

    def loss(self, outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        """CTC (`ctc_losses`) of the log-probabilities [B, T, V], the mean over the batch."""
        return ctc_losses(outputs, batch["label"]).mean()

    def transcripts(self, outputs: torch.Tensor, names: list[str]) -> list[str]:
        """The head's outputs (a loss column, then label ids) as strings."""
        return self.decode(outputs[:, 1:], names)

    def evaluate(self, outputs: torch.Tensor, labels: torch.Tensor, names: list[str]) -> dict[str, Any]:
        """WER, CER and the validation loss (the mean over clips whose CTC loss is finite:
        early stopping waits while it falls, as WER sits near 1 until a model spells words)."""
        hyps, refs = self.transcripts(outputs, names), self.decode(labels, names)
        wer, cer = error_rates(hyps, refs)
        scores: dict[str, Any] = {"n_examples": len(refs), "wer": wer, "cer": cer, "word_accuracy": max(0.0, 1.0 - wer)}
        losses = outputs[:, 0].float()
        if bool(torch.isfinite(losses).any()):
            scores["loss"] = float(losses[torch.isfinite(losses)].mean())
        constant = str(self.state.get("constant_transcript", ""))
        scores["baseline_wer"], scores["baseline_cer"] = error_rates([constant] * len(refs), refs)
        scores["baseline_transcript"] = constant
        scores["samples"] = [{"generated": h, "reference": r} for h, r in zip(hyps[:5], refs)]
        return scores

    def errors(self, outputs, targets, names: list[str], top_k: int) -> list[dict[str, Any]]:
        """The clips transcribed wrongly, the highest CER first."""
        hyps, refs = self.transcripts(outputs, names), self.decode(targets, names)
        rates = [error_rates([h], [r])[1] for h, r in zip(hyps, refs)]
        wrong = sorted((i for i in range(len(refs)) if hyps[i] != refs[i]), key=lambda i: -rates[i])
        return [{"row": i, "transcript": hyps[i], "true": refs[i], "cer": round(rates[i], 6)} for i in wrong]

    def predict(self, outputs: torch.Tensor, names: list[str], top_k: int) -> list[dict[str, Any]]:
        return [{"transcript": t} for t in self.transcripts(outputs, names)]


def with_time_stride(config, source: str, kind: str):
    """`config` with the source encoder's `time_stride` chosen by the module's rule, where
    the encoder takes one and the config sets none."""
    from mmcli.encoders import ENCODERS, ModalitySpec
    from mmcli.models import declared_options, encoder_choice

    name, options = encoder_choice(config, ModalitySpec(name=source, kind=kind))
    if "time_stride" in options or name not in ENCODERS or "time_stride" not in (declared_options(ENCODERS.get(name)) or ()):
        return config
    per_second = config.data.sample_rate / config.data.hop_length
    stride = max((s for s in (8, 4, 2, 1) if per_second / s >= TOKENS_PER_SECOND), default=1)
    given = config.model.encoder_options.get(source) or config.model.encoder_options.get(kind) or {}
    config.model.encoder_options[source] = {**given, "time_stride": stride}
    return config


TASKS.register("transcription", "speech to text: CTC over the audio encoder's frames; WER, CER")(Transcription)
