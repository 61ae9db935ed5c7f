"""Matplotlib without a display, and PNG files written atomically."""

from __future__ import annotations

import warnings
from pathlib import Path


def figure(width: float, height: float, ncols: int = 1):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(1, ncols, figsize=(width, height))


def save_png(fig, path: Path, dpi: int = 100) -> None:
    """Save next to `path`, then rename into place, so a reader never sees half a PNG."""
    import matplotlib.pyplot as plt

    from mmcli import ledger
    from mmcli.runs import open_up

    ledger.check_replace(path)  # in a run or comparison folder, never over a file mmcli did not write
    tmp = path.parent / f".{path.name}.tmp.png"
    try:
        # drawing warns of what the chart shows anyway (a label's glyph missing from the
        # font, a layout that does not fit): raw warnings with source lines, not for users
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fig.tight_layout()
            fig.savefig(tmp, dpi=dpi)
    finally:
        plt.close(fig)
    open_up(tmp)
    tmp.replace(path)
    ledger.record(path)


CURVES_SIZE = (1000, 400)  # pixels of curves.png
CONFUSION_SIZE = (800, 800)  # pixels of confusion-<split>.png


def learning_curves(records: list[dict], path: Path, best_epoch: int | None = None) -> Path:
    """Losses (training and validation) and every validation metric, per epoch: rates in
    [0, 1] in one panel, metrics on other scales (ranks, CIDEr) in a third, so that a
    median rank of 40 does not flatten the recalls."""
    from matplotlib.ticker import MaxNLocator

    metrics = sorted({k for r in records for k in r if k.startswith("val_") and k != "val_loss"
                      and not k.startswith("val_n_") and _is_number(r[k])})
    rates = [k for k in metrics if all(0 <= r[k] <= 1 for r in records if _is_number(r.get(k)))]
    others = [k for k in metrics if k not in rates]
    panels = [("loss", ["train_loss", "val_loss"]), ("validation metrics", rates)]
    if others:
        panels.append(("validation metrics (other scales)", others))
    width = CURVES_SIZE[0] * len(panels) / 2
    fig, axes = figure(width / 100, CURVES_SIZE[1] / 100, ncols=len(panels))
    epochs = [r["epoch"] for r in records]
    for ax, (title, keys) in zip(axes, panels):
        for key in keys:
            values = [r.get(key) for r in records]
            if any(v is not None for v in values):
                style = "--" if key == "val_loss" else "-"
                label = key.replace("_", " ") if title == "loss" else key[4:].replace("_", " ")
                ax.plot(epochs, values, style, marker="o", markersize=3, label=label)
        if best_epoch is not None:
            ax.axvline(best_epoch, color="grey", linewidth=0.8, linestyle=":", label=f"best epoch ({best_epoch})")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(title)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    save_png(fig, path)
    return path


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def confusion_matrix(labels: list[str], matrix: list[list[int]], path: Path, title: str) -> Path:
    """Counts, rows true and columns predicted, shaded by each row's share."""
    import numpy as np

    fig, ax = figure(CONFUSION_SIZE[0] / 100, CONFUSION_SIZE[1] / 100)
    counts = np.asarray(matrix, dtype=float)
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    ticks = range(len(labels))
    small = len(labels) > 12
    ax.set_xticks(ticks, labels, rotation=90, fontsize=6 if small else 8)
    ax.set_yticks(ticks, labels, fontsize=6 if small else 8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if len(labels) <= 20:
        for i in ticks:
            for j in ticks:
                ax.text(j, i, int(counts[i, j]), ha="center", va="center", fontsize=6 if small else 8,
                        color="white" if shares[i, j] > 0.5 else "black")
    save_png(fig, path)
    return path


def roc_det(far: list[float], tar: list[float], path: Path, title: str) -> Path:
    """Verification's two curves side by side: the ROC (true-accept rate against the
    false-accept rate, the latter on a log axis, as face verification shows it) and the DET
    curve (false-reject against false-accept rate on normal-deviate axes, as speaker
    verification shows it; Martin et al., 1997)."""
    import numpy as np
    from scipy.stats import norm

    fig, (roc_ax, det_ax) = figure(CURVES_SIZE[0] / 100, CURVES_SIZE[1] / 100, ncols=2)
    far_a, tar_a = np.asarray(far, dtype=float), np.asarray(tar, dtype=float)
    shown = far_a > 0
    roc_ax.plot(far_a[shown], tar_a[shown], color="tab:blue")
    roc_ax.set_xscale("log")
    roc_ax.set_xlabel("false-accept rate")
    roc_ax.set_ylabel("true-accept rate")
    roc_ax.set_ylim(0, 1.01)
    roc_ax.set_title(f"ROC, {title}")
    clip = 1e-4  # the normal deviate of 0 or 1 is infinite
    frr = np.clip(1 - tar_a, clip, 1 - clip)
    det_ax.plot(norm.ppf(np.clip(far_a, clip, 1 - clip)), norm.ppf(frr), color="tab:red")
    ticks = [0.001, 0.01, 0.05, 0.2, 0.5, 0.8]
    for axis in (det_ax.xaxis, det_ax.yaxis):
        axis.set_ticks(norm.ppf(ticks), [f"{t:g}" for t in ticks])
    det_ax.set_xlim(norm.ppf(5e-4), norm.ppf(0.95))  # the rates of 0 (clipped) fall outside
    det_ax.set_ylim(norm.ppf(5e-4), norm.ppf(0.95))
    det_ax.set_xlabel("false-accept rate")
    det_ax.set_ylabel("false-reject rate")
    det_ax.set_title("DET")
    save_png(fig, path)
    return path
