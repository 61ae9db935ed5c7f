"""`evaluate --plots` for cross-modal runs: what the model did on a few test sources.

- Retrieval, per direction (`retrieval-<query>-to-<gallery>-<split>.png`): a row per query
  (its first distinct items), the query on the left and its five nearest items of the
  other side, each framed green where it is a hit (paired with the query in some row)
  and red where not.
- Captioning (`captions-<split>.png`): the first sources, each with its generated caption
  and its first reference below it.

Each modality's kind says what to draw of a value (`Kind.show`): an image, a video's
middle frame, an audio clip's log-mel spectrogram, a text as wrapped words.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from mmcli.reporting.plots import save_png

HIT, MISS = "tab:green", "tab:red"
CAPTIONS_PER_ROW = 4
CELL = 2.4  # inches of one picture (100 dpi)


def _cell(ax, content: Any, caption: str = "", frame: str | None = None) -> None:
    """One picture, spectrogram or text in `ax`, `caption` beneath, framed in `frame`."""
    ax.set_xticks([])
    ax.set_yticks([])
    if content is None:
        ax.text(0.5, 0.5, "(nothing to show)", ha="center", va="center", fontsize=8, transform=ax.transAxes)
    elif isinstance(content, str):
        ax.text(0.5, 0.5, textwrap.fill(content, 26), ha="center", va="center", fontsize=8, wrap=True,
                transform=ax.transAxes)
    elif content.ndim == 2:  # a spectrogram
        ax.imshow(content, aspect="auto", cmap="magma")
    else:
        ax.imshow(content)
    if caption:
        ax.set_xlabel(textwrap.fill(caption, 34), fontsize=7)
    for spine in ax.spines.values():
        spine.set_visible(frame is not None or isinstance(content, str))
        if frame is not None:
            spine.set_edgecolor(frame)
            spine.set_linewidth(3)


def _grid(nrows: int, ncols: int, height: float):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * CELL, nrows * height), squeeze=False)
    return fig, axes


def retrieval_grid(entry: dict[str, Any], table, path: Path, split: str) -> Path:
    """One direction of `Retrieval.showcase`: queries down, their nearest items across."""
    from mmcli.kinds import KINDS

    query, gallery = entry["query"], entry["gallery"]
    show_q, show_g = (KINDS[table.modalities[n].kind].show for n in (query, gallery))
    rows = entry["rows"]
    width = 1 + max((len(r["found"]) for r in rows), default=1)
    fig, axes = _grid(len(rows), width, CELL + 0.4)
    for r, shown in enumerate(rows):
        _cell(axes[r][0], show_q(table, query, shown["row"]), f"query: {table.ids[shown['row']]}")
        for c, (row, hit) in enumerate(shown["found"], start=1):
            _cell(axes[r][c], show_g(table, gallery, row), f"{c}. {table.ids[row]}", HIT if hit else MISS)
        for c in range(len(shown["found"]) + 1, width):
            axes[r][c].axis("off")
    fig.suptitle(f"{query} -> {gallery}, {split} split: the 5 nearest {gallery} items (green: a hit)", fontsize=10)
    save_png(fig, path)
    return path


def caption_grid(entry: dict[str, Any], table, path: Path, split: str) -> Path:
    """`Captioning.showcase`: each source with its generated caption and a reference."""
    from mmcli.kinds import KINDS

    source = entry["query"]
    show = KINDS[table.modalities[source].kind].show
    rows = entry["rows"]
    ncols = min(CAPTIONS_PER_ROW, max(1, len(rows)))
    nrows = -(-len(rows) // ncols)
    fig, axes = _grid(nrows, ncols, CELL + 1.0)
    for k, ax in enumerate(ax for line in axes for ax in line):
        if k >= len(rows):
            ax.axis("off")
            continue
        shown = rows[k]
        reference = shown["references"][0] if shown["references"] else ""
        _cell(ax, show(table, source, shown["row"]), f"{shown['generated']}\n(reference: {reference})")
    fig.suptitle(f"generated captions, {split} split (first {len(rows)} {source} sources)", fontsize=10)
    save_png(fig, path)
    return path


def draw(entries: list[dict[str, Any]], table, folder: Path, split: str) -> list[Path]:
    """Every entry of a task's showcase as a PNG in `folder`."""
    written = []
    for entry in entries:
        if "gallery" in entry:
            name = f"retrieval-{entry['query']}-to-{entry['gallery']}-{split}.png"
            written.append(retrieval_grid(entry, table, folder / name, split))
        else:
            written.append(caption_grid(entry, table, folder / f"captions-{split}.png", split))
    return written
