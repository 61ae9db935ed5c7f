"""Text tokenization with Hugging Face `tokenizers`: a WordPiece vocabulary fitted on the
training split, saved as `tokenizer-<modality>.json` in the run folder."""

from __future__ import annotations

from pathlib import Path

import torch

PAD, UNK = "[PAD]", "[UNK]"


def fit_tokenizer(texts: list[str], vocab_size: int, max_len: int):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.WordPiece(unk_token=UNK))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=[PAD, UNK], show_progress=False)
    tokenizer.train_from_iterator(texts, trainer=trainer)
    _set_lengths(tokenizer, max_len)
    return tokenizer


def _set_lengths(tokenizer, max_len: int) -> None:
    tokenizer.enable_truncation(max_length=max_len)
    tokenizer.enable_padding(pad_id=tokenizer.token_to_id(PAD), pad_token=PAD, length=max_len)


def load_tokenizer(path: Path, max_len: int):
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(path))
    _set_lengths(tokenizer, max_len)
    return tokenizer


def encode(tokenizer, texts: list[str]) -> torch.Tensor:
    """Token ids [N, max_len], padded with 0 ([PAD])."""
    encodings = tokenizer.encode_batch(texts)
    return torch.tensor([e.ids for e in encodings], dtype=torch.long)
