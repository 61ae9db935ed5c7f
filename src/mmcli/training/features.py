"""Frozen-feature cache: a frozen encoder's features are computed once, not every epoch.

When an encoder's feature extractor does not train (`trainable: false`) and does not
augment its inputs, its output on the training and validation examples is the same in
every epoch. It is computed once into the cache folder (`<cache>/features/KEY`), keyed by
the encoder's class and its extractor's weights (every tensor's bytes), the normalization
and the preprocessed inputs themselves, so any change to the encoder, its weights or the
preprocessing gives a new entry. Training then runs only the projection, the fusion and
the head on the stored features, and so do the predictions a run and `compare` make after
training (`cached_part`: the validation and test splits); `mmcli evaluate` and `predict`
run the whole encoder in float32, so a score they give may differ from the run's
`eval-test.json` by a row that float16 rounding moved (`compare --corrupt` scores the clean
test split with the whole encoder too, as it scores the degraded one).
`train.feature_cache: false` turns this off.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import replace
from pathlib import Path

import torch

from mmcli import runs
from mmcli.config import Config
from mmcli.data.dataset import Encoded, iterate
from mmcli.kinds import KINDS

LOG = logging.getLogger("mmcli")
FEATURES_VERSION = "1"


def features_dir(cache_dir: str | None) -> Path:
    from mmcli.data import cache

    return cache.features_dir(cache.cache_root(cache_dir))


def _digest(encoder, name: str, part: Encoded, config: Config) -> str:
    from mmcli import __version__

    h = hashlib.sha256(f"{FEATURES_VERSION}|{__version__}|{type(encoder).__module__}.{type(encoder).__qualname__}|"
                       f"{encoder.options_key}".encode())
    for key, tensor in sorted(encoder.state_dict().items()):
        if not key.startswith("proj."):
            h.update(key.encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    h.update(KINDS[part.kinds[name]].feature_key(config).encode())  # settings that change the inputs (a normalisation)
    for tensor in (part.inputs[name], part.lengths.get(name)):
        if tensor is not None:
            h.update(str((tuple(tensor.shape), tensor.dtype)).encode())
            h.update(tensor.contiguous().numpy().tobytes())
    return h.hexdigest()[:24]


@torch.no_grad()
def _compute(encoder, name: str, part: Encoded, config: Config, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    from mmcli.training.loop import eval_batch_size

    was_training = encoder.training
    encoder.eval()
    raws, masks = [], []
    for batch in iterate(part, config.data, eval_batch_size(config, part.kinds)):
        raw, mask = encoder.features(batch.inputs[name].to(device), batch.lengths.get(name))
        raws.append(raw.float().cpu())
        masks.append(mask.cpu())
    encoder.train(was_training)
    width = max(r.shape[1] for r in raws)  # text and audio batches are padded to their own longest
    pad = lambda t, v: torch.nn.functional.pad(t, (0, 0, 0, width - t.shape[1]), value=v) if t.dim() == 3 else \
        torch.nn.functional.pad(t, (0, width - t.shape[1]), value=v)  # noqa: E731
    raw = torch.cat([pad(r, 0.0) for r in raws])
    half = raw.to(torch.float16)  # half the memory; kept in float32 where float16 cannot hold the values
    return (half if torch.isfinite(half).all() or not torch.isfinite(raw).all() else raw), torch.cat([pad(m, False) for m in masks])


def _load_or_compute(encoder, name: str, part: Encoded, config: Config, device, folder: Path):
    from safetensors.torch import load_file, save

    path = folder / f"{_digest(encoder, name, part, config)}.safetensors"
    if path.is_file():
        try:
            stored = load_file(str(path))
            LOG.info("feature cache hit: %s (%d examples) from %s", name, len(part), path)
            return stored["raw"], stored["mask"].bool()
        except Exception:  # a broken entry is computed again
            pass
    raw, mask = _compute(encoder, name, part, config, device)
    folder.mkdir(parents=True, exist_ok=True)
    runs.write_atomic(path, save({"raw": raw.contiguous(), "mask": mask.to(torch.uint8).contiguous()}))
    LOG.info("feature cache miss: computed %s features %s for %d examples into %s", name, tuple(raw.shape[1:]), len(part), path)
    return raw, mask


def with_cached_features(model, parts: list[Encoded], config: Config, device: torch.device,
                         cache_dir: str | None = None) -> list[Encoded]:
    """`parts` with every cacheable encoder's input replaced by its stored features."""
    names = [n for n, e in model.encoders.items() if e.cacheable]
    if not names or not config.train.feature_cache:
        return parts
    folder = features_dir(cache_dir)
    out = []
    for part in parts:
        if not len(part):
            out.append(part)
            continue
        features = dict(part.features)
        for name in names:
            features[name] = _load_or_compute(model.encoders[name], name, part, config, device, folder)
        inputs = {k: v for k, v in part.inputs.items() if k not in features}
        out.append(replace(part, inputs=inputs, features=features))
    return out


def cached_part(model, part: Encoded, config: Config, device: torch.device, cache_dir: str | None = None) -> Encoded:
    """`part` as `with_cached_features` gives it: for the predictions that training and
    `compare` make on the same rows after training (the kept epoch on validation, the test
    split clean and with each modality hidden, the outputs the ensemble averages). A frozen
    MobileNetV2 ran over COCO-mini's 365 test rows four times per run otherwise, 10 times
    the run's training on its cached features."""
    return with_cached_features(model, [part], config, device, cache_dir)[0]
