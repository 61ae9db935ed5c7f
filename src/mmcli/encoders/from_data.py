"""Encoder defaults chosen from the data: a modality whose encoder the config leaves unset
(neither by its name nor by its kind, and no options for it) gets what its kind derives
from the training split (mmcli.kinds: a text modality gets `bag` for short texts and
`transformer` for longer ones, issue 19). Like the length limits of `mmcli.data.lengths`,
the choice is made once the data is split, logged, and saved with the run."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from mmcli.config import Config
from mmcli.kinds import KINDS
from mmcli.kinds.text import SHORT_TEXT_TOKENS  # noqa: F401  (the text rule's threshold, for its tests and docs)
from mmcli.models import chosen_modalities

if TYPE_CHECKING:
    from mmcli.pipeline import RunData

LOG = logging.getLogger("mmcli")


def text_encoder_defaults(config: Config, data: RunData, log: bool = True) -> Config:
    """The config with an encoder for each modality the model reads that has none set, as
    its kind chooses from the training split of `data` (a copy; `config` when nothing is
    unset). Saved with the run, so `predict` builds the same model."""
    model = config.model
    unset = [n for n in chosen_modalities(config, list(data.modalities))
             if not any(model.encoders.get(k) or model.encoder_options.get(k) for k in (n, data.table.modalities[n].kind))]
    if not unset:
        return config
    config = config.copy()
    for name, kind in KINDS.items():
        names = [n for n in unset if data.table.modalities[n].kind == name]
        if names:
            kind.defaults_from_data(config, data, names, LOG if log else None)
    return config
