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
    """The split's features in float16 (half the memory), or in float32 where float16 cannot
    hold them. Each batch is stored in the cache's dtype as soon as it is computed, and the
    batches are moved one by one into the one tensor that is saved: the peak is 2.2 times
    the stored features, where float32 batches joined and then converted took 5.8 times
    (`python bench/run.py cache_memory`, docs/performance.md)."""
    was_training = encoder.training
    encoder.eval()
    try:
        batches = _batches(encoder, name, part, config, device, torch.float16)
        if batches is None:  # a value beyond float16's range: the whole split in float32
            batches = _batches(encoder, name, part, config, device, torch.float32)
    finally:
        encoder.train(was_training)
    assert batches is not None
    raws, masks = batches
    return _joined(raws, 0.0), _joined(masks, False)


def _batches(encoder, name: str, part: Encoded, config: Config, device: torch.device, dtype: torch.dtype):
    """The raw features and masks of each batch on the CPU, the features in `dtype`; None
    where float16 overflows and float32 does not."""
    from mmcli.training.loop import eval_batch_size

    raws, masks = [], []
    for batch in iterate(part, config.data, eval_batch_size(config, part.kinds)):
        raw, mask = encoder.features(batch.inputs[name].to(device), batch.lengths.get(name))
        stored = raw.to(dtype).cpu()
        if dtype == torch.float16 and not torch.isfinite(stored).all() and torch.isfinite(raw).all():
            return None
        raws.append(stored)
        masks.append(mask.cpu())
    return raws, masks


def _joined(pieces: list, fill: float | bool) -> torch.Tensor:
    """The batches ([B, T, ...]) in one tensor, each padded along its tokens to the longest
    batch (text and audio batches are padded to their own longest); a batch is released
    from `pieces` once copied."""
    out = torch.full((sum(len(p) for p in pieces), max(p.shape[1] for p in pieces), *pieces[0].shape[2:]), fill,
                     dtype=pieces[0].dtype)
    start = 0
    for i, piece in enumerate(pieces):
        out[start:start + len(piece), :piece.shape[1]] = piece
        start += len(piece)
        pieces[i] = None
    return out


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
