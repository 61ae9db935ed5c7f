"""Data set recipes and importers (issue 8): every recipe on the local copies in
../shared/data, downloads through a local HTTP server (checksums, broken transfers,
nothing half-written), and the folder and captions importers."""

from __future__ import annotations

import csv
import functools
import http.server
import io
import json
import shutil
import tarfile
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from conftest import SHARED_DATA

needs_shared = pytest.mark.skipif(not (SHARED_DATA / "fsdd" / "recordings").is_dir() or not (SHARED_DATA / "mnist").is_dir(),
                                  reason="../shared/data (fsdd, mnist) is absent")
needs_coco = pytest.mark.skipif(not (SHARED_DATA / "coco-mini" / "annotations").is_dir(),
                                reason="../shared/data/coco-mini is absent")


def rows_of(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --- listing ------------------------------------------------------------------------------

def test_list_names_every_recipe_with_license_and_source(cli):
    result = cli("datasets", "list")
    assert result.exit_code == 0, result.output
    table = list(csv.DictReader(io.StringIO(result.stdout)))
    assert {r["name"] for r in table} == {"toy", "fsdd", "mnist", "avmnist", "moving-mnist", "av-moving-mnist", "coco-captions", "flickr8k",
                                              "speakers", "av-identity"}
    assert all(r["license"] and r["source"] and r["modalities"] for r in table)


# --- recipes on ../shared/data ------------------------------------------------------------

@needs_shared
def test_fsdd_usual_split_and_holdout_speaker(cli, tmp_path):
    result = cli("datasets", "get", "fsdd", tmp_path / "fsdd", "--source", SHARED_DATA, "--quiet")
    assert result.exit_code == 0, result.output
    rows = rows_of(tmp_path / "fsdd" / "manifest.csv")
    assert len(rows) == 3000
    test = [r for r in rows if r["split"] == "test"]
    assert len(test) == 300 and all(int(r["id"].rsplit("_", 1)[1]) < 5 for r in test)
    assert {r["label"] for r in rows} == {str(d) for d in range(10)}
    data, rate = sf.read(tmp_path / "fsdd" / rows[0]["audio"])
    assert rate == 8000 and len(data) > 0
    assert json.loads((tmp_path / "fsdd" / "recipe.json").read_text())["inputs"]["matches_release"] is True

    result = cli("datasets", "get", "fsdd", tmp_path / "held", "--source", SHARED_DATA, "--holdout-speaker", "theo", "--quiet")
    assert result.exit_code == 0, result.output
    rows = rows_of(tmp_path / "held" / "manifest.csv")
    assert {r["id"].split("_")[1] for r in rows if r["split"] == "test"} == {"theo"}
    assert sum(r["split"] == "test" for r in rows) == 500

    result = cli("datasets", "get", "fsdd", tmp_path / "bad", "--source", SHARED_DATA, "--holdout-speaker", "nobody")
    assert result.exit_code == 2 and "george" in result.output  # names the speakers there are
    assert not (tmp_path / "bad").exists() and not [n for n in leftovers(tmp_path) if n.startswith(".bad")]


@needs_shared
def test_mnist_test_set_alone_has_no_split_column(cli, tmp_path):
    result = cli("datasets", "get", "mnist", tmp_path / "m", "--source", SHARED_DATA, "--quiet")
    assert result.exit_code == 0, result.output
    rows = rows_of(tmp_path / "m" / "manifest.csv")
    assert len(rows) == 10_000 and "split" not in rows[0]
    assert [r["label"] for r in rows[:3]] == ["7", "2", "1"]  # the first digits of MNIST's test set
    with Image.open(tmp_path / "m" / rows[0]["image"]) as im:
        assert im.size == (28, 28) and im.mode == "L"


@needs_shared
def test_mnist_with_both_sets_keeps_the_official_split(cli, tmp_path):
    copy = tmp_path / "src" / "mnist"
    copy.mkdir(parents=True)
    for name in ("images-idx3", "labels-idx1"):  # the test files serve as a stand-in training set
        shutil.copy(SHARED_DATA / "mnist" / f"t10k-{name}-ubyte.gz", copy / f"t10k-{name}-ubyte.gz")
        shutil.copy(SHARED_DATA / "mnist" / f"t10k-{name}-ubyte.gz", copy / f"train-{name}-ubyte.gz")
    result = cli("datasets", "get", "mnist", tmp_path / "m", "--source", tmp_path / "src", "--quiet")
    assert result.exit_code == 0, result.output
    rows = rows_of(tmp_path / "m" / "manifest.csv")
    assert sum(r["split"] == "train" for r in rows) == 10_000 and sum(r["split"] == "test" for r in rows) == 10_000


@pytest.fixture(scope="module")
def avmnist_small(tmp_path_factory):
    from typer.testing import CliRunner

    from mmcli.cli import app

    if not (SHARED_DATA / "fsdd" / "recordings").is_dir():
        pytest.skip("../shared/data is absent")
    out = tmp_path_factory.mktemp("av") / "av"
    result = CliRunner().invoke(app, ["datasets", "get", "avmnist", str(out), "--source", str(SHARED_DATA), "--n", "400", "--quiet"])
    assert result.exit_code == 0, result.output
    return out


def test_avmnist_splits_share_no_clip_and_no_image(avmnist_small):
    rows = {r["id"]: r for r in rows_of(avmnist_small / "manifest.csv")}
    pairs = rows_of(avmnist_small / "pairs.csv")
    assert len(rows) == 400 and len(pairs) == 400
    seen: dict[str, dict[str, set]] = {"train": {"img": set(), "clip": set()}, "test": {"img": set(), "clip": set()}}
    labels = np.frombuffer(__import__("gzip").open(SHARED_DATA / "mnist" / "t10k-labels-idx1-ubyte.gz").read()[8:], np.uint8)
    for p in pairs:
        row = rows[p["id"]]
        seen[row["split"]]["img"].add(p["mnist_index"])
        seen[row["split"]]["clip"].add(p["fsdd_clip"])
        digit, _, take = p["fsdd_clip"].split("_")
        assert row["label"] == digit == str(labels[int(p["mnist_index"])])  # audio, image and label agree
        assert (int(take) < 5) == (row["split"] == "test")  # FSDD's takes 0-4 only with test images
    assert not seen["train"]["img"] & seen["test"]["img"]
    assert not seen["train"]["clip"] & seen["test"]["clip"]
    per_digit = [sum(r["label"] == str(d) for r in rows.values()) for d in range(10)]
    assert len(seen["test"]["img"]) == sum(round(n * 0.15) for n in per_digit)  # 15 % of each digit's images
    assert sum(len(s["img"]) for s in seen.values()) == 400  # each image once


def _snr_db(noisy: np.ndarray, clean: np.ndarray) -> float:
    gain = float(noisy @ clean / (clean @ clean))  # the mix may have been scaled to avoid clipping
    noise = noisy - gain * clean
    return 10 * np.log10(np.sum((gain * clean) ** 2) / np.sum(noise ** 2))


def test_avmnist_degrades_both_modalities_as_stated(avmnist_small):
    info = json.loads((avmnist_small / "recipe.json").read_text())
    assert info["options"]["energy_removed"] == 0.75 and info["options"]["snr_db"] == -8.0
    assert 0.25 <= info["inputs"]["variance_kept"] < 0.35  # the fewest components keeping >= 25 %
    pairs = rows_of(avmnist_small / "pairs.csv")
    measured = []
    for p in pairs[:40]:
        noisy, rate = sf.read(avmnist_small / "audio" / f"{p['id']}.wav")
        clean, clean_rate = sf.read(SHARED_DATA / "fsdd" / "recordings" / f"{p['fsdd_clip']}.wav")
        assert rate == clean_rate and len(noisy) == len(clean)
        measured.append(_snr_db(noisy, clean))
    # one short clip's noise power wanders by up to about a dB; the mean over 40 clips does not
    assert abs(np.mean(measured) - (-8.0)) < 0.4 and max(abs(m + 8.0) for m in measured) < 2.0
    images = [np.asarray(Image.open(avmnist_small / "images" / f"{p['id']}.png"), dtype=np.float64) for p in pairs[:50]]
    # four principal components leave smooth blobs: far fewer pure-black or pure-white pixels than a digit has
    assert np.mean([np.mean((im == 0) | (im == 255)) for im in images]) < 0.5


def test_avmnist_is_deterministic_from_its_seed(cli, avmnist_small, tmp_path):
    result = cli("datasets", "get", "avmnist", tmp_path / "again", "--source", SHARED_DATA, "--n", "400", "--quiet")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "again" / "pairs.csv").read_bytes() == (avmnist_small / "pairs.csv").read_bytes()
    first = rows_of(avmnist_small / "manifest.csv")[7]
    assert (tmp_path / "again" / first["audio"]).read_bytes() == (avmnist_small / first["audio"]).read_bytes()
    assert (tmp_path / "again" / first["image"]).read_bytes() == (avmnist_small / first["image"]).read_bytes()
    result = cli("datasets", "get", "avmnist", tmp_path / "other", "--source", SHARED_DATA, "--n", "400", "--seed", "1", "--quiet")
    assert result.exit_code == 0
    assert (tmp_path / "other" / "pairs.csv").read_bytes() != (avmnist_small / "pairs.csv").read_bytes()


@needs_shared
def test_avmnist_without_degradation_keeps_the_originals(cli, tmp_path):
    result = cli("datasets", "get", "avmnist", tmp_path / "clean", "--source", SHARED_DATA, "--n", "40",
                 "--energy-removed", "0", "--snr-db", "inf", "--quiet")
    assert result.exit_code == 0, result.output
    raw = np.frombuffer(__import__("gzip").open(SHARED_DATA / "mnist" / "t10k-images-idx3-ubyte.gz").read()[16:], np.uint8)
    for p in rows_of(tmp_path / "clean" / "pairs.csv")[:10]:
        image = np.asarray(Image.open(tmp_path / "clean" / "images" / f"{p['id']}.png"))
        assert np.array_equal(image, raw.reshape(-1, 28, 28)[int(p["mnist_index"])])
        audio, _ = sf.read(tmp_path / "clean" / "audio" / f"{p['id']}.wav", dtype="int16")
        clip, _ = sf.read(SHARED_DATA / "fsdd" / "recordings" / f"{p['fsdd_clip']}.wav", dtype="int16")
        assert np.array_equal(audio, clip)


def test_avmnist_trains_end_to_end(cli, avmnist_small, tmp_path):
    result = cli("train", avmnist_small, "--epochs", "1", "--out", tmp_path / "run", "--quiet")
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "run" / "data.json").read_text())
    assert {m["kind"] for m in data["modalities"].values()} == {"image", "audio"}
    assert data["splits"]["test"] == sum(r["split"] == "test" for r in rows_of(avmnist_small / "manifest.csv"))


@needs_coco
def test_coco_captions_from_the_local_copy(cli, tmp_path):
    result = cli("datasets", "get", "coco-captions", tmp_path / "coco", "--source", SHARED_DATA, "--quiet")
    assert result.exit_code == 0, result.output
    rows = rows_of(tmp_path / "coco" / "manifest.csv")
    assert len(rows) == 159
    assert sum(r["split"] == "train" for r in rows) == 80 and sum(r["split"] == "test" for r in rows) == 79
    per_caption = rows_of(tmp_path / "coco" / "captions.csv")  # one row per caption, the photo's id as its group
    assert len(per_caption) == 5 * len(rows) and [r["group"] for r in per_caption[::5]] == [r["id"] for r in rows]
    assert all(c["image"] == row["image"] and c["split"] == row["split"] for row, c in zip(rows, per_caption[::5]))
    assert all(row["text"] == c["text"] for row, c in zip(rows, per_caption[::5]))
    categories = {c["name"] for c in json.loads((SHARED_DATA / "coco-mini" / "annotations" / "instances_val2017.json").read_text())["categories"]}
    assert all(r["label"] and set(r["label"].split("|")) <= categories for r in rows)
    assert all((tmp_path / "coco" / r["image"]).is_file() for r in rows)


def _coco_pairs() -> tuple[Path, list[tuple[str, str]]]:
    root = SHARED_DATA / "coco-mini"
    data = json.loads((root / "annotations" / "captions_val2017.json").read_text())
    names = {im["id"]: im["file_name"] for im in data["images"]}
    return root / "val2017", [(names[a["image_id"]], " ".join(a["caption"].split())) for a in data["annotations"]]


@needs_coco
def test_flickr8k_kaggle_layout(cli, tmp_path):
    photos, pairs = _coco_pairs()
    source = tmp_path / "flickr"
    shutil.copytree(photos, source / "Images")
    with open(source / "captions.txt", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", "caption"])
        writer.writerows(pairs)
    result = cli("datasets", "get", "flickr8k", tmp_path / "out", "--source", source, "--quiet")
    assert result.exit_code == 0, result.output
    rows = rows_of(tmp_path / "out" / "manifest.csv")
    assert len(rows) == 79 and "split" not in rows[0]
    assert len(rows_of(tmp_path / "out" / "captions.csv")) == len(pairs)


@needs_coco
def test_flickr8k_original_layout_with_split_lists(cli, tmp_path):
    photos, pairs = _coco_pairs()
    source = tmp_path / "flickr"
    shutil.copytree(photos, source / "Flicker8k_Dataset")
    text = source / "Flickr8k_text"
    text.mkdir()
    counts: dict[str, int] = {}
    lines = []
    for name, caption in pairs:
        lines.append(f"{name}#{counts.get(name, 0)}\t{caption}")
        counts[name] = counts.get(name, 0) + 1
    (text / "Flickr8k.token.txt").write_text("\n".join(lines) + "\n")
    names = sorted(counts)
    (text / "Flickr_8k.trainImages.txt").write_text("\n".join(names[:60]) + "\n")
    (text / "Flickr_8k.devImages.txt").write_text("\n".join(names[60:70]) + "\n")
    (text / "Flickr_8k.testImages.txt").write_text("\n".join(names[70:]) + "\n")
    result = cli("datasets", "get", "flickr8k", tmp_path / "out", "--source", source, "--quiet")
    assert result.exit_code == 0, result.output
    rows = rows_of(tmp_path / "out" / "manifest.csv")
    assert [sum(r["split"] == s for r in rows) for s in ("train", "val", "test")] == [60, 10, 9]


# --- downloads ----------------------------------------------------------------------------

class _Server:
    """A local HTTP server over a folder; `broken` names files it cuts off half-way."""

    def __init__(self, folder: Path, broken: tuple[str, ...] = ()):
        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                name = self.path.rsplit("/", 1)[-1]
                if name in broken:
                    body = (folder / name).read_bytes()
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.connection.close()
                    return
                super().do_GET()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(folder)))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/files"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def _fsdd_archive(folder: Path, tamper: bool = False) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(folder / "v1.0.10.tar.gz", "w:gz", compresslevel=1) as tf:
        for path in sorted((SHARED_DATA / "fsdd" / "recordings").glob("*.wav")):
            data = path.read_bytes()
            if tamper and path.name == "3_theo_7.wav":
                data = data[:-2] + b"\x00\x01"
            info = tarfile.TarInfo(f"free-spoken-digit-dataset-1.0.10/recordings/{path.name}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


@needs_shared
def test_fsdd_download_checks_what_the_archive_unpacks_to(cli, tmp_path):
    served = tmp_path / "served"
    _fsdd_archive(served / "files")
    server = _Server(served)
    try:
        result = cli("datasets", "get", "fsdd", tmp_path / "fsdd", "--mirror", server.url, "--quiet")
        assert result.exit_code == 0, result.output
        assert len(rows_of(tmp_path / "fsdd" / "manifest.csv")) == 3000
        assert json.loads((tmp_path / "fsdd" / "recipe.json").read_text())["inputs"]["source"].startswith("download")
        assert not (tmp_path / "fsdd" / ".download").exists()  # the archive and its unpacking are gone

        _fsdd_archive(served / "files", tamper=True)
        result = cli("datasets", "get", "fsdd", tmp_path / "tampered", "--mirror", server.url)
        assert result.exit_code == 2 and "do not match release v1.0.10" in result.output
        assert not (tmp_path / "tampered").exists()
    finally:
        server.close()
    assert not [n for n in leftovers(tmp_path) if ".partial" in n]


@needs_shared
def test_checksum_mismatch_is_an_error_that_keeps_nothing(cli, tmp_path):
    # the local MNIST files were recompressed: same digits, other bytes than the published MD5s
    served = tmp_path / "served" / "files"
    shutil.copytree(SHARED_DATA / "mnist", served)
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        shutil.copy(served / name.replace("train", "t10k"), served / name)
    server = _Server(served.parent)
    try:
        result = cli("datasets", "get", "mnist", tmp_path / "m", "--mirror", server.url)
    finally:
        server.close()
    assert result.exit_code == 2
    assert "checksum mismatch" in result.output and "f68b3c2dcbeaaa9fbdd348bbdeb94873" in result.output
    assert not (tmp_path / "m").exists() and not [n for n in leftovers(tmp_path) if ".partial" in n]


@needs_shared
def test_broken_and_missing_downloads_are_clear_errors(cli, tmp_path):
    served = tmp_path / "served" / "files"
    _fsdd_archive(served)
    server = _Server(served.parent, broken=("v1.0.10.tar.gz",))
    try:
        result = cli("datasets", "get", "fsdd", tmp_path / "cut", "--mirror", server.url)
        assert result.exit_code == 2 and "nothing of it was kept" in result.output, result.output
        result = cli("datasets", "get", "flickr8k", tmp_path / "absent", "--mirror", server.url)
        assert result.exit_code == 2 and "HTTP 404" in result.output
    finally:
        server.close()
    assert leftovers(tmp_path) == ["served"]


def test_no_network_names_the_way_out(cli, tmp_path):
    result = cli("datasets", "get", "mnist", tmp_path / "m", "--mirror", "http://127.0.0.1:9/none")
    assert result.exit_code == 2 and "--source" in result.output
    assert leftovers(tmp_path) == []


def test_archive_members_outside_the_folder_are_refused(tmp_path):
    from mmcli.data.recipes.download import extract
    from mmcli.errors import UsageError

    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ok.txt", "fine")
        zf.writestr("../escaped.txt", "not fine")
    (tmp_path / "dest").mkdir()
    with pytest.raises(UsageError, match="outside"):
        extract(archive, tmp_path / "dest")
    assert not (tmp_path / "escaped.txt").exists() and leftovers(tmp_path / "dest") == []


def test_get_refuses_a_folder_that_is_not_empty(cli, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("keep me")
    result = cli("datasets", "get", "fsdd", tmp_path / "out", "--source", tmp_path)
    assert result.exit_code == 2 and "not empty" in result.output
    assert leftovers(tmp_path / "out") == ["mine.txt"]


# --- importers ----------------------------------------------------------------------------

def _class_tree(root: Path, files: list[tuple[Path, str, str]]) -> None:
    for path, label, split in files:
        folder = root / split / label if split else root / label
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, folder / path.name)


@needs_shared
def test_import_audiofolder_then_preprocess(cli, tmp_path):
    clips = sorted((SHARED_DATA / "fsdd" / "recordings").glob("*_jackson_1?.wav"))[:40]
    _class_tree(tmp_path / "sounds", [(p, p.name[0], "") for p in clips])
    result = cli("datasets", "import", "audiofolder", tmp_path / "sounds", "--quiet")
    assert result.exit_code == 0, result.output
    rows = rows_of(tmp_path / "sounds" / "manifest.csv")
    assert len(rows) == len(clips) and list(rows[0]) == ["id", "audio", "label"]
    assert all(Path(r["audio"]).parent.name == r["label"] for r in rows)
    result = cli("preprocess", tmp_path / "sounds", "--quiet")
    assert result.exit_code == 0, result.output


@needs_shared
def test_import_imagefolder_with_split_folders_and_an_outer_manifest(cli, tmp_path):
    photos, _ = _coco_pairs() if (SHARED_DATA / "coco-mini").is_dir() else (None, None)
    if photos is None:
        pytest.skip("../shared/data/coco-mini is absent")
    names = sorted(photos.glob("*.jpg"))[:12]
    _class_tree(tmp_path / "photos", [(p, "ab"[i % 2], "train" if i < 8 else "test") for i, p in enumerate(names)])
    result = cli("datasets", "import", "imagefolder", tmp_path / "photos", "--out", tmp_path / "photos.csv", "--quiet")
    assert result.exit_code == 0, result.output
    rows = rows_of(tmp_path / "photos.csv")
    assert [sum(r["split"] == s for r in rows) for s in ("train", "test")] == [8, 4]
    assert all(r["image"].startswith("photos/") and (tmp_path / r["image"]).is_file() for r in rows)


def test_importers_never_overwrite_and_keep_paths_inside(cli, tmp_path):
    folder = tmp_path / "imgs" / "cat"
    folder.mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(folder / "a.png")
    (tmp_path / "imgs" / "manifest.csv").write_text("mine\n")
    result = cli("datasets", "import", "imagefolder", tmp_path / "imgs")
    assert result.exit_code == 2 and "never overwrites" in result.output
    assert (tmp_path / "imgs" / "manifest.csv").read_text() == "mine\n"
    (tmp_path / "elsewhere").mkdir()
    result = cli("datasets", "import", "imagefolder", tmp_path / "imgs", "--out", tmp_path / "elsewhere" / "m.csv")
    assert result.exit_code == 2 and "a folder above it" in result.output
    assert leftovers(tmp_path / "elsewhere") == []
    result = cli("datasets", "import", "audiofolder", tmp_path / "imgs", "--out", tmp_path / "imgs" / "a.csv")
    assert result.exit_code == 2 and "no files" in result.output


@needs_coco
def test_import_captions_csv(cli, tmp_path):
    photos, pairs = _coco_pairs()
    shutil.copytree(photos, tmp_path / "photos")
    with open(tmp_path / "caps.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", "description", "label"])
        writer.writerows((name, caption, "outdoor" if i % 2 else "indoor") for i, (name, caption) in enumerate(pairs))
    result = cli("datasets", "import", "captions", tmp_path / "photos", "--captions", tmp_path / "caps.csv",
                 "--image-column", "file", "--caption-column", "description", "--quiet")
    assert result.exit_code == 0, result.output
    rows = rows_of(tmp_path / "photos" / "manifest.csv")
    assert len(rows) == 79 and list(rows[0]) == ["id", "image", "text", "label"]
    per_caption = rows_of(tmp_path / "photos" / "captions.csv")
    assert len(per_caption) == len(pairs) and list(per_caption[0]) == ["id", "image", "text", "group", "label"]

    with open(tmp_path / "caps.csv", "a", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([("missing.jpg", "a photo that is not there", "indoor"), (pairs[0][0], "", "indoor")])
    result = cli("datasets", "import", "captions", tmp_path / "photos", "--captions", tmp_path / "caps.csv",
                 "--image-column", "file", "--caption-column", "description", "--out", tmp_path / "photos" / "two.csv")
    assert result.exit_code == 2
    assert f"row {len(pairs) + 2}" in result.output and "'description'" in result.output
    assert not (tmp_path / "photos" / "two.csv").exists()


def _zip(path: Path, members: dict[str, bytes]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    from mmcli.data.recipes.download import file_digest

    return file_digest(path, "md5")


@needs_coco
def test_coco_and_flickr8k_downloads_unpack_to_what_their_builders_read(cli, tmp_path, monkeypatch):
    """The real archives are 1 GB and more: these stand-ins have the same names and inner
    layout, built from coco-mini, and their own MD5s are patched in."""
    from mmcli.data.recipes import captions, coco
    from mmcli.data.recipes.download import Remote

    photos, pairs = _coco_pairs()
    served = tmp_path / "served" / "files"
    jpgs = {p.name: p.read_bytes() for p in photos.glob("*.jpg")}
    annotations = SHARED_DATA / "coco-mini" / "annotations"
    md5 = [_zip(served / "val2017.zip", {f"val2017/{n}": b for n, b in jpgs.items()}),
           _zip(served / "annotations_trainval2017.zip", {f"annotations/{p.name}": p.read_bytes() for p in annotations.glob("*.json")})]
    monkeypatch.setattr(coco, "REMOTES", [Remote(r.url, m) for r, m in zip(coco.REMOTES, md5)])
    token = "".join(f"{n}#{i}\t{c}\n" for i, (n, c) in enumerate(pairs))
    md5 = [_zip(served / "Flickr8k_Dataset.zip", {**{f"Flicker8k_Dataset/{n}": b for n, b in jpgs.items()},
                                                  "__MACOSX/._junk": b"x"}),
           _zip(served / "Flickr8k_text.zip", {"Flickr8k.token.txt": token.encode()})]
    monkeypatch.setattr(captions, "FLICKR_REMOTES", [Remote(r.url, m) for r, m in zip(captions.FLICKR_REMOTES, md5)])
    server = _Server(served.parent)
    try:
        result = cli("datasets", "get", "coco-captions", tmp_path / "coco", "--mirror", server.url, "--quiet")
        assert result.exit_code == 0, result.output
        rows = rows_of(tmp_path / "coco" / "manifest.csv")
        assert len(rows) == 79 and "split" not in rows[0]  # val2017 alone: mmcli draws the split
        assert json.loads((tmp_path / "coco" / "recipe.json").read_text())["inputs"]["sets"] == ["val2017"]
        result = cli("datasets", "get", "flickr8k", tmp_path / "flickr", "--mirror", server.url, "--quiet")
        assert result.exit_code == 0, result.output
        assert len(rows_of(tmp_path / "flickr" / "manifest.csv")) == 79
    finally:
        server.close()
    assert sorted(leftovers(tmp_path)) == ["coco", "flickr", "served"]


@needs_coco
def test_coco_photo_without_objects_gets_an_empty_label_and_trains_multilabel(cli, tmp_path):
    source = tmp_path / "coco"
    shutil.copytree(SHARED_DATA / "coco-mini", source)
    instances = json.loads((source / "annotations" / "instances_val2017.json").read_text())
    bare = instances["images"][0]["id"]
    instances["annotations"] = [a for a in instances["annotations"] if a["image_id"] != bare]
    (source / "annotations" / "instances_val2017.json").write_text(json.dumps(instances))
    result = cli("datasets", "get", "coco-captions", tmp_path / "out", "--source", source, "--quiet")
    assert result.exit_code == 0, result.output
    rows = rows_of(tmp_path / "out" / "manifest.csv")
    assert [r["label"] for r in rows if r["id"] == Path(instances["images"][0]["file_name"]).stem] == ["[]"]
    assert json.loads((tmp_path / "out" / "recipe.json").read_text())["inputs"]["photos_without_objects"] == 1
    result = cli("train", tmp_path / "out", "--task", "multilabel", "--epochs", "1", "--out", tmp_path / "run",
                 "--set", "data.image_size=32", "--quiet")
    assert result.exit_code == 0, result.output
    assert "micro_f1" in json.loads((tmp_path / "run" / "eval-test.json").read_text())
