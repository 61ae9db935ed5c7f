"""MS-COCO captions (Chen et al., 2015) with object categories (Lin et al., 2014).

Reads a COCO copy as its site lays it out: `annotations/captions_<set>.json` (and
`instances_<set>.json` for the objects) beside a `<set>/` folder of photos, for every set
present (train2017, val2017, ...). One row per photo: its first caption as `text`, the
names of the objects in it joined by `|` as `label` (a multilabel target: train with
`--task multilabel`; `[]` for a photo without objects), and all five captions in
`captions.csv` (one row per caption, grouped by photo: captioning and retrieval). With two sets, the training set becomes `train` and the other `test`;
with one, mmcli draws the split.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Optional

from mmcli.data.recipes import write_provenance
from mmcli.data.recipes.captions import copy_images, missing_images, write_caption_set
from mmcli.data.recipes.download import Remote, extract, fetch
from mmcli.errors import UsageError

SITE = "http://images.cocodataset.org/"
REMOTES = [
    Remote(SITE + "zips/val2017.zip", "442b8da7639aecaf257c1dceb8ba8c80", 815_585_330),
    Remote(SITE + "annotations/annotations_trainval2017.zip", "f4bbac642086de4f52a3fdda2de5fa2c", 252_907_541),
]
DOWNLOADED_SET = "val2017"  # train2017 is 18 GB: download it yourself and use --source


def download(folder: Path, mirror: Optional[str] = None, progress=None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for remote in REMOTES:
        archive = fetch(remote, folder, mirror, progress)
        extract(archive, folder, members=lambda n: n.startswith(f"{DOWNLOADED_SET}/")
                or n.endswith(f"_{DOWNLOADED_SET}.json"))
        archive.unlink()
    return folder


def find(source: Path) -> Path:
    for folder in (source / "coco-mini", source / "coco", source):
        if (folder / "annotations").is_dir() and list((folder / "annotations").glob("captions_*.json")):
            return folder
    raise UsageError(f"{source}: no COCO copy found (annotations/captions_<set>.json beside a <set>/ photo folder)")


def _load(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"{path}: not a readable COCO JSON ({exc})") from None


def sets_present(root: Path) -> list[str]:
    names = sorted(re.sub(r"^captions_(.*)\.json$", r"\1", p.name) for p in (root / "annotations").glob("captions_*.json"))
    return [n for n in names if (root / n).is_dir()]


def read_set(root: Path, name: str) -> tuple[list[dict], dict[int, list[str]], Optional[dict[int, list[str]]]]:
    """(images, image id -> captions, image id -> object names or None without instances)."""
    captions_json = _load(root / "annotations" / f"captions_{name}.json")
    try:
        images = list(captions_json["images"])
        captions: dict[int, list[str]] = {}
        for ann in sorted(captions_json["annotations"], key=lambda a: a["id"]):
            captions.setdefault(ann["image_id"], []).append(" ".join(ann["caption"].split()))
    except (KeyError, TypeError) as exc:
        raise UsageError(f"{root / 'annotations' / f'captions_{name}.json'}: not COCO captions (missing {exc})") from None
    instances_path = root / "annotations" / f"instances_{name}.json"
    if not instances_path.is_file():
        return images, captions, None
    instances = _load(instances_path)
    category = {c["id"]: c["name"] for c in instances.get("categories", [])}
    objects: dict[int, set[str]] = {}
    for ann in instances.get("annotations", []):
        objects.setdefault(ann["image_id"], set()).add(category[ann["category_id"]])
    return images, captions, {k: sorted(v) for k, v in objects.items()}


def build(out: Path, root: Path, source_text: str, progress=None) -> int:
    names = sets_present(root)
    if not names:
        raise UsageError(f"{root}: annotations name sets whose photo folders are missing")
    rows, references, empty, with_labels = [], {}, 0, True
    for k, name in enumerate(names):
        images, captions, objects = read_set(root, name)
        with_labels = with_labels and objects is not None
        files = [im["file_name"] for im in images if im["id"] in captions]
        missing_images(root / name, files, f"captions_{name}.json")
        split = ("train" if "train" in name else "test") if len(names) > 1 else ""
        kept = []
        for im in images:
            if im["id"] not in captions:
                continue
            labels = objects.get(im["id"], []) if objects is not None else []
            empty += objects is not None and not labels
            ex_id = Path(im["file_name"]).stem
            rows.append({"id": ex_id, "image": f"images/{name}/{im['file_name']}", "text": captions[im["id"]][0],
                         "label": "|".join(labels) or "[]", "split": split})
            references[ex_id] = captions[im["id"]]
            kept.append(im["file_name"])
        copy_images(root / name, kept, out, f"images/{name}")
        if progress is not None:
            progress(k + 1, len(names))
    extra = (["label"] if with_labels else []) + (["split"] if len(names) > 1 else [])
    write_caption_set(out / "manifest.csv", rows, references, extra)
    write_provenance(out, "coco-captions", {}, {"source": source_text, "sets": names, "photos": len(rows),
                                                "photos_without_objects": empty})
    return len(rows)
