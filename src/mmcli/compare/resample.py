"""How a comparison's differences would hold on new test examples, not only on new seeds.

Every seed of a comparison scores the same test split, so the paired t-test over seeds
(`mmcli.compare.stats`) answers "would the difference come back if the models were trained
again?", on these test examples. A user asks whether it holds on their data at large, and
on a small test split most of that uncertainty is in which examples the split holds:
COCO-mini has 73 test photos, and one photo more or less right moves a score by 1.4 points.

`versus` answers it with a two-level bootstrap (Bouthillier et al., 2021, "Accounting for
Variance in Machine Learning Benchmarks", for the two sources of variance; Davison and
Hinkley, 1997, section 3.8, for resampling clustered data). Each of DRAWS draws takes the
seeds with replacement, paired (the variant's seed s with the reference's seed s), and the
test split's sources with replacement (a photo with its five captions is one source,
`mmcli.data.splits.source_groups`; a row without a shared source is one of its own), and
computes both metrics again from the drawn rows' statistics (`Task.row_statistics`: the
metric as a function of per-row means, so a draw costs a matrix product, not a pass of the
model). The 95 % interval of the difference is the draws' 2.5th and 97.5th percentiles;
p is twice the share of draws on the far side of 0, counted as (k + 1) / (DRAWS + 1).
The draws start from a fixed seed, so a collect gives the same numbers every time.

The rows come from the files every run of a comparison saves (`ensemble.OUTPUTS`: test
outputs, targets, row ids and sources; the task's state, multi-label thresholds included,
from the run's target.json) and from the ensemble's averages; a metric that is no function
of row means (mean average precision, a ranking's) gets no resampled test.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from mmcli.compare import ensemble
from mmcli.errors import UsageError

LOG = logging.getLogger("mmcli")
DRAWS = 2000
FIELDS = ("p_resampled", "delta_resampled_low", "delta_resampled_high", "resampled_sources")


@dataclass
class Rows:
    """One run's test rows, reduced to what the resampling draws: their ids, and each
    source's summed statistics (sparse: a macro-F1's has 3 x classes columns, of which a row
    fills two)."""
    ids: list[str]
    sources: Any  # np.ndarray of int: the source of each row
    sums: Any  # scipy.sparse.csr_matrix (sources, k): `Task.row_statistics` summed per source


def gather(out: Path, plan, pairs: list[tuple[dict[str, Any], dict[str, Any]]]) -> tuple[dict[str, dict[int, Rows]], Callable | None]:
    """Variant -> seed -> its test rows, for every run whose outputs are saved, and the
    function that makes the metric of mean statistics (None: the metric has none, or one
    seed gives nothing to draw)."""
    import torch

    from mmcli.heads import make_task

    if plan.seeds < 2:
        return {}, None
    config = plan.base_config()
    found: dict[str, dict[int, Rows]] = {}
    metric_of: Callable | None = None
    for cell, result in pairs:
        run = out / cell["run"] if cell.get("run") else None
        arrays = result.get(ensemble.ROWS) if run is None else _load(run)
        if arrays is None or "test_groups" not in arrays:
            continue
        # each run's own task state: multi-label thresholds are chosen on each run's validation outputs
        task = make_task(config, arrays.get("state") if run is None else _state(run))
        made = task.row_statistics(torch.as_tensor(arrays["test_outputs"]), torch.as_tensor(arrays["test_targets"]),
                                   plan.metric)
        if made is None:
            return {}, None
        stats, metric_of = made
        found.setdefault(cell["variant"], {})[cell["seed"]] = _summed(list(arrays["test_ids"]), arrays["test_groups"], stats)
    return found, metric_of


def _summed(ids: list[str], groups: Any, stats: Any) -> Rows:
    import numpy as np
    from scipy import sparse

    _, source = np.unique(np.asarray(groups), return_inverse=True)
    n = int(source.max()) + 1 if len(source) else 0
    per_row = sparse.csr_matrix(np.asarray(stats, dtype=float))
    summing = sparse.csr_matrix((np.ones(len(source)), (source, np.arange(len(source)))), shape=(n, len(source)))
    return Rows(ids, source, (summing @ per_row).tocsr())


def _state(run: Path) -> dict[str, Any]:
    try:
        return ensemble.task_files(run)[1]
    except UsageError:  # a run folder without its target.json: the task's defaults
        return {}


def _load(folder: Path) -> dict[str, Any] | None:
    import zipfile

    import numpy as np

    try:
        with np.load(folder / ensemble.OUTPUTS, allow_pickle=False) as z:
            return {k: (z[k].tolist() if k.endswith("_ids") else z[k]) for k in z.files if k.startswith("test_")}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return None  # a run saved by an mmcli older than this file, or without it: no resampled test


def versus(variant: dict[int, Rows], reference: dict[int, Rows], metric_of: Callable,
           draws: int = DRAWS) -> dict[str, Any] | None:
    """The variant's difference to the reference with seeds and test sources drawn again
    (module docstring); None where they share fewer than 2 seeds or scored other rows."""
    import numpy as np

    seeds = sorted(set(variant) & set(reference))
    first = variant[seeds[0]] if seeds else None
    if first is None or len(seeds) < 2 or any(variant[s].ids != first.ids or reference[s].ids != first.ids for s in seeds):
        return None
    n_sources = first.sums.shape[0]
    if n_sources < 2:
        return None
    size = np.bincount(first.sources, minlength=n_sources).astype(float)
    rng = np.random.default_rng(0)
    chunk = max(1, min(500, 20_000_000 // (n_sources + len(seeds) * first.sums.shape[1])))
    deltas = []
    for start in range(0, draws, chunk):
        c = min(chunk, draws - start)
        times = rng.multinomial(n_sources, np.full(n_sources, 1.0 / n_sources), size=c).astype(float)  # (c, sources)
        picked = rng.integers(0, len(seeds), size=(c, len(seeds)))
        rows = (times @ size)[:, None]

        def drawn(runs: dict[int, Rows]) -> Any:  # (seeds, c): the metric of each seed on each draw
            return np.stack([metric_of((runs[s].sums.T @ times.T).T / rows) for s in seeds])

        d = drawn(variant) - drawn(reference)
        deltas.append(d[picked, np.arange(c)[:, None]].mean(axis=1))
    d = np.concatenate(deltas)
    far = min(int((d <= 0).sum()), int((d >= 0).sum()))
    return {"p_resampled": min(1.0, 2 * (far + 1) / (draws + 1)), "delta_resampled_low": float(np.percentile(d, 2.5)),
            "delta_resampled_high": float(np.percentile(d, 97.5)), "resampled_sources": n_sources}


def add(rows: list[dict[str, Any]], found: dict[str, dict[int, Rows]], metric_of: Callable | None) -> None:
    """Each summary row's resampled difference to its reference (FIELDS; None where there is
    none). With m variants tested, at least 160 m draws: the smallest p a bootstrap can give,
    2 / (draws + 1), is then at most a quarter of 0.05 after Holm's adjustment multiplies it by m."""
    draws = max(DRAWS, 160 * sum(1 for r in rows if r["reference"] and not r["is_reference"]))
    for row in rows:
        mine, theirs, got = found.get(row["variant"]), found.get(row["reference"] or ""), None
        if metric_of is not None and mine and theirs and not row["is_reference"]:
            got = versus(mine, theirs, metric_of, draws)
        row.update(got or dict.fromkeys(FIELDS))
