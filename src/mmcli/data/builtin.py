"""The built-in toy data set, made once into the user's cache folder."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

TOY_VERSION = "v2"  # v2: captions.csv
TOY_SIZE = 1200
TOY_SEED = 0


def toy_manifest(cache_root: Path) -> Path:
    folder = cache_root / "datasets" / f"toy-{TOY_VERSION}-n{TOY_SIZE}-seed{TOY_SEED}"
    manifest = folder / "manifest.csv"
    if manifest.is_file():
        return manifest
    from mmcli.data.toy import make_toy

    folder.parent.mkdir(parents=True, exist_ok=True)
    # make it beside its final place, then rename, so two processes never see half a set
    tmp = Path(tempfile.mkdtemp(prefix=".toy-", dir=folder.parent))
    try:
        from mmcli.runs import open_up

        open_up(tmp)
        make_toy(tmp / "set", n=TOY_SIZE, seed=TOY_SEED)
        if not manifest.is_file():
            shutil.rmtree(folder, ignore_errors=True)
            (tmp / "set").rename(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest
