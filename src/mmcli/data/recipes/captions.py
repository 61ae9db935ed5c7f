"""Photos with captions: the pieces that COCO, Flickr8k and a user's own captions CSV share.

Every caption set becomes two manifests: `manifest.csv`, one row per photo whose `text`
is the photo's first caption (classification, multi-label), and `captions.csv`, one row
per caption with the photo's id in its `group` column (captioning and retrieval train on
every caption; the group keeps a photo's rows in one split, and scoring takes all of its
captions as the references).
"""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path
from typing import Optional

from mmcli.data.recipes import refuse_existing, relative_prefix, write_manifest
from mmcli.data.recipes.download import Remote, extract, fetch
from mmcli.errors import BadRow, DataError, UsageError

FLICKR_SPLITS = {"train": "Flickr_8k.trainImages.txt", "val": "Flickr_8k.devImages.txt", "test": "Flickr_8k.testImages.txt"}


def group(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    """image name -> its captions, in the order given."""
    grouped: dict[str, list[str]] = {}
    for name, caption in pairs:
        grouped.setdefault(name, []).append(caption)
    return grouped


def missing_images(folder: Path, names: list[str], source: str) -> None:
    bad = [BadRow(source, None, None, f"names the image '{n}', which {folder} lacks") for n in names if not (folder / n).is_file()]
    if bad:
        raise DataError(f"{source}: captions of images that are not there", bad)


def write_caption_set(manifest: Path, rows: list[dict[str, str]], captions: dict[str, list[str]], extra: list[str]) -> Path:
    """The manifest (a row per photo), and one row per caption: `captions.csv` beside
    `manifest.csv`, else `STEM.captions.csv` beside `STEM.csv`."""
    per_caption = "captions.csv" if manifest.name == "manifest.csv" else f"{manifest.stem}.captions.csv"
    refuse_existing(manifest, manifest.parent / per_caption)
    write_manifest(manifest.parent, ["id", "image", "text"] + extra, rows, name=manifest.name)
    caption_rows = [{**row, "id": f"{row['id']}-{k}", "text": text, "group": row["id"]}
                    for row in rows for k, text in enumerate(captions[row["id"]])]
    write_manifest(manifest.parent, ["id", "image", "text", "group"] + extra, caption_rows, name=per_caption)
    return manifest


def copy_images(folder: Path, names: list[str], out: Path, sub: str) -> None:
    (out / sub).mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copyfile(folder / name, out / sub / name)


# --- a user's captions CSV -------------------------------------------------------------

def read_captions_csv(path: Path, image_column: str, caption_column: str) -> tuple[list[dict[str, str]], list[str]]:
    """Rows of a captions CSV, checked: every row names an image and has a caption."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read as UTF-8 text ({exc})") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    columns = [c.strip() for c in reader.fieldnames or []]
    missing = [c for c in (image_column, caption_column) if c not in columns]
    if missing:
        raise DataError(f"{path}: no column {', '.join(repr(c) for c in missing)} (columns: {', '.join(columns)}); "
                        "name them with --image-column and --caption-column",
                        [BadRow(path.name, None, c, "column missing") for c in missing])
    rows, bad = [], []
    for i, raw in enumerate(reader, start=1):
        row = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
        for column in (image_column, caption_column):
            if not row.get(column):
                bad.append(BadRow(path.name, i, column, "empty", reader.line_num))
        rows.append(row)
    if bad:
        raise DataError(f"{path}: rows without an image or a caption", bad)
    return rows, columns


def import_captions(folder: Path, captions_csv: Path, manifest: Path, image_column: str = "image",
                    caption_column: str = "caption") -> tuple[Path, int, int]:
    """Write a manifest for the photos of `folder` named by a captions CSV; returns
    (manifest, photos, captions). `label` and `split` columns of the CSV are carried over."""
    rows, columns = read_captions_csv(captions_csv, image_column, caption_column)
    captions = group([(r[image_column], r[caption_column]) for r in rows])
    missing_images(folder, list(captions), captions_csv.name)
    carried: list[str] = [c for c in ("label", "split") if c in columns]
    first: dict[str, dict[str, str]] = {}
    for row in rows:
        first.setdefault(row[image_column], row)
    prefix = relative_prefix(folder, manifest)
    out_rows = [{"id": Path(name).stem, "image": prefix + name, "text": texts[0],
                 **{c: first[name].get(c, "") for c in carried}}
                for name, texts in captions.items()]
    _check_ids(out_rows, captions_csv.name)
    write_caption_set(manifest, out_rows, {r["id"]: captions[n] for r, n in zip(out_rows, captions)}, carried)
    return manifest, len(out_rows), len(rows)


def _check_ids(rows: list[dict[str, str]], source: str) -> None:
    seen: dict[str, int] = {}
    bad = []
    for i, row in enumerate(rows, start=1):
        if row["id"] in seen:
            bad.append(BadRow(source, i, "image", f"two images share the id '{row['id']}' (file name without extension)"))
        seen[row["id"]] = i
    if bad:
        raise DataError(f"{source}: images whose names differ only in their extension", bad)


# --- Flickr8k --------------------------------------------------------------------------

def flickr_layout(source: Path) -> tuple[Path, list[tuple[str, str]], dict[str, str]]:
    """(images folder, (image, caption) pairs, image -> split) for either common layout:
    Kaggle's `Images/` + `captions.txt`, or the original `Flicker8k_Dataset/` +
    `Flickr8k.token.txt` with the `Flickr_8k.*Images.txt` split lists."""
    if (source / "Images").is_dir() and (source / "captions.txt").is_file():
        rows, _ = read_captions_csv(source / "captions.txt", "image", "caption")
        return source / "Images", [(r["image"], r["caption"]) for r in rows], {}
    texts = next((d for d in (source / "Flickr8k_text", source) if (d / "Flickr8k.token.txt").is_file()), None)
    images = next((d for d in (source / "Flicker8k_Dataset", source / "Flickr8k_Dataset") if d.is_dir()), None)
    if texts is None or images is None:
        raise UsageError(f"{source}: not a Flickr8k copy (expected Images/ + captions.txt, "
                         "or Flicker8k_Dataset/ + Flickr8k.token.txt)")
    pairs, bad = [], []
    token = texts / "Flickr8k.token.txt"
    for number, line in enumerate(token.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        key, _, caption = line.partition("\t")
        if not caption.strip() or "#" not in key:
            bad.append(BadRow(token.name, None, None, f"line {number}: not 'IMAGE#N<tab>caption'"))
            continue
        pairs.append((key.split("#")[0], caption.strip()))
    if bad:
        raise DataError(f"{token}: lines that are not captions", bad)
    splits = {}
    for split, name in FLICKR_SPLITS.items():
        if (texts / name).is_file():
            splits.update({n.strip(): split for n in (texts / name).read_text().splitlines() if n.strip()})
    return images, pairs, splits


def build_flickr8k(out: Path, source: Path, source_text: str, progress=None) -> int:
    from mmcli.data.recipes import write_provenance

    images, pairs, splits = flickr_layout(source)
    captions = group(pairs)
    names = list(captions)
    missing_images(images, names, "captions")
    copy_images(images, names, out, "images")
    use_splits = bool(splits) and all(n in splits for n in names)
    rows = [{"id": Path(n).stem, "image": f"images/{n}", "text": captions[n][0],
             **({"split": splits[n]} if use_splits else {})} for n in names]
    _check_ids(rows, "captions")
    write_caption_set(out / "manifest.csv", rows, {r["id"]: captions[n] for r, n in zip(rows, names)},
                      ["split"] if use_splits else [])
    write_provenance(out, "flickr8k", {}, {"source": source_text, "photos": len(rows), "captions": len(pairs),
                                           "splits": "Flickr_8k lists" if use_splits else "none (drawn from the seed)"})
    if progress is not None:
        progress(len(rows), len(rows))
    return len(rows)


FLICKR_REMOTES = [
    Remote("https://github.com/jbrownlee/Datasets/releases/download/Flickr8k/Flickr8k_Dataset.zip",
           "f18a1e2920de5bd84dae7cf08ec78978"),
    Remote("https://github.com/jbrownlee/Datasets/releases/download/Flickr8k/Flickr8k_text.zip",
           "bf6c1abcb8e4a833b7f922104de18627"),
]


def download_flickr8k(folder: Path, mirror: Optional[str] = None, progress=None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "Flickr8k_text").mkdir(exist_ok=True)
    for remote, dest in zip(FLICKR_REMOTES, (folder, folder / "Flickr8k_text")):
        archive = fetch(remote, folder, mirror, progress)
        extract(archive, dest, members=lambda n: not n.startswith("__MACOSX"))
        archive.unlink()
    return folder


def find_flickr(source: Path) -> Path:
    for folder in (source / "flickr8k", source):
        if (folder / "Images").is_dir() or (folder / "Flicker8k_Dataset").is_dir() or (folder / "Flickr8k_Dataset").is_dir():
            return folder
    raise UsageError(f"{source}: no Flickr8k copy found (Images/ + captions.txt, or Flicker8k_Dataset/ + Flickr8k_text/)")
