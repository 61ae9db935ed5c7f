"""`mmcli cache`: show and free the preprocessing cache."""

from __future__ import annotations

import typer

from mmcli.cli.common import CacheDirOpt, handles_errors

app = typer.Typer(help="The preprocessing cache: list entries, free the space.", no_args_is_help=True)


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


@app.command("list")
@handles_errors
def list_cache(cache_dir: CacheDirOpt = None) -> None:
    """List the preprocessed data sets in the cache, with their size, and the stored
    features of frozen encoders."""
    from mmcli.data.cache import cache_root, feature_entries, list_entries
    from mmcli.reporting.console import log
    from mmcli.reporting.tables import show_table

    root = cache_root(cache_dir)
    entries = list_entries(root)
    log(f"cache folder: {root}")
    show_table("cache", ["key", "source", "examples", "size"],
               [(e.path.name, e.source, e.examples, _size(e.size_bytes)) for e in entries])
    count, size = feature_entries(root)
    if count:
        log(f"frozen encoders' features: {count} entries, {_size(size)} in {root / 'features'}")


@app.command("clean")
@handles_errors
def clean_cache(cache_dir: CacheDirOpt = None) -> None:
    """Delete every preprocessed entry and stored features (the built-in data sets are kept).
    Only what mmcli wrote goes: other files in the cache folders are kept and named."""
    from mmcli.data.cache import cache_root, clean
    from mmcli.reporting.console import log

    root = cache_root(cache_dir)
    done = clean(root)
    log(f"removed {done.entries} cache entries, {_size(done.freed)}")
    if done.busy:
        log(f"left {len(done.busy)} entries that a running mmcli is preprocessing: {_names(root, done.busy)}")
    if done.kept:
        log(f"kept {len(done.kept)} files or folders that mmcli did not write: {_names(root, done.kept)}")


def _names(root, paths, most: int = 5) -> str:
    shown = [str(p.relative_to(root)) for p in paths[:most]]
    return ", ".join(shown) + (f" and {len(paths) - most} more" if len(paths) > most else "")
