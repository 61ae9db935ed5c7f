"""`datasets get`: each recipe downloads (or takes `--source`), then builds into a staged
folder that becomes OUT only when everything is written."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from mmcli.data.recipes import avmnist, captions, coco, fsdd, identity, mnist, moving_mnist, staged

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
             holdout_speaker: Optional[str] = None, progress: Progress = None, target: str = "digit") -> int:
    """target "digit" (the label is the spoken digit) or "speaker" (the speaker, with no split column)."""
    with staged(out) as tmp, _inputs(tmp, source, fsdd.find, fsdd.download, mirror, progress) as (folder, how):
        return fsdd.build(tmp, folder, how, holdout_speaker, progress, target=target)


def get_avmnist(out: Path, source: Optional[Path] = None, mirror: Optional[str] = None, progress: Progress = None,
                **options) -> int:
    def find(root: Path) -> tuple[Path, Path]:
        return mnist.find(root), fsdd.find(root)

    def download(scratch: Path, mirror_url: Optional[str], bar: Progress) -> tuple[Path, Path]:
        return mnist.download(scratch / "mnist", mirror_url, bar), fsdd.download(scratch / "fsdd", mirror_url, bar)

    with staged(out) as tmp, _inputs(tmp, source, find, download, mirror, progress) as ((images, recordings), how):
        return avmnist.build(tmp, images, recordings, how, progress=progress, **options)


def get_moving_mnist(out: Path, source: Optional[Path] = None, mirror: Optional[str] = None, progress: Progress = None,
                     **options) -> int:
    """Moving MNIST clips (video) built from the mnist recipe's files; av=True: with FSDD's
    spoken digits in their sound track (av-moving-mnist)."""
    av = options.pop("av", False)

    def find(root: Path) -> tuple[Path, Optional[Path]]:
        return mnist.find(root), fsdd.find(root) if av else None

    def download(scratch: Path, mirror_url: Optional[str], bar: Progress) -> tuple[Path, Optional[Path]]:
        images = mnist.download(scratch / "mnist", mirror_url, bar)
        return images, fsdd.download(scratch / "fsdd", mirror_url, bar) if av else None

    with staged(out) as tmp, _inputs(tmp, source, find, download, mirror, progress) as ((images, recordings), _how):
        if recordings is not None:
            return moving_mnist.make_av_moving_mnist(tmp, images, recordings, progress=progress, **options)
        return moving_mnist.make_moving_mnist(tmp, images, progress=progress, **options)


def get_coco(out: Path, source: Optional[Path] = None, mirror: Optional[str] = None, progress: Progress = None) -> int:
    with staged(out) as tmp, _inputs(tmp, source, coco.find, coco.download, mirror, progress) as (folder, how):
        return coco.build(tmp, folder, how, progress)


def get_flickr8k(out: Path, source: Optional[Path] = None, mirror: Optional[str] = None, progress: Progress = None) -> int:
    with staged(out) as tmp, _inputs(tmp, source, captions.find_flickr, captions.download_flickr8k, mirror,
                                     progress) as (folder, how):
        return captions.build_flickr8k(tmp, folder, how, progress)


def _no_download(scratch: Path, mirror: Optional[str], progress: Progress) -> Any:
    return identity.find_librispeech(None)  # raises: says where to get the data


def get_speakers(out: Path, source: Optional[Path] = None, segment_seconds: float = 2.0,
                 progress: Progress = None) -> int:
    """LibriSpeech speakers (Resemblyzer's audio_data) cut into segments; built only from --source."""
    with staged(out) as tmp, _inputs(tmp, source, identity.find_librispeech, _no_download, None,
                                     progress) as (folder, how):
        return identity.build_speakers(tmp, folder, how, segment_seconds, progress)


def get_av_identity(out: Path, source: Optional[Path] = None, per_identity: int = 10, seed: int = 0,
                    progress: Progress = None) -> int:
    """ORL faces paired with LibriSpeech voices (a synthetic pairing); built only from --source."""
    with staged(out) as tmp, _inputs(tmp, source, identity.find_av, lambda *_: identity.find_av(None), None,
                                     progress) as ((faces, voices), how):
        return identity.build_av_identity(tmp, faces, voices, how, per_identity, seed, progress)
