"""Warm start (`model.init_from`): a fused model's encoders begin as trained unimodal runs'.

Du et al. (ICML 2023, "On Uni-Modal Feature Learning in Supervised Multi-Modal
Learning", UMT) show that joint training leaves the weaker modality's encoder
under-trained, and that starting each encoder from a model trained on that modality alone
fixes it. Measured on mdi-icons (docs/results.md, "Defaults"): trained jointly from
scratch, the fused models score 36-46 % with the name missing, where the image model
alone scores 53 %.

`model.init_from: {MODALITY: RUN}` copies RUN's encoder of MODALITY into this model's
encoder of MODALITY, and RUN's head into this model's auxiliary head of MODALITY (the head
that predicts from that modality alone). RUN must be a finished run over that modality
with the same encoder (every tensor's name and shape must match), the same labels, and
none of this run's test rows among its training or validation rows, nor validation rows
among its training rows (its weights would have seen them). `mmcli compare` sets it for every fused variant from the
unimodal runs of the same seed (`--no-warm-start` turns it off).
"""

from __future__ import annotations

import logging
from pathlib import Path

from mmcli import runs
from mmcli.errors import ConfigError

LOG = logging.getLogger("mmcli")


def warm_start(model, init_from: dict[str, str], data) -> dict[str, list[str]]:
    """Load the unimodal runs' weights into `model`; returns, per modality, the parts
    loaded ("encoder", "head"). `data`: this run's RunData (labels, split and ids)."""
    loaded: dict[str, list[str]] = {}
    for modality, run in init_from.items():
        key = f"model.init_from.{modality}"
        if modality not in model.encoders:
            raise ConfigError(f"{key}: this model has no modality '{modality}' (it has: {', '.join(model.encoders)})")
        folder = Path(run)
        state = _read(folder, key)
        _check_labels(folder, key, data.labels)
        _check_rows(folder, key, data)
        _check_vocabulary(folder, key, modality, data)
        loaded[modality] = _load(model, modality, state, folder, key)
        LOG.info("%s: %s from %s", key, " and ".join(loaded[modality]), folder)
    mark_trained(model, init_from)
    return loaded


def mark_trained(model, init_from: dict[str, str]) -> None:
    """List the warm-started parameters in `model.trained_prefixes` (their learning rate is
    scaled by train.trained_lr_scale); also on --resume, where nothing is loaded but the
    optimizer's groups must be those of the interrupted run."""
    for modality in init_from:
        model.trained_prefixes.append(f"encoders.{modality}.")
        if modality in model.aux_heads:
            model.trained_prefixes.append(f"aux_heads.{modality}.")


def _read(folder: Path, key: str) -> dict:
    path = folder / "best.safetensors"
    if not path.is_file():
        raise ConfigError(f"{key}: {folder} is not a finished run folder (no {path.name})")
    return runs.read_weights(path)[0]


def _check_labels(folder: Path, key: str, labels: list[str]) -> None:
    theirs = runs.read_json(folder / "labels.json", list) if (folder / "labels.json").is_file() else None
    if theirs != list(labels):
        raise ConfigError(f"{key}: {folder} was trained on other labels than this run's; warm-start from a run on the same data")


def _check_rows(folder: Path, key: str, data) -> None:
    """No row of this run's test split may be among the rows the other run trained or
    validated on, and no validation row among its training rows: its weights have seen them."""
    from mmcli.data import membership

    record = membership.read_record(folder)
    if record is None:
        raise ConfigError(f"{key}: {folder} has no {membership.FILE}, so its split cannot be checked; train it again")
    theirs = {name: set(record["splits"][name]["ids"]) for name in membership.SEEN}
    ours = {name: [data.table.ids[i] for i, s in enumerate(data.splits) if s == name] for name in ("val", "test")}
    leaked = [i for i in ours["test"] if i in theirs["train"] or i in theirs["val"]]
    leaked += [i for i in ours["val"] if i in theirs["train"]]
    if leaked:
        raise ConfigError(f"{key}: {folder} learnt from {len(leaked)} rows of this run's validation and test splits "
                          f"(e.g. {', '.join(map(str, leaked[:3]))}); warm-start from a run on the same split")


def _check_vocabulary(folder: Path, key: str, modality: str, data) -> None:
    """A text encoder's embedding rows are its tokenizer's ids: RUN must have read the
    modality with this run's vocabulary, token for token (one fitted before mmcli's
    tokenizer changed, or on other training texts, would shift every word's row)."""
    from mmcli.data.text import own_vocab
    from mmcli.errors import UsageError

    tokenizer = data.tokenizers.get(modality)
    path = folder / f"tokenizer-{modality}.json"
    if tokenizer is None or getattr(tokenizer, "pretrained", False) or not path.is_file():
        return
    try:
        theirs = own_vocab(path)
    except UsageError:  # not a vocabulary mmcli wrote: not this run's either
        theirs = None
    if theirs != tokenizer.get_vocab(with_added_tokens=False):
        raise ConfigError(f"{key}: {folder} read '{modality}' with another vocabulary than this run's ({path.name}: "
                          "trained on other texts, or before mmcli's tokenizer changed); warm-start from a run on "
                          "the same data, trained with this version")


def _load(model, modality: str, state: dict, folder: Path, key: str) -> list[str]:
    parts = [("encoder", f"encoders.{modality}.", model.encoders[modality])]
    if modality in model.aux_heads:
        parts.append(("head", "head.", model.aux_heads[modality]))
    done = []
    for what, prefix, module in parts:
        theirs = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        own = module.state_dict()
        if set(theirs) != set(own):
            extra, missing = sorted(set(theirs) - set(own)), sorted(set(own) - set(theirs))
            raise ConfigError(f"{key}: {folder}'s {what} is not this model's {what} of '{modality}' "
                              f"(missing {missing[:3]}, unexpected {extra[:3]}); use a run with the same encoder and options")
        for name, tensor in theirs.items():
            if tuple(tensor.shape) != tuple(own[name].shape):
                raise ConfigError(f"{key}: {folder}'s {what} does not fit: '{name}' has shape {list(tensor.shape)}, "
                                  f"this model's {list(own[name].shape)}; use a run with the same encoder and options")
        module.load_state_dict(theirs)
        done.append(what)
    return done
