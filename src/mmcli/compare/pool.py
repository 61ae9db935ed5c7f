"""The prepared data of a comparison, one entry per way of preprocessing it.

Most variants read the data as the base config prepares it. A variant that chooses
another encoder (`unimodal:image@mobilenet_v2`) may read other inputs: a pretrained
backbone's image size, a pretrained text model's tokenizer. Its data is prepared once
more from the same manifest (through the preprocessing cache), so every variant still
sees the same rows and the same split, each in the form its encoders were trained on.
"""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING

from mmcli.config import Config

if TYPE_CHECKING:
    from mmcli.pipeline import RunData


class DataPool:
    def __init__(self, base: Config, kinds: dict[str, str], cache_dir: str | None, first: RunData | None = None):
        """`base`: the comparison's config; `first`: its data, when already prepared."""
        self.base, self.kinds, self.cache_dir = base, kinds, cache_dir
        self._data: dict[str, RunData] = {} if first is None else {self._key(base): first}

    def _key(self, config: Config) -> str:
        """What a variant's config changes in the prepared data: the data settings and the
        tokenizer of each text modality (a pretrained text model brings its own)."""
        from mmcli.kinds import KINDS

        fitted = {m: KINDS[kind].fit_key(config, m) for m, kind in self.kinds.items() if KINDS[kind].fitted}
        return json.dumps([dataclasses.asdict(config.data), fitted], sort_keys=True, default=str)

    def get(self, config: Config) -> RunData:
        """The data prepared as `config` (a variant's config) reads it."""
        from mmcli.compare.runner import shared_data

        key = self._key(config)
        if key not in self._data:
            prepared = config.copy()
            prepared.model.modalities = self.base.model.modalities  # every modality a variant may read
            self._data[key] = shared_data(prepared, self.cache_dir, report=False)  # the plan reported the limits
        return self._data[key]
