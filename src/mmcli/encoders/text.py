"""Text encoders over token ids [B, L] (0 is padding), trained from scratch on the
project's own tokenizer. Pretrained Hugging Face encoders are in `pretrained_text.py`."""

from __future__ import annotations

import math

import torch
from torch import nn

from mmcli.encoders import EMBEDDING_STD, ENCODERS, Encoder, ModalitySpec, embedding


class _RNN(Encoder):
    """Embedding + one bidirectional recurrent layer; the states are the tokens."""

    cell: type[nn.RNNBase] = nn.GRU

    def __init__(self, spec: ModalitySpec, out_dim: int, embed_dim: int = 64, hidden: int = 64, **_: object):
        super().__init__()
        self.embed = embedding(spec.vocab_size, embed_dim)
        self.rnn = self.cell(embed_dim, hidden, batch_first=True, bidirectional=True)  # type: ignore[call-arg, arg-type]
        self.proj = nn.Linear(2 * hidden, out_dim)
        self.out_dim = out_dim

    def features(self, x: torch.Tensor, lengths: torch.Tensor | None = None):
        mask = x != 0
        # packed, so the backward direction starts at the last real token, not at padding
        counts = mask.sum(dim=1).clamp(min=1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(self.embed(x), counts, batch_first=True, enforce_sorted=False)
        states, _ = self.rnn(packed)
        states, _ = nn.utils.rnn.pad_packed_sequence(states, batch_first=True, total_length=x.shape[1])
        return states, mask


class BiGRU(_RNN):
    """Embedding + one bidirectional GRU layer; the states are the tokens."""


class BiLSTM(_RNN):
    """Embedding + one bidirectional LSTM layer; the states are the tokens."""

    cell = nn.LSTM


class TextCNN(Encoder):
    """Embedding + parallel 1-D convolutions of widths 2, 3, 4 (Kim, 2014), max-pooled."""

    pool = "max"

    def __init__(self, spec: ModalitySpec, out_dim: int, embed_dim: int = 64, channels: int = 64, **_: object):
        super().__init__()
        self.embed = embedding(spec.vocab_size, embed_dim)
        self.convs = nn.ModuleList(nn.Conv1d(embed_dim, channels, k, padding=k // 2) for k in (2, 3, 4))
        self.proj = nn.Linear(3 * channels, out_dim)
        self.out_dim = out_dim

    def features(self, x: torch.Tensor, lengths: torch.Tensor | None = None):
        mask = x != 0
        emb = self.embed(x).transpose(1, 2)
        maps = [torch.relu(conv(emb))[..., : x.shape[1]] for conv in self.convs]
        return torch.cat(maps, dim=1).transpose(1, 2), mask


class Bag(Encoder):
    """Embedding bag (fastText-style; Joulin et al., 2017): each token's embedding, averaged
    over the real tokens after the projection. No order, few parameters: short texts such
    as names and titles, whose words carry the meaning, generalise better than through
    convolutions or recurrences, which memorise their few training examples."""

    def __init__(self, spec: ModalitySpec, out_dim: int, embed_dim: int = 128, norm: bool = True, **_: object):
        super().__init__()
        self.norm_pooled = norm
        self.embed = embedding(spec.vocab_size, embed_dim)
        self.proj = nn.Linear(embed_dim, out_dim)
        self.out_dim = out_dim

    def features(self, x: torch.Tensor, lengths: torch.Tensor | None = None):
        return self.embed(x), x != 0


def sinusoids(length: int, dim: int, device=None) -> torch.Tensor:
    """Fixed sine/cosine positions (Vaswani et al., 2017): any length, no parameters."""
    position = torch.arange(length, device=device, dtype=torch.float32).unsqueeze(1)
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim, device=device)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq[: dim // 2])
    return table


class SmallTransformer(Encoder):
    """Embedding + sinusoidal positions + a small pre-norm Transformer encoder (2 layers,
    4 heads); padding is masked out of attention."""

    def __init__(self, spec: ModalitySpec, out_dim: int, embed_dim: int = 64, layers: int = 2, heads: int = 4,
                 dropout: float = 0.1, norm: bool = True, position_scale: float = EMBEDDING_STD, **_: object):
        super().__init__()
        self.norm_pooled = norm
        self.position_scale = position_scale  # the positions' size beside the tokens' (both N(0, 0.02) at the start)
        self.embed = embedding(spec.vocab_size, embed_dim)
        layer = nn.TransformerEncoderLayer(embed_dim, heads, 2 * embed_dim, dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(embed_dim)
        self.proj = nn.Linear(embed_dim, out_dim)
        self.out_dim = out_dim

    def blocks(self) -> list[nn.Module]:
        return [self.embed, *self.encoder.layers, self.norm]

    def features(self, x: torch.Tensor, lengths: torch.Tensor | None = None):
        mask = x != 0
        h = self.embed(x) + self.position_scale * sinusoids(x.shape[1], self.embed.embedding_dim, x.device)
        # an example without any token (a missing text) still attends to its first place,
        # so that attention has something to normalise over; the mask hides it afterwards
        attend = mask.clone()
        attend[:, 0] = True
        h = self.norm(self.encoder(h, src_key_padding_mask=~attend))
        return h * mask.unsqueeze(-1), mask


ENCODERS.register("text.bigru", "embedding + bidirectional GRU", tags=("text",))(BiGRU)
ENCODERS.register("text.bilstm", "embedding + bidirectional LSTM", tags=("text",))(BiLSTM)
ENCODERS.register("text.textcnn", "embedding + TextCNN (Kim, 2014)", tags=("text",))(TextCNN)
ENCODERS.register("text.bag", "embedding bag: the mean of the token embeddings (fastText-style)",
                  tags=("text",))(Bag)
ENCODERS.register("text.transformer", "embedding + small Transformer encoder (2 layers, 4 heads)",
                  tags=("text",))(SmallTransformer)
