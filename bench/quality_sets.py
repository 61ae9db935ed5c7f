"""Manifests for the quality benchmark, built from the real sets in ../shared/data into a
scratch folder (nothing is copied: the manifests point at the files where they are).

- `mdi-icons`: the set's own manifest (image + name -> one of 61 categories).
- `coco-super`: COCO-mini's 159 photos, one row per caption (photo + caption -> the
  supercategory of the photo's largest object; 795 rows), split by photo as COCO splits
  them: train2017 photos train (mmcli draws its validation rows from them), val2017 photos test.
- `avmnist`: built by `mmcli datasets get avmnist` (the recipe's defaults).

    python bench/quality_sets.py OUT_FOLDER [--shared ../shared/data]
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path


def coco_super(shared: Path, out: Path) -> Path:
    root = shared / "coco-mini"
    rows = []
    for part, split in (("train2017", "train"), ("val2017", "test")):
        instances = json.loads((root / "annotations" / f"instances_{part}.json").read_text(encoding="utf-8"))
        captions = json.loads((root / "annotations" / f"captions_{part}.json").read_text(encoding="utf-8"))
        supercategory = {c["id"]: c["supercategory"] for c in instances["categories"]}
        largest: dict[int, tuple[float, str]] = {}
        for a in instances["annotations"]:
            if a["area"] > largest.get(a["image_id"], (-1.0, ""))[0]:
                largest[a["image_id"]] = (a["area"], supercategory[a["category_id"]])
        files = {i["id"]: root / part / i["file_name"] for i in instances["images"]}
        for c in captions["annotations"]:
            if c["image_id"] in largest:  # a photo without objects has no label
                rows.append({"id": f"{c['image_id']}-{c['id']}", "image": str(files[c["image_id"]]),
                             "caption": " ".join(c["caption"].split()), "label": largest[c["image_id"]][1],
                             "split": split})
    trained = {r["label"] for r in rows if r["split"] == "train"}
    rows = [r for r in rows if r["label"] in trained]  # a class seen only in testing cannot be learned
    path = out / "coco-super" / "manifest.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, ["id", "image", "caption", "label", "split"])
        writer.writeheader()
        writer.writerows(sorted(rows, key=lambda r: r["id"]))
    return path


def build(shared: Path, out: Path) -> dict[str, Path]:
    sets = {"mdi-icons": shared / "mdi-icons" / "manifest.csv", "coco-super": coco_super(shared, out)}
    avmnist = out / "avmnist"
    if not (avmnist / "manifest.csv").is_file():
        subprocess.run([sys.executable, "-m", "mmcli", "datasets", "get", "avmnist", str(avmnist), "--source", str(shared)],
                       check=True)
    sets["avmnist"] = avmnist / "manifest.csv"
    return sets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--shared", type=Path, default=Path("../shared/data"))
    args = parser.parse_args()
    for name, path in build(args.shared.resolve(), args.out).items():
        print(f"{name}\t{path}")


if __name__ == "__main__":
    main()
