"""The text encoder of a modality whose config names none, chosen from its training texts
(issue 19): `bag` for short texts, `transformer` for longer ones. Like the length limits
of `mmcli.data.lengths`, the choice is derived once the data is split, logged, and saved
with the run."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from mmcli.config import Config
from mmcli.data import text as text_mod
from mmcli.models import chosen_modalities

if TYPE_CHECKING:
    from mmcli.pipeline import RunData

LOG = logging.getLogger("mmcli")

SHORT_TEXT_TOKENS = 8  # a median at most this long: names, titles, tags, keywords (not sentences)


def text_encoder_defaults(config: Config, data: RunData, log: bool = True) -> Config:
    """The config with an encoder for each text modality the model reads that has none set
    (neither by its name nor by the kind `text`, and no options for it): `bag` where the
    training split's texts are short, a median of at most SHORT_TEXT_TOKENS tokens, else
    `transformer`. Saved with the run, so `predict` builds the same model.

    The words of a name or a title carry its meaning; a Transformer trained from scratch on
    a few thousand of them memorises them instead. On mdi-icons' names (median 3 tokens)
    the bag scored 85.7 % against 84.7 % alone and lifted every fusion by 0.6-1.0 points.
    On COCO captions (median 11) it was better alone (48.9 against 46.0 %) but its fused
    models fell 6-10 points below the Transformer's, so sentences keep the Transformer
    (5 seeds each; docs/results.md#short-texts)."""
    model = config.model
    unset = [n for n in chosen_modalities(config, list(data.modalities))
             if data.table.modalities[n].kind == "text" and not model.encoders.get(n) and not model.encoders.get("text")
             and not model.encoder_options.get(n) and not model.encoder_options.get("text")]
    if not unset:
        return config
    config = config.copy()
    train = [i for i, s in enumerate(data.splits) if s == "train"]
    for name in unset:
        present = data.table.present.get(name)
        texts = [data.table.texts[name][i] for i in train if present is None or bool(present[i])]
        counts = text_mod.token_counts(data.tokenizers[name], texts) if texts else []
        median = float(np.median(counts)) if counts else float("inf")
        config.model.encoders[name] = "bag" if median <= SHORT_TEXT_TOKENS else "transformer"
        if log:
            LOG.info("model.encoders.%s=%s (the training texts of '%s' have a median of %s tokens, %s %d; "
                     "--set model.encoders.%s=NAME chooses another)", name, config.model.encoders[name], name,
                     f"{median:g}" if counts else "no", "at most" if median <= SHORT_TEXT_TOKENS else "over",
                     SHORT_TEXT_TOKENS, name)
    return config
