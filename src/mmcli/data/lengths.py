"""Length limits derived from the data: `data.max_seconds` and `data.text_max_len` when the
config leaves them unset (None, the default), so that the defaults fit the data at hand
instead of the toy set they were once sized for (issue 19).

A derived limit is the 95th percentile of the clips' durations (a task may ask for
another: transcription covers every clip, as a cut clip loses words its transcript keeps)
and the 99th of the texts' token counts, rounded up (seconds to a tenth, tokens to a whole
token) and kept within bounds. The percentile keeps nearly every example whole, while a
few very long outliers do not set the length that every example is padded to: the cache
stores each spectrogram, and the encoder each text, at the limit's length, so memory and
time grow with it for all examples, not only the outliers. Texts cover more: a token costs
little beside a spectrogram's frames, and each cut word is lost (mdi-icons' names, 5
seeds: 85.9 % at the 95th percentile, 86.2 % at the 99th, higher on every seed).

- Seconds: from the audio files' headers (no decoding), before preprocessing (the
  spectrograms' frame count depends on it, and so does the cache key, which holds the
  derived value). With a split column, the rows marked `train` (some of which may be
  drawn into validation later); without, every row: the split is drawn later, and a
  file's duration says nothing of its label, so nothing of the test rows leaks.
  A preprocessed cache given as DATA keeps the length its spectrograms were made with.
- Tokens: the training split's texts, counted with the tokenizer fitted on them, without
  truncation or padding (a pretrained tokenizer's special tokens count, as it adds them).
  The vocabulary mmcli fits makes a new text's unseen word one `[UNK]`, as many tokens as
  a training text's word, so the training texts stand for the new ones. (When unseen
  words were spelled in characters, a limit counted on the training texts cut 5.5 % of
  mdi-icons' test names, and the training texts were counted with their words seen once
  spelled.)

Data without audio (or text) never uses the limit; it gets the former default (2 s, 32
tokens), so a saved config is complete and cache keys of such data do not change.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from mmcli.kinds import KINDS
from mmcli.config import DataConfig, ModalityConfig

LOG = logging.getLogger("mmcli")
PERCENTILE = 95
TEXT_PERCENTILE = 99  # a token costs little beside a spectrogram's frames, and a cut word is lost (mdi-icons' names)
SECONDS = (0.5, 30.0)  # a derived max_seconds: at least a syllable, at most what a batch of clips affords
TOKENS = (8, 512)  # a derived text_max_len: 512 is the position limit of BERT-style pretrained encoders
UNUSED_SECONDS, UNUSED_TOKENS = 2.0, 32  # data without audio, without text: the fixed defaults mmcli had before


@dataclass
class Limit:
    value: float
    measured: int  # how many lengths it was derived from
    cut: int  # how many of them are longer
    capped: bool  # the percentile lay above the upper bound


def derive(lengths: Sequence[float], bounds: tuple[float, float], step: float, percentile: float = PERCENTILE) -> Limit:
    """The `percentile` of `lengths` (not empty), rounded up to a multiple of `step`, within `bounds`."""
    raw = float(np.percentile(np.asarray(lengths, dtype=np.float64), percentile))
    value = math.ceil(round(raw / step, 6)) * step  # round first: 6.0 s must not become 6.1 through 60.0000001
    value = round(min(max(value, bounds[0]), bounds[1]), 6)
    return Limit(value, len(lengths), sum(1 for n in lengths if n > value), raw > bounds[1])


def resolve_seconds(config: DataConfig, manifest, modalities: dict[str, ModalityConfig],
                    percentile: float = PERCENTILE) -> None:
    """Set config.max_seconds, where unset, from the audio files' durations (see above): the
    `percentile` of them (the task's `length_percentile`)."""
    if config.max_seconds is not None:
        return
    audio = [n for n, m in modalities.items() if KINDS[m.kind].seconds_limit]
    if not audio:
        config.max_seconds = UNUSED_SECONDS
        return
    rows, where = _seconds_rows(manifest, config)
    durations = {n: [d for d in (_duration(manifest, KINDS[modalities[n].kind].field(manifest.rows[i], modalities[n]),
                                           modalities[n].kind) for i in rows)
                     if d is not None] for n in audio}
    durations = {n: d for n, d in durations.items() if d}
    if not durations:  # no readable file: preprocessing names each bad row
        config.max_seconds = UNUSED_SECONDS
        return
    limits = {n: derive(d, SECONDS, 0.1, percentile) for n, d in durations.items()}
    config.max_seconds = max(lim.value for lim in limits.values())  # each modality covered
    for name, d in durations.items():
        limit = Limit(config.max_seconds, len(d), sum(1 for x in d if x > config.max_seconds), limits[name].capped)
        _report(f"data.max_seconds={config.max_seconds:g} s", limit, f"recordings of '{name}' in {where}",
                "--set data.max_seconds=SECONDS", percentile)


def _seconds_rows(manifest, config: DataConfig) -> tuple[list[int], str]:
    """The rows whose durations count: those marked train, else all (see the module's docstring)."""
    rows = list(range(len(manifest.rows)))
    if config.split_column in manifest.columns:
        train = [i for i in rows if manifest.rows[i].get(config.split_column) == "train"]
        if train:
            return train, f"the rows marked train in column '{config.split_column}'"
    return rows, "all rows (no split column: the split is drawn later, and a duration reveals no label)"


def _duration(manifest, cell: str, kind: str) -> float | None:
    """Seconds of audio a file holds, from its header; None for an empty cell or a file that
    preprocessing will refuse (it names the row: nothing is said here)."""
    from mmcli.data.decode import file_problem
    from mmcli.data.manifest import media_path

    if not cell.strip():
        return None
    try:
        name, window = KINDS[kind].clip(cell)
    except ValueError:  # not a window: the row checks name it
        return None
    path = media_path(manifest.root, name)
    if file_problem(path) is not None:  # a FIFO would block, a device never end
        return None
    whole = KINDS[kind].duration(path)
    if window is None or whole is None:
        return whole
    start, end = window
    return max(0.0, min(whole, end if end is not None else whole) - (start or 0.0))


def resolve_cached_seconds(config: DataConfig, table) -> None:
    """A cache folder given as DATA: the max_seconds its spectrograms were made with (from
    their frame count and the configured sample_rate and hop_length), where unset."""
    from mmcli.data.decode import audio_frames

    if config.max_seconds is not None:
        return
    frames = [int(table.tensors[n].shape[2]) for n, m in table.modalities.items()
              if KINDS[m.kind].seconds_limit and n in table.tensors and table.tensors[n].dim() == 3]
    if not frames:
        config.max_seconds = UNUSED_SECONDS
        return
    exact = (frames[0] - 1) * config.hop_length / config.sample_rate
    config.max_seconds = max(exact, 1e-6)
    if audio_frames(config) != frames[0]:  # float rounding took a frame off: aim at the middle of the frame
        config.max_seconds = ((frames[0] - 1) * config.hop_length + 0.5) / config.sample_rate
    LOG.info("data.max_seconds=%g s (the length of the spectrograms in the cache %s)", config.max_seconds, table.key)


def resolve_tokens(config: DataConfig, tokenizers: dict, texts: dict[str, list[str]]) -> None:
    """Set config.text_max_len, where unset, from the training texts of each text modality
    (`texts`: name -> its training texts), and every tokenizer's length to it: the largest
    of the modalities' limits, so that each is covered."""
    from mmcli.data.text import set_max_len, token_counts

    if config.text_max_len is not None:
        return
    counts = {n: token_counts(tokenizers[n], t) for n, t in texts.items() if t}
    limits = {n: derive(c, TOKENS, 1, TEXT_PERCENTILE) for n, c in counts.items()}
    config.text_max_len = int(max((lim.value for lim in limits.values()), default=UNUSED_TOKENS))
    for name, c in counts.items():
        limit = Limit(config.text_max_len, len(c), sum(1 for n in c if n > config.text_max_len), limits[name].capped)
        _report(f"data.text_max_len={config.text_max_len} tokens", limit, f"training texts of '{name}'",
                "--set data.text_max_len=TOKENS", TEXT_PERCENTILE)
    for tokenizer in tokenizers.values():
        set_max_len(tokenizer, config.text_max_len)


def _report(what: str, limit: Limit, of: str, how: str, percentile: float = PERCENTILE) -> None:
    """INFO: the derived limit and what it covers; a WARNING only where the upper bound cut it
    short of the percentile (then more than 5 % of the examples are cut)."""
    if limit.capped and limit.cut:
        LOG.warning("%s (the upper bound; the %gth percentile of %s %s is longer) cuts %s of them; %s keeps more",
                    what, percentile, f"{limit.measured:,}", of, f"{limit.cut:,}", how)
        return
    LOG.info("%s (%gth percentile of %s %s; cuts %s of them)", what, percentile, f"{limit.measured:,}", of,
             f"{limit.cut:,}")
