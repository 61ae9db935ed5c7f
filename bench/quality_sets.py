"""Manifests for the quality benchmark, built from the real sets in ../shared/data into a
scratch folder (nothing is copied: the manifests point at the files where they are).

- `mdi-icons`: the set's own manifest (image + name -> one of 61 categories).
- `mdi-icons-multilabel`: its `multilabel.csv` (image + name -> every category of the
  icon, `|`-joined in the column `categories`; compared with `--task multilabel`).
- `coco-super`: COCO-mini's 159 photos, one row per caption (photo + caption -> the
  supercategory of the photo's largest object; 795 rows), split by photo as COCO splits
  them: train2017 photos train (mmcli draws its validation rows from them), val2017 photos test.
- `spoken-coco-super`: the same photos and labels with each caption spoken instead of
  written (`coco-mini/spoken-captions.csv`: 10 synthetic voices), image + speech.
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


def _labels(root: Path, part: str) -> dict[str, tuple[int, str]]:
    """Photo file (relative to coco-mini) -> (image id, the supercategory of its largest object)."""
    instances = json.loads((root / "annotations" / f"instances_{part}.json").read_text(encoding="utf-8"))
    supercategory = {c["id"]: c["supercategory"] for c in instances["categories"]}
    largest: dict[int, tuple[float, str]] = {}
    for a in instances["annotations"]:
        if a["area"] > largest.get(a["image_id"], (-1.0, ""))[0]:
            largest[a["image_id"]] = (a["area"], supercategory[a["category_id"]])
    return {f"{part}/{i['file_name']}": (i["id"], largest[i["id"]][1]) for i in instances["images"] if i["id"] in largest}


def _write(rows: list[dict], path: Path) -> Path:
    trained = {r["label"] for r in rows if r["split"] == "train"}
    rows = [r for r in rows if r["label"] in trained]  # a class seen only in testing cannot be learned
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, list(rows[0]))
        writer.writeheader()
        writer.writerows(sorted(rows, key=lambda r: r["id"]))
    return path


def coco_super(shared: Path, out: Path) -> Path:
    root = shared / "coco-mini"
    rows = []
    for part, split in (("train2017", "train"), ("val2017", "test")):
        labels = _labels(root, part)
        by_id = {image_id: (file, label) for file, (image_id, label) in labels.items()}
        captions = json.loads((root / "annotations" / f"captions_{part}.json").read_text(encoding="utf-8"))
        for c in captions["annotations"]:
            if c["image_id"] in by_id:  # a photo without objects has no label
                file, label = by_id[c["image_id"]]
                rows.append({"id": f"{c['image_id']}-{c['id']}", "image": str(root / file),
                             "caption": " ".join(c["caption"].split()), "label": label, "split": split})
    return _write(rows, out / "coco-super" / "manifest.csv")


def spoken_coco_super(shared: Path, out: Path) -> Path:
    root = shared / "coco-mini"
    labels = {**_labels(root, "train2017"), **_labels(root, "val2017")}
    rows = []
    with open(root / "spoken-captions.csv", newline="", encoding="utf-8") as handle:
        for r in csv.DictReader(handle):
            if r["image"] in labels:
                rows.append({"id": r["id"], "image": str(root / r["image"]), "speech": str(root / r["audio"]),
                             "label": labels[r["image"]][1], "split": "train" if r["coco_split"] == "train" else "test"})
    return _write(rows, out / "spoken-coco-super" / "manifest.csv")


def build(shared: Path, out: Path) -> dict[str, Path]:
    sets = {"mdi-icons": shared / "mdi-icons" / "manifest.csv", "mdi-icons-multilabel": shared / "mdi-icons" / "multilabel.csv",
            "coco-super": coco_super(shared, out),
            "spoken-coco-super": spoken_coco_super(shared, out)}
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
