"""Turn an mmcli manifest and a run's splits.json into a CSV that Ludwig reads.

Ludwig 0.11 takes a fixed split from a column (`preprocessing: split: {type: fixed,
column: split}`) whose values are 0 (training), 1 (validation) and 2 (test). mmcli draws
its stratified split with its seed and writes it to every run folder (`splits.json`);
every variant of one `compare` shares it, so the peer sees exactly the examples mmcli saw.

    python bench/peers/ludwig_split.py MANIFEST SPLITS_JSON OUT_CSV

Image paths are made absolute (relative ones are read against the manifest's folder), so
the CSV may live anywhere, for example under /tmp: never copy the data into the repository.
Standard library only, so any Python runs it (the Ludwig venv included).
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

SPLIT_CODES = {"train": 0, "val": 1, "test": 2}


def split_of(splits_json: Path) -> dict[str, int]:
    """id -> Ludwig split code, from splits.json's {"splits": {"train": {"ids": [...]}, ...}}."""
    splits = json.loads(splits_json.read_text())["splits"]
    codes: dict[str, int] = {}
    for name, code in SPLIT_CODES.items():
        for ident in splits[name]["ids"]:
            if ident in codes:
                sys.exit(f"{splits_json}: id {ident!r} is in two splits")
            codes[ident] = code
    return codes


def write_csv(manifest: Path, splits_json: Path, out: Path, image_col: str = "image") -> int:
    codes = split_of(splits_json)
    base = manifest.resolve().parent
    with manifest.open(newline="") as f:
        rows = list(csv.DictReader(f))
    missing = [r["id"] for r in rows if r["id"] not in codes]
    if missing:
        sys.exit(f"{manifest}: {len(missing)} ids are in no split of {splits_json}, first {missing[0]!r}")
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[*rows[0].keys(), "split"])
        writer.writeheader()
        for row in rows:
            if image_col in row:
                row[image_col] = str(base / row[image_col])
            writer.writerow({**row, "split": codes[row["id"]]})
    return len(rows)


def main(argv: list[str]) -> None:
    if len(argv) != 3:
        sys.exit(__doc__)
    manifest, splits_json, out = map(Path, argv)
    n = write_csv(manifest, splits_json, out)
    print(f"{out}: {n} rows")


if __name__ == "__main__":
    main(sys.argv[1:])
