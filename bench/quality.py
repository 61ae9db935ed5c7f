"""The quality benchmark (issue 19): the default `mmcli compare unimodal multimodal` on every
real multimodal set in ../shared/data, one table per set.

    python bench/quality.py [--seeds 5] [--sets mdi-icons,mdi-icons-multilabel,avmnist,coco-super,spoken-coco-super]
                            [--out DIR]
                            [--ludwig LUDWIG_VENV] [--tune]
    make bench-quality

For each set it prints each variant's mean, 95 % interval, its difference to the best
single modality with the paired t-test's p-value (and with the test split's sources drawn
again beside the seeds: docs/compare.md#the-table), and the scores with each modality
missing; and the comparison's wall time. Nothing is tuned per set: the command is the one
a new user runs (`--tune` adds compare's own search, the same for every variant, at about
six times the cost). With `--ludwig VENV` (a virtual environment with Ludwig 0.11:
bench/peers/README.md), the sets that have Ludwig configs (mdi-icons) also run through
Ludwig's text, image and concat models on the split of the comparison's seed 0
(bench/peers/run_ludwig.sh), and its table follows mmcli's.
Takes more than an hour with 5 seeds on 2 cores (docs/results.md has the measured tables and walls).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from quality_sets import build  # noqa: E402


LUDWIG_SETS = ("mdi-icons",)  # sets whose columns bench/peers/ludwig/*.yaml name
SETS = "mdi-icons,mdi-icons-multilabel,avmnist,coco-super,spoken-coco-super"
OPTIONS = {"mdi-icons-multilabel": ["--task", "multilabel", "--set", "data.label=categories"]}  # what the data needs said


def pct(value) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def table(summary: list[dict]) -> list[str]:
    missing = sorted({k for row in summary for k in row if k.startswith("without_")})
    head = ["variant", "n", "mean", "95 % CI", "delta", "p", "p (Holm)", "p, test resampled (Holm)", *missing]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in summary:
        delta = row.get("delta_vs_reference", row.get("delta_vs_best_unimodal"))
        p, holm, again = row.get("p_value"), row.get("p_holm"), row.get("p_resampled_holm")
        cells = [row["variant"], str(row["n"]), pct(row["mean"]), f"[{pct(row.get('ci_low'))}, {pct(row.get('ci_high'))}]",
                 "reference" if row.get("is_reference", row.get("is_best_unimodal")) else
                 ("–" if delta is None else f"{100 * delta:+.1f}"),
                 *("–" if v is None else ("< 0.001" if v < 0.001 else f"{v:.3f}") for v in (p, holm, again)),
                 *(pct(row.get(k)) for k in missing)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--sets", default=SETS)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-quality"))
    parser.add_argument("--shared", type=Path, default=Path("../shared/data"))
    parser.add_argument("--ludwig", type=Path, help="a virtual environment with Ludwig 0.11: run the peer too")
    parser.add_argument("--tune", action="store_true", help="compare --tune: the same search for every variant first")
    args = parser.parse_args()
    if not args.shared.is_dir():
        sys.exit(f"{args.shared}: no real data here (see ../shared/data/README.md); nothing to benchmark")
    sets = build(args.shared.resolve(), args.out / "data")
    for name in args.sets.split(","):
        out = args.out / name
        cmd = [sys.executable, "-m", "mmcli", "compare", "unimodal", "multimodal", "--data", str(sets[name]),
               *OPTIONS.get(name, []), "--seeds", str(args.seeds), "--out", str(out), "--overwrite", "--quiet",
               *(["--tune"] if args.tune else [])]
        start = time.perf_counter()
        subprocess.run(cmd, check=True)
        wall = time.perf_counter() - start
        summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
        print(f"\n### {name} ({args.seeds} seeds, wall {wall / 60:.1f} min)\n\n`{' '.join(cmd[1:])}`\n")
        print("\n".join(table(summary)), flush=True)
        prior = next((row["prior"] for row in summary if row.get("prior") is not None), None)
        if prior is not None:  # the bar below which nothing was learnt (docs/compare.md#the-table)
            above = [row["variant"] for row in summary if row.get("above_prior")]
            print(f"\nlabel prior {pct(prior)}; above it on every seed: {', '.join(above) or 'no variant (nothing learnt)'}")
        if args.ludwig and name in LUDWIG_SETS:
            splits = next((out / "runs").glob("unimodal-*-seed*/splits.json"))  # every variant shares the split
            subprocess.run(["bash", str(Path(__file__).parent / "peers" / "run_ludwig.sh"), str(args.ludwig),
                            str(sets[name]), str(splits), str(args.out / f"ludwig-{name}")], check=True)


if __name__ == "__main__":
    main()
