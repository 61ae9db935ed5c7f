"""Caption decoders that attend to a source encoder's token features.

- `gru`: a GRU language model whose first state comes from the source's pooled features,
  with global attention over the source tokens after each step (Luong et al., 2015);
- `transformer`: a pre-norm Transformer decoder with learned positions, cross-attending
  to the source tokens (Vaswani et al., 2017).

Training uses teacher forcing (the true previous word at every step). Generation is one
beam search for both (a beam of 1 is greedy decoding): each step scores the whole prefix
again, which costs little at caption lengths and keeps the two decoders interchangeable.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn
from mmcli.heads.base import TaskHead

if TYPE_CHECKING:  # pragma: no cover
    from mmcli.data.dataset import Batch

PAD, BOS, EOS, UNK = 0, 1, 2, 3
SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")


class CaptionHead(TaskHead):
    def __init__(self, source: str, memory_dim: int, vocab: int, hidden: int, kind: str = "gru", layers: int = 1,
                 dropout: float = 0.1, max_len: int = 20, beam_size: int = 3, heads: int = 4, no_repeat: int = 0):
        super().__init__()
        self.source, self.kind, self.max_len, self.beam_size = source, kind, max_len, beam_size
        self.no_repeat = no_repeat  # generation never repeats an n-gram of this length (0: no rule)
        self.word_dropout = 0.0  # training: this share of the previous words read as <unk>
        # a pretrained encoder's features (a frozen MobileNetV2's, in the tens) saturated the
        # GRU's first state and the attention: the decoder learned no more than word counts
        self.memory_proj = nn.Sequential(nn.Linear(memory_dim, hidden), nn.LayerNorm(hidden))
        self.embed = nn.Embedding(vocab, hidden, padding_idx=PAD)
        self.drop = nn.Dropout(dropout)
        if kind == "gru":
            self.layers = layers
            self.init = nn.Linear(hidden, hidden * layers)
            self.rnn = nn.GRU(hidden, hidden, layers, batch_first=True, dropout=dropout if layers > 1 else 0.0)
            self.attn = nn.MultiheadAttention(hidden, 1, batch_first=True)
            self.mix = nn.Linear(2 * hidden, hidden)
        elif kind == "transformer":
            self.pos = nn.Embedding(max_len + 2, hidden)
            layer = nn.TransformerDecoderLayer(hidden, heads, 2 * hidden, dropout, batch_first=True, norm_first=True)
            self.decoder = nn.TransformerDecoder(layer, layers)
            self.norm = nn.LayerNorm(hidden)
        else:
            raise ValueError(f"decoder must be gru or transformer, not {kind!r}")
        self.out = nn.Linear(hidden, vocab)

    def memory(self, features: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """The source's pooled vector and tokens, projected: [B, 1 + T, H], and its padding [B, 1 + T]."""
        f = features[self.source]
        memory = self.memory_proj(torch.cat([f.pooled.unsqueeze(1), f.tokens], dim=1))
        pad = torch.cat([torch.zeros_like(f.token_mask[:, :1]), ~f.token_mask], dim=1)
        return memory, pad

    def logits(self, prefix: torch.Tensor, memory: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        """[B, t] word ids (starting with <bos>) -> [B, t, vocab] scores of each next word."""
        x = self.drop(self.embed(prefix))
        if self.kind == "gru":
            h0 = torch.tanh(self.init(memory[:, 0])).view(len(prefix), self.layers, -1).transpose(0, 1).contiguous()
            states, _ = self.rnn(x, h0)
            context, _ = self.attn(states, memory, memory, key_padding_mask=pad, need_weights=False)
            hidden = torch.tanh(self.mix(torch.cat([states, context], dim=-1)))
        else:
            t = prefix.shape[1]
            x = x + self.pos(torch.arange(t, device=prefix.device))
            causal = nn.Transformer.generate_square_subsequent_mask(t, device=prefix.device, dtype=torch.bool)
            hidden = self.norm(self.decoder(x, memory, tgt_mask=causal, tgt_is_causal=True,
                                            tgt_key_padding_mask=prefix == PAD, memory_key_padding_mask=pad))
        return self.out(self.drop(hidden))

    def forward(self, features: dict, mask: dict, batch: Batch) -> torch.Tensor:
        """Training: teacher-forced scores [B, L - 1, vocab]. Otherwise: generated word ids
        [B, max_len + 1] (at most max_len words, then <eos>, then padding)."""
        memory, pad = self.memory(features)
        if self.training:
            prefix = batch["label"][:, :-1][:, : self.max_len + 1]  # the longest captions are cut
            prefix = prefix.masked_fill(prefix >= self.out.out_features, UNK)
            if self.word_dropout > 0:  # the decoder must read the source, not only the words so far
                hidden = (torch.rand(prefix.shape, device=prefix.device) < self.word_dropout) & (prefix > UNK)
                prefix = prefix.masked_fill(hidden, UNK)
            return self.logits(prefix, memory, pad)
        return self.generate(memory, pad, self.beam_size)

    @torch.no_grad()
    def generate(self, memory: torch.Tensor, pad: torch.Tensor, beam: int) -> torch.Tensor:
        """Beam search: the k best prefixes by summed log-probability are kept at each step
        (a finished caption stays, growing only padding); the final pick among the k is by
        the mean log-probability per word, so short captions are not favoured. <unk> is
        never generated, nor (with `no_repeat` n) a word that would repeat an n-gram of its
        caption; the last step can only end the caption, so it has at most max_len words."""
        b, k, width = len(memory), max(1, beam), self.max_len + 1
        memory, pad = memory.repeat_interleave(k, 0), pad.repeat_interleave(k, 0)
        seqs = torch.full((b * k, 1), BOS, dtype=torch.long, device=memory.device)
        scores = torch.full((b, k), float("-inf"), device=memory.device)
        scores[:, 0] = 0.0  # one live beam at first, so the k beams do not start as copies
        done = torch.zeros(b * k, dtype=torch.bool, device=memory.device)
        for step in range(width):
            logp = torch.log_softmax(self.logits(seqs, memory, pad)[:, -1].float(), dim=-1)
            logp[:, PAD] = logp[:, BOS] = logp[:, UNK] = float("-inf")
            if step == width - 1:  # max_len words so far: only <eos> is left
                logp[:, :EOS] = logp[:, EOS + 1:] = float("-inf")
            elif self.no_repeat > 0:
                ban_repeats(logp, seqs, self.no_repeat)
            logp[done] = float("-inf")
            logp[done, PAD] = 0.0  # a finished caption only grows padding, at no cost
            vocab = logp.shape[1]
            top, index = (scores.view(-1, 1) + logp).view(b, k * vocab).topk(k, dim=1)
            rows = (torch.arange(b, device=memory.device).unsqueeze(1) * k + index // vocab).view(-1)
            words = (index % vocab).view(-1, 1)
            seqs, done = torch.cat([seqs[rows], words], dim=1), done[rows] | (words.view(-1) == EOS)
            scores = top
            if bool(done.all()):
                break
        lengths = (seqs[:, 1:] != PAD).sum(dim=1).clamp(min=1).view(b, k).float()
        best = (scores / lengths).argmax(dim=1)
        chosen = seqs.view(b, k, -1)[torch.arange(b), best, 1:]
        return nn.functional.pad(chosen, (0, width - chosen.shape[1]), value=PAD)


def ban_repeats(logp: torch.Tensor, seqs: torch.Tensor, n: int) -> None:
    """Set to -inf, in each row of `logp` [R, vocab], every word that would complete an
    n-gram already in that row's prefix `seqs` [R, t] (after <bos>)."""
    if seqs.shape[1] < n:  # <bos> and fewer than n - 1 words: no n-gram can repeat yet
        return
    for r, row in enumerate(seqs[:, 1:].tolist()):
        if len(row) < n - 1:
            continue
        tail = tuple(row[len(row) - n + 1:]) if n > 1 else ()
        banned = [row[i + n - 1] for i in range(len(row) - n + 1) if tuple(row[i: i + n - 1]) == tail]
        if banned:
            logp[r, banned] = float("-inf")
