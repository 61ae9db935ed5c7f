"""Text tokenization with Hugging Face `tokenizers`: a WordPiece vocabulary fitted on the
training split, saved as `tokenizer-<modality>.json` in the run folder.

The vocabulary is counted here rather than by `WordPieceTrainer`, whose ties come out in
a different order in every process: the same seed must give the same tokenizer. It
holds every character seen (alone, for a word of one character) and then the most
frequent words, ties broken alphabetically. It has no `##` continuations, so a word
outside it is one `[UNK]`: with single characters as continuations, WordPiece matched an
unseen word's longest known prefix and spelled the rest ("carry" -> "car ##r ##y",
"allergy" -> "all ##e ##r ##g ##y"), so the word read as another word it merely begins
with. On mdi-icons' names the name model went from 86.3 to 88.0 % (5 seeds, paired p
0.012; docs/results.md#unseen-words).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import torch

PAD, UNK = "[PAD]", "[UNK]"
TOKENIZER_REVISION = 2  # 2 (2026-12-07): an unseen word is one [UNK], no longer spelled; in every text run's fingerprint


def _pipeline():
    from tokenizers import normalizers, pre_tokenizers

    return normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer()


def fit_tokenizer(texts: list[str], vocab_size: int, max_len: int):
    """The words of `texts`, most frequent first, up to `vocab_size` tokens in all; every
    other word is one `[UNK]`."""
    normalizer, pre_tokenizer = _pipeline()
    words: Counter[str] = Counter()
    for text in texts:
        words.update(w for w, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)))
    vocab = [PAD, UNK] + sorted({c for w in words for c in w})
    known = set(vocab)
    ranked = sorted(words.items(), key=lambda kv: (-kv[1], kv[0]))
    vocab += [w for w, _ in ranked if w not in known][: max(0, vocab_size - len(vocab))]
    return _wordpiece({t: i for i, t in enumerate(vocab)}, max_len)


def _wordpiece(vocab: dict[str, int], max_len: int):
    """The tokenizer mmcli fits, around a vocabulary: the one place it is put together."""
    from tokenizers import Tokenizer, decoders, models

    normalizer, pre_tokenizer = _pipeline()
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token=UNK, max_input_chars_per_word=100))
    tokenizer.normalizer = normalizer
    tokenizer.pre_tokenizer = pre_tokenizer
    tokenizer.decoder = decoders.WordPiece()
    _set_lengths(tokenizer, max_len)
    return tokenizer


def _set_lengths(tokenizer, max_len: int) -> None:
    tokenizer.enable_truncation(max_length=max_len)
    tokenizer.enable_padding(pad_id=tokenizer.token_to_id(PAD), pad_token=PAD, length=max_len)


def token_counts(tokenizer, texts: list[str]) -> list[int]:
    """How many tokens each text makes, uncut and unpadded (special tokens counted as the
    tokenizer adds them); the tokenizer's own lengths are left as they were."""
    raw = getattr(tokenizer, "tokenizer", tokenizer)  # a PretrainedTokenizer wraps its backend
    truncation, padding = raw.truncation, raw.padding
    raw.no_truncation()
    raw.no_padding()
    try:
        return [len(e.ids) for e in raw.encode_batch(texts)]
    finally:
        if truncation:
            raw.enable_truncation(**truncation)
        if padding:
            raw.enable_padding(**padding)


def set_max_len(tokenizer, max_len: int) -> None:
    """Cut and pad every text to `max_len` tokens, keeping the tokenizer's padding token."""
    raw = getattr(tokenizer, "tokenizer", tokenizer)
    padding = raw.padding or {"pad_id": raw.token_to_id(PAD) or 0, "pad_token": PAD}
    raw.enable_truncation(max_length=max_len)
    raw.enable_padding(pad_id=padding["pad_id"], pad_token=padding["pad_token"], length=max_len)


def load_tokenizer(path: Path, max_len: int, pretrained: bool = False):
    """A run folder's tokenizer. mmcli's own is rebuilt around the file's vocabulary, as
    `fit_tokenizer` builds it: nothing else of a file from elsewhere (normalizers, regular
    expressions, templates with ids of their own) is taken. A pretrained model's is read whole."""
    from tokenizers import Tokenizer

    from mmcli.errors import UsageError

    if not path.is_file():
        raise UsageError(f"{path.parent}: run folder has no {path.name}")
    try:
        if not pretrained:
            return _wordpiece(own_vocab(path), max_len)
        return PretrainedTokenizer(Tokenizer.from_file(str(path)), max_len)
    except UsageError:
        raise
    except BaseException as exc:  # tokenizers raises bare Exceptions, and a Rust panic is a BaseException
        if not isinstance(exc, Exception) and type(exc).__name__ != "PanicException":
            raise
        raise UsageError(f"{path}: not a tokenizer file ({str(exc)[:200]})") from None


def own_vocab(path: Path) -> dict[str, int]:
    """The WordPiece vocabulary of a tokenizer file mmcli wrote: token -> id, the ids
    0..n-1 with [PAD] 0 and [UNK] 1, as `fit_tokenizer` numbers them."""
    import json

    from mmcli.errors import UsageError

    try:
        model = json.loads(path.read_text(encoding="utf-8"))["model"]
        vocab = model["vocab"] if model.get("type") == "WordPiece" else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UsageError(f"{path}: not a tokenizer file ({exc})") from None
    if not isinstance(vocab, dict) or not all(isinstance(t, str) and type(i) is int for t, i in vocab.items()):
        raise UsageError(f"{path}: not a tokenizer mmcli wrote (no WordPiece vocabulary of tokens and ids)")
    if sorted(vocab.values()) != list(range(len(vocab))) or vocab.get(PAD) != 0 or vocab.get(UNK) != 1:
        raise UsageError(f"{path}: the vocabulary's ids are not 0..{len(vocab) - 1} with {PAD} 0 and {UNK} 1")
    return vocab


class PretrainedTokenizer:
    """A pretrained model's own tokenizer. Its ids are shifted by one, so that 0 means
    padding as for every other encoder, whatever the model's own pad id; the encoder
    shifts them back (`mmcli.encoders.pretrained_text.unshift`)."""

    pretrained = True

    def __init__(self, tokenizer, max_len: int):
        self.tokenizer = tokenizer
        pad_id = tokenizer.padding["pad_id"] if tokenizer.padding else 0
        pad_token = tokenizer.padding["pad_token"] if tokenizer.padding else (tokenizer.id_to_token(0) or "[PAD]")
        tokenizer.enable_truncation(max_length=max_len)
        tokenizer.enable_padding(pad_id=pad_id, pad_token=pad_token, length=max_len)

    @property
    def truncation(self):
        return self.tokenizer.truncation

    def get_vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size() + 1

    def to_str(self) -> str:
        return self.tokenizer.to_str()

    def encode_batch(self, texts: list[str]):
        return self.tokenizer.encode_batch(texts)


def pretrained_tokenizer(model: str, max_len: int) -> PretrainedTokenizer:
    """The tokenizer of a Hugging Face model (name or folder), through transformers."""
    from mmcli.encoders.pretrained_text import transformers_module
    from mmcli.errors import ConfigError

    transformers = transformers_module()
    try:
        auto = transformers.AutoTokenizer.from_pretrained(model, use_fast=True)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"model '{model}': cannot load its tokenizer ({exc})") from None
    backend = getattr(auto, "backend_tokenizer", None)
    if backend is None:
        raise ConfigError(f"model '{model}': has no fast (Rust) tokenizer, which mmcli needs")
    if auto.pad_token_id is not None:
        backend.enable_padding(pad_id=auto.pad_token_id, pad_token=auto.pad_token)
    return PretrainedTokenizer(backend, max_len)


def encode(tokenizer, texts: list[str]) -> torch.Tensor:
    """Token ids [N, max_len], padded with 0 ([PAD]; a pretrained tokenizer's ids + 1)."""
    if not texts:
        return torch.zeros((0, tokenizer.truncation["max_length"]), dtype=torch.long)
    encodings = tokenizer.encode_batch(texts)
    ids = torch.tensor([e.ids for e in encodings], dtype=torch.long)
    if getattr(tokenizer, "pretrained", False):
        mask = torch.tensor([e.attention_mask for e in encodings], dtype=torch.long)
        return (ids + 1) * mask
    return ids
