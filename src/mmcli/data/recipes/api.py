"""`datasets get`: each recipe downloads (or takes `--source`), then builds into a staged
folder that becomes OUT only when everything is written."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from mmcli.data.recipes import avmnist, captions, coco, fsdd, mnist, staged

Progress = Optional[Callable[[int, int], None]]


@contextlib.contextmanager
def _inputs(tmp: Path, source: Optional[Path], find: Callable[[Path], Any],
            download: Callable[..., Any], mirror: Optional[str], progress: Progress) -> Iterator[tuple[Any, str]]:
    """(folder to read, how it was obtained); a download lives in OUT's staging folder and
    is deleted before OUT appears."""
    if source is not None:
        yield find(Path(source)), f"--source {source}"
        return
    scratch = tmp / ".download"
    try:
        yield download(scratch, mirror, progress), f"download{' from mirror ' + mirror if mirror else ''}"
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def get_mnist(out: Path, source: Optional[Path] = None, mirror: Optional[str] = None, progress: Progress = None) -> int:
    with staged(out) as tmp, _inputs(tmp, source, mnist.find, mnist.download, mirror, progress) as (folder, how):
        return mnist.build(tmp, folder, how, progress)


def get_fsdd(out: Path, source: Optional[Path] = None, mirror: Optional[str] = None,
             holdout_speaker: Optional[str] = None, progress: Progress = None) -> int:
    with staged(out) as tmp, _inputs(tmp, source, fsdd.find, fsdd.download, mirror, progress) as (folder, how):
        return fsdd.build(tmp, folder, how, holdout_speaker, progress)


def get_avmnist(out: Path, source: Optional[Path] = None, mirror: Optional[str] = None, progress: Progress = None,
                **options) -> int:
    def find(root: Path) -> tuple[Path, Path]:
        return mnist.find(root), fsdd.find(root)

    def download(scratch: Path, mirror_url: Optional[str], bar: Progress) -> tuple[Path, Path]:
        return mnist.download(scratch / "mnist", mirror_url, bar), fsdd.download(scratch / "fsdd", mirror_url, bar)

    with staged(out) as tmp, _inputs(tmp, source, find, download, mirror, progress) as ((images, recordings), how):
        return avmnist.build(tmp, images, recordings, how, progress=progress, **options)


def get_coco(out: Path, source: Optional[Path] = None, mirror: Optional[str] = None, progress: Progress = None) -> int:
    with staged(out) as tmp, _inputs(tmp, source, coco.find, coco.download, mirror, progress) as (folder, how):
        return coco.build(tmp, folder, how, progress)


def get_flickr8k(out: Path, source: Optional[Path] = None, mirror: Optional[str] = None, progress: Progress = None) -> int:
    with staged(out) as tmp, _inputs(tmp, source, captions.find_flickr, captions.download_flickr8k, mirror,
                                     progress) as (folder, how):
        return captions.build_flickr8k(tmp, folder, how, progress)
