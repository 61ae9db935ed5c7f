"""`model.crossmodal: align`: contrastive alignment of the encoders before fine-tuning.

For `train.align_epochs` epochs the encoders learn to bring the modalities of one
example together and those of different examples apart: the symmetric InfoNCE loss of
CLIP (Radford et al., 2021) over every pair of modalities, through a temporary two-tower
projection that is thrown away afterwards. Then the usual training fuses the aligned
encoders' features and fine-tunes everything for the label. Pairs need no labels, so
this is where unlabelled pairs would help; here it uses the training split's pairs.
"""

from __future__ import annotations

import torch

from mmcli.config import Config
from mmcli.data.dataset import Encoded, iterate
from mmcli.errors import ConfigError
from mmcli.heads.retrieval import TwoTowerHead, pair_loss
from mmcli.data.loader import to_device
from mmcli.training.setup import pick_device


def align_encoders(model, train: Encoded, config: Config, generator: torch.Generator) -> list[float]:
    """Train the encoders (and a throw-away two-tower head) contrastively; the mean loss per epoch."""
    from mmcli.training.distributed import world

    names = model.modalities
    if len(names) < 2:
        raise ConfigError("model.crossmodal=align needs two or more modalities to align")
    if world().active:
        raise ConfigError("model.crossmodal=align does not run distributed (--nproc) yet; train it in one process")
    device = pick_device(config.train.device)
    model.to(device).train()
    towers = TwoTowerHead({n: e.out_dim for n, e in model.encoders.items()}, config.model.feature_dim, 0.07, 100.0).to(device)
    params = [p for p in model.encoders.parameters() if p.requires_grad] + list(towers.parameters())
    optimizer = torch.optim.AdamW(params, lr=config.train.lr, weight_decay=config.train.weight_decay)
    history = []
    for _ in range(config.train.align_epochs):
        total, count = 0.0, 0
        for batch in iterate(train, config.data, config.train.batch_size, shuffle=True, generator=generator):
            batch = to_device(batch, device)
            loss = pair_loss(towers(model.encode(batch), batch.mask, batch), batch.mask, names)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, config.train.grad_clip or float("inf"))
            optimizer.step()
            towers.after_step()
            total, count = total + loss.item() * len(batch.index), count + len(batch.index)
        history.append(round(total / max(1, count), 6))
    return history
