"""Train/val/test splits: the manifest's `split` column, else a stratified split from a seed."""

from __future__ import annotations

import logging
import random
from collections import defaultdict

from mmcli.kinds import KINDS
from mmcli.errors import BadRow, DataError

SPLITS = ("train", "val", "test")


def assign_splits(labels: list[str] | None, given: list[str] | None, seed: int,
                  val_fraction: float, test_fraction: float, source: str = "manifest",
                  groups: list[int] | None = None) -> list[str]:
    """The split column's splits, with validation rows drawn from its training rows when it
    has none, or else a split stratified by label from the seed. `groups` (from
    `source_groups`): the rows of one source (a photo with five captions) are drawn
    together, so no source is in two drawn splits."""
    if given is not None and any(given):
        bad = [BadRow(source, i + 1, "split", f"split '{s}' is not one of train, val, test")
               for i, s in enumerate(given) if s not in SPLITS]
        if bad:
            raise DataError(f"{source}: bad values in the split column", bad)
        splits = list(given)
        if groups is not None:
            _warn_straddling(splits, groups, source)
        if "val" not in splits and val_fraction > 0:
            train = [i for i, s in enumerate(splits) if s == "train"]
            sub = _grouped([labels[i] for i in train] if labels else None, [groups[i] for i in train] if groups else None,
                           seed, val_fraction, 0.0)
            for i, s in zip(train, sub):
                splits[i] = "val" if s == "val" else "train"
        return splits
    return _grouped(labels, groups, seed, val_fraction, test_fraction)


def _grouped(labels: list[str] | None, groups: list[int] | None, seed: int, val_fraction: float,
             test_fraction: float) -> list[str]:
    """`_stratified` over sources: one draw per group (labelled by its first row), and its
    rows follow it. Without groups, one draw per row."""
    if groups is None:
        return _stratified(labels, seed, val_fraction, test_fraction)
    first: dict[int, int] = {}
    for i, g in enumerate(groups):
        first.setdefault(g, i)
    heads = list(first.values())
    drawn = dict(zip(heads, _stratified([labels[i] for i in heads] if labels else ["_"] * len(heads),
                                        seed, val_fraction, test_fraction)))
    return [drawn[first[g]] for g in groups]


def _warn_straddling(splits: list[str], groups: list[int], source: str) -> None:
    """A split column that puts one source's rows in two splits scores the model on what it
    trained on: said, not refused (the user chose the column)."""
    seen: dict[int, set[str]] = defaultdict(set)
    for s, g in zip(splits, groups):
        seen[g].add(s)
    straddling = sum(1 for found in seen.values() if len(found) > 1)
    if straddling:
        logging.getLogger("mmcli").warning(
            "%s: the split column puts the rows of %d of the %d sources (rows that share a file, or a group "
            "column's value) in more than one split: the model is then scored on sources it trained on",
            source, straddling, len(seen))


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


def source_groups(table, crossmodal: bool = True) -> list[int] | None:
    """Rows that share a source get one group number: the group column's value
    (data.group_column) where the manifest has one, else the rows whose image, audio or
    video is the same, byte for byte after decoding (a photo with five captions, one row
    each). None when no source repeats: every row is its own.

    Found by their bytes, sources split only cross-modal data (`crossmodal`: a photo's
    captions) and the validation rows drawn from a split column's training rows. A
    classification set whose rows share a file (one clip paired with many images, a
    placeholder picture) is split by row, as before: one source in every row would leave
    nothing to test on. A group column is used by every task."""
    if table.given_groups is not None and any(table.given_groups):
        index: dict[str, int] = {}
        groups = [index.setdefault(v, len(index)) if v else -1 - i for i, v in enumerate(table.given_groups)]
        return groups if len(index) < sum(1 for v in table.given_groups if v) else None
    given = table.given_splits
    if not crossmodal and (given is None or not any(given) or "val" in given):
        return None
    parent = list(range(len(table)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    repeated = False
    for name, modality in table.modalities.items():
        if not KINDS[modality.kind].from_files or name not in table.tensors:
            continue
        present = table.present.get(name)
        rows = [i for i in range(len(table)) if present is None or bool(present[i])]
        seen: dict[bytes, int] = {}
        for i, key in zip(rows, content_keys(table.tensors[name], rows)):
            j = seen.setdefault(key, i)
            if j != i:
                parent[find(i)] = find(j)
                repeated = True
    return [find(i) for i in range(len(table))] if repeated else None


def content_keys(tensor, rows: list[int]) -> list[bytes]:
    """A digest of each of `rows`' tensors: equal for the same decoded file."""
    import hashlib

    return [hashlib.blake2b(tensor[i].contiguous().numpy().tobytes(), digest_size=16).digest() for i in rows]


def content_groups(tensor, lengths=None) -> list[int]:
    """Each row's group among the rows of `tensor` ([N, ...], with `lengths` where a kind
    keeps them): rows with equal contents (up to their length) share the first one's index."""
    rows = [tensor[i] if lengths is None else tensor[i][..., : int(lengths[i])] for i in range(len(tensor))]
    return first_rows([content_keys(row.unsqueeze(0), [0])[0] for row in rows])


def first_rows(keys: list) -> list[int]:
    """Each position's first position with an equal key."""
    seen: dict = {}
    return [seen.setdefault(k, i) for i, k in enumerate(keys)]


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


FEW_VALIDATION = 30  # independent validation examples below which the kept epoch is a noisy choice


def identity_groups(values: list[str]) -> list[int]:
    """A group number per identity: verification validates on identities, not rows."""
    index: dict[str, int] = {}
    return [index.setdefault(v, len(index)) for v in values]


def validation_sources(splits: list[str], groups: list[int] | None) -> int:
    """How many sources the validation split holds (`groups`: each row's; None: rows)."""
    rows = [i for i, s in enumerate(splits) if s == "val"]
    return len({groups[i] for i in rows}) if groups is not None else len(rows)


def warn_small_validation(splits: list[str], groups: list[int] | None, val_fraction: float, source: str,
                          what: str = "sources") -> None:
    """Say so when validation holds fewer than FEW_VALIDATION sources (`groups`: each row's;
    None: rows, where no source repeats; verification counts identities): the kept epoch,
    early stopping and `compare --tune` are chosen on them. On COCO-mini's 8 validation
    photos the image model scored 50-67 % and 20 % on the test photos, and captioning kept
    an epoch with a third as many distinct captions as test photos."""
    n = validation_sources(splits, groups)
    if not 0 < n < FEW_VALIDATION:
        return
    half = 196 * (0.25 / n) ** 0.5  # the widest 95 % interval of a share measured on n
    logging.getLogger("mmcli").warning(
        "%s: the validation split holds %d %s; the kept epoch, early stopping and compare --tune choose on them, so "
        "their choice is noisy (a share measured on %d has a 95 %% interval up to ±%.0f points): read results over "
        "several seeds, or give validation more (data.val_fraction=%g, or the split column's val rows)",
        source, n, what if groups is not None else "examples", n, half, val_fraction)
