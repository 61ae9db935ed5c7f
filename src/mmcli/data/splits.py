"""Train/val/test splits: the manifest's `split` column, else a stratified split from a seed."""

from __future__ import annotations

import random
from collections import defaultdict

from mmcli.errors import BadRow, DataError

SPLITS = ("train", "val", "test")


def assign_splits(labels: list[str] | None, given: list[str] | None, seed: int,
                  val_fraction: float, test_fraction: float, source: str = "manifest") -> list[str]:
    if given is not None and any(given):
        bad = [BadRow(source, i + 1, "split", f"split '{s}' is not one of train, val, test")
               for i, s in enumerate(given) if s not in SPLITS]
        if bad:
            raise DataError(f"{source}: bad values in the split column", bad)
        splits = list(given)
        if "val" not in splits and val_fraction > 0:
            train = [i for i, s in enumerate(splits) if s == "train"]
            sub = _stratified([labels[i] for i in train] if labels else None, seed, val_fraction, 0.0)
            for i, s in zip(train, sub):
                splits[i] = "val" if s == "val" else "train"
        return splits
    return _stratified(labels, seed, val_fraction, test_fraction)


def _stratified(labels: list[str] | None, seed: int, val_fraction: float, test_fraction: float) -> list[str]:
    """Per class: shuffle with the seed, then cut test and val shares off the front."""
    n = len(labels) if labels is not None else 0
    groups: dict[str, list[int]] = defaultdict(list)
    for i, label in enumerate(labels if labels is not None else []):
        groups[label].append(i)
    rng = random.Random(seed)
    out = ["train"] * n
    for label in sorted(groups):
        members = groups[label]
        rng.shuffle(members)
        n_test = round(len(members) * test_fraction)
        n_val = round(len(members) * val_fraction)
        if len(members) - n_test - n_val < 1:  # keep at least one training example per class
            n_val = max(0, len(members) - n_test - 1)
        for j, i in enumerate(members):
            out[i] = "test" if j < n_test else "val" if j < n_test + n_val else "train"
    return out


def random_splits(n: int, seed: int, val_fraction: float, test_fraction: float) -> list[str]:
    return _stratified(["_"] * n, seed, val_fraction, test_fraction)
