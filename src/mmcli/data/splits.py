"""Train/val/test splits: the manifest's `split` column, else a stratified split from a seed."""

from __future__ import annotations

import random
from collections import defaultdict

from mmcli.kinds import KINDS
from mmcli.errors import BadRow, DataError

SPLITS = ("train", "val", "test")


def assign_splits(labels: list[str] | None, given: list[str] | None, seed: int,
                  val_fraction: float, test_fraction: float, source: str = "manifest",
                  groups: list[int] | None = None) -> list[str]:
    """The split column's splits, with validation rows drawn from its training rows when it
    has none (keeping the rows of one source together: `groups`, from `source_groups`), or
    else a stratified split from the seed."""
    if given is not None and any(given):
        bad = [BadRow(source, i + 1, "split", f"split '{s}' is not one of train, val, test")
               for i, s in enumerate(given) if s not in SPLITS]
        if bad:
            raise DataError(f"{source}: bad values in the split column", bad)
        splits = list(given)
        if "val" not in splits and val_fraction > 0:
            train = [i for i, s in enumerate(splits) if s == "train"]
            if groups is not None:  # one draw per source; its rows follow it
                first: dict[int, int] = {}
                for i in train:
                    first.setdefault(groups[i], i)
                heads = list(first.values())
                drawn = dict(zip(heads, _stratified([labels[i] for i in heads] if labels else ["_"] * len(heads),
                                                    seed, val_fraction, 0.0)))
                sub = [drawn[first[groups[i]]] for i in train]
            else:
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


def source_groups(table) -> list[int] | None:
    """Rows that share a source (the same image or clip, byte for byte after decoding: a
    photo with five captions, one row each) get one group number, so that validation rows
    drawn from a split column's training rows never share a photo with a training row (the
    model would be selected on what it memorised). None when no source repeats, or when
    nothing is drawn (no split column, or one that names validation rows already)."""
    import hashlib

    given = table.given_splits
    if given is None or not any(given) or "val" in given:
        return None
    rows = [i for i, s in enumerate(given) if s == "train"]
    parent = list(range(len(given)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    repeated = False
    for name, modality in table.modalities.items():
        if not KINDS[modality.kind].from_files or name not in table.tensors:
            continue
        seen: dict[bytes, int] = {}
        present = table.present.get(name)
        for i in rows:
            if present is not None and not bool(present[i]):
                continue
            digest = hashlib.blake2b(table.tensors[name][i].contiguous().numpy().tobytes(), digest_size=16).digest()
            j = seen.setdefault(digest, i)
            if j != i:
                parent[find(i)] = find(j)
                repeated = True
    return [find(i) for i in range(len(given))] if repeated else None


def identity_splits(identities: list[str], given: list[str] | None, seed: int, val_fraction: float,
                    test_fraction: float, source: str = "manifest", column: str = "label") -> list[str]:
    """Splits whose identities are disjoint (verification, issue 22): every row of one
    identity lands in one split, so validation and test identities are never trained on.
    With a split column, it is checked (an identity in training and in val or test is an
    error naming its rows) and, when it has no validation rows, validation identities are
    drawn from its training ones. Otherwise the identities are shuffled with the seed and
    cut: at least 2 for test and 2 for validation (a different-identity trial needs two; with
    one validation identity there is no EER to select epochs on, nor a threshold)."""
    if given is not None and any(given):
        splits = assign_splits(None, given, seed, 0.0, 0.0, source)  # checks the values only
        _check_disjoint(identities, splits, source, column)
        if "val" in splits or val_fraction <= 0:
            return splits
        train = [i for i, s in enumerate(splits) if s == "train"]
        drawn = _cut_identities(sorted({identities[i] for i in train}), seed, val_fraction, 0.0, source)
        return ["val" if s == "train" and drawn[identities[i]] == "val" else s for i, s in enumerate(splits)]
    drawn = _cut_identities(sorted(set(identities)), seed, val_fraction, test_fraction, source)
    return [drawn[v] for v in identities]


def _cut_identities(names: list[str], seed: int, val_fraction: float, test_fraction: float, source: str) -> dict[str, str]:
    n = len(names)
    n_test = max(2, round(n * test_fraction)) if test_fraction > 0 else 0
    n_val = max(2, round(n * val_fraction)) if val_fraction > 0 else 0
    if n - n_test - n_val < 2:
        raise DataError(f"{source}: {n} identities cannot be split into training ({2} or more), validation "
                        f"({n_val}) and test ({n_test}) identities; verification needs at least {n_test + n_val + 2}")
    order = list(names)
    random.Random(seed).shuffle(order)
    return {v: "test" if k < n_test else "val" if k < n_test + n_val else "train" for k, v in enumerate(order)}


def _check_disjoint(identities: list[str], splits: list[str], source: str, column: str) -> None:
    """No identity in two splits: not in training and validation or test (verification tests on
    identities never trained on), nor in validation and test (the threshold and the epoch
    would be chosen on the test identities)."""
    seen = {s: {v for v, t in zip(identities, splits) if t == s} for s in ("train", "val")}
    bad = [BadRow(source, i + 1, column, f"identity '{v}' is in the {s} split and also in the {other} split "
                  f"(each identity belongs to one split)")
           for i, (v, s) in enumerate(zip(identities, splits))
           for other in (("train",) if s == "val" else ("train", "val") if s == "test" else ()) if v in seen[other]]
    if bad:
        raise DataError(f"{source}: the split column puts one identity in two splits", bad)


def task_splits(task, values: list[str] | None, given: list[str] | None, seed: int, val_fraction: float,
                test_fraction: float, source: str, groups: list[int] | None, column: str = "label") -> list[str]:
    """The splits a task trains on: identity-disjoint for tasks with `disjoint_labels`
    (verification), else `assign_splits` (stratified by label where the task asks)."""
    if task.disjoint_labels and values is not None:
        return identity_splits(values, given, seed, val_fraction, test_fraction, source, column)
    keys = task.split_keys(values) if values is not None else None
    return assign_splits(keys, given, seed, val_fraction, test_fraction, source, groups)
