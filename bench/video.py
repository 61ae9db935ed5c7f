"""Benchmarks of the video kind (issue 21), each a ratio measured side by side in one run
on clips made here from ../shared/data/mnist (the moving-mnist recipe, real MP4 files
written through PyAV). Called from bench/run.py.

- video_memory: peak memory of preprocessing 10N clips against N (target: at most 1.3):
  decoding streams into the cache, keeping only the sampled frames of the clips in flight;
- video_cache: a training epoch over the cached frames against one that also decodes the
  clips' files, as a loader that decodes every epoch would: on small generated clips, and
  on GRID's real ones (../shared/data/grid-s1) where present.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import tempfile
from pathlib import Path

Row = tuple[str, str, str, str]
N = 40
MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FRAMES, SIZE = 16, 64

PEAK = """
import resource, sys
from mmcli.config import DataConfig
from mmcli.data.preprocess import preprocess
preprocess(sys.argv[1], DataConfig(video_frames=16), sys.argv[2])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def _clips(tmp: str, n: int) -> str:
    from mmcli.data.recipes.moving_mnist import make_moving_mnist

    out = os.path.join(tmp, f"mm{n}")
    make_moving_mnist(Path(out), MNIST, n=n, frames=FRAMES, size=SIZE)
    return os.path.join(out, "manifest.csv")


def _env(tmp: str) -> dict:
    return {**os.environ, "MMCLI_CACHE_DIR": os.path.join(tmp, "cache"), "MMCLI_NO_PROGRESS": "1"}


def video_memory() -> list[Row]:
    peaks = {}
    with tempfile.TemporaryDirectory(prefix="mmcli-bench-") as tmp:
        for n in (N, 10 * N):
            manifest = _clips(tmp, n)
            out = subprocess.run([sys.executable, "-c", PEAK, manifest, os.path.join(tmp, f"c{n}")], check=True,
                                 capture_output=True, text=True, env=_env(tmp))
            peaks[n] = int(out.stdout.strip().splitlines()[-1]) / 1024  # KiB -> MiB
    small, big = peaks[N], peaks[10 * N]
    return [(f"video preprocess peak memory: {10 * N} vs {N} clips of {FRAMES} frames (target <= 1.3)",
             f"{big:.0f} MiB", f"{small:.0f} MiB", f"{big / small:.2f}")]


def _epoch_against_decoding(manifest: str, column: str, tmp: str, what: str, label: str = "label") -> Row:
    from scale import _mmcli_epoch, median_seconds

    from mmcli.config import from_dict
    from mmcli.data.video import decode_video
    from mmcli.pipeline import prepare_training

    config = from_dict({"data": {"manifest": manifest, "video_frames": FRAMES, "label": label,
                                 "modalities": {column: {"column": column, "kind": "video"}}},
                        "train": {"batch_size": 32, "epochs": 3}})
    data = prepare_training(config, cache_dir=os.path.join(tmp, "cache"))
    epoch = _mmcli_epoch(data.config, data)
    epoch()
    cached = median_seconds(epoch)
    train_rows = [i for i, s in enumerate(data.splits) if s == "train"]
    with open(manifest) as handle:
        rows = list(csv.DictReader(handle))
    root = Path(manifest).parent

    def decode_all() -> None:
        for i in train_rows:
            decode_video(root / rows[i][column], frames=FRAMES, size=config.data.image_size)

    raw = cached + median_seconds(decode_all, 1)
    return (f"video training epoch, {what} ({len(train_rows)} clips): over the cached frames vs decoding the files",
            f"{cached:.2f} s", f"{raw:.2f} s", f"{raw / cached:.1f}x")


def video_cache() -> list[Row]:
    out = []
    with tempfile.TemporaryDirectory(prefix="mmcli-bench-") as tmp:
        out.append(_epoch_against_decoding(_clips(tmp, 4 * N), "video", tmp, "moving MNIST 64x64, 2 s"))
        grid = MNIST / "grid-s1" / "manifest.csv"
        if grid.is_file():  # real clips: 360x288 MPEG-1, 3 s at 25 fps
            out.append(_epoch_against_decoding(str(grid), "video", tmp, "GRID 360x288, 3 s", "colour"))
    return out


BENCHMARKS = {"video_memory": video_memory, "video_cache": video_cache}
