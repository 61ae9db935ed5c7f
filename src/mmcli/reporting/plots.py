"""Matplotlib without a display, and PNG files written atomically."""

from __future__ import annotations

from pathlib import Path


def figure(width: float, height: float):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height))


def save_png(fig, path: Path, dpi: int = 100) -> None:
    """Save next to `path`, then rename into place, so a reader never sees half a PNG."""
    import matplotlib.pyplot as plt

    from mmcli.runs import open_up

    tmp = path.parent / f".{path.name}.tmp.png"
    try:
        fig.tight_layout()
        fig.savefig(tmp, dpi=dpi)
    finally:
        plt.close(fig)
    open_up(tmp)
    tmp.replace(path)
