"""The run folder: everything evaluate and predict need, and nothing absolute.

    config.yaml          the resolved config (data.manifest relative to the run folder)
    labels.json          the label names, in the order of the model's outputs
    tokenizer-<m>.json   the tokenizer of each text modality
    data.json            modality kinds and shapes, split sizes, the data's cache key
    provenance.json      command line, versions, timings
    best.safetensors     weights of the best epoch on validation (metadata: epoch, metric)
    last.safetensors     weights of the last epoch
    metrics.jsonl        one line per epoch
    eval-<split>.json    what `mmcli evaluate` measured
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import sys
import tempfile
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mmcli import __version__
from mmcli.errors import UsageError

WEIGHTS_FORMAT = "1"


@functools.cache
def _umask() -> int:
    # os.umask can only be read by setting it: do that once, not around every write
    mask = os.umask(0)
    os.umask(mask)
    return mask


def open_up(path: Path) -> None:
    """mkstemp/mkdtemp make owner-only entries; give them the permissions of a normal file or
    folder, so a shared run folder or cache can be read by others as the umask allows."""
    mode = 0o777 if path.is_dir() else 0o666
    os.chmod(path, mode & ~_umask())


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write to a temporary file in the same folder, then `os.replace` it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode("utf-8") if isinstance(data, str) else data)
        open_up(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: Path, value: Any) -> None:
    write_atomic(path, json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{path.parent}: not a run folder ({path.name} is missing)") from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: cannot read ({exc})") from None


def resolve_out_dir(out: Path | None, variant: str, overwrite: bool) -> Path:
    """`out`, or runs/<variant>-<timestamp>; checked, never touched: a non-empty `out`
    needs `overwrite` and must be a run folder."""
    if out is None:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        out = Path("runs") / f"{variant.replace(':', '-')}-{stamp}"
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise UsageError(f"{out}: folder exists and is not empty; pass --overwrite to replace it")
        if not is_run_dir(out):
            raise UsageError(f"{out}: not a run folder; refusing to overwrite it (choose another --out)")
    return out


def staging_dir(final: Path) -> Path:
    """A hidden sibling of the run folder to train into; published when training ends."""
    final.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=final.parent))
    open_up(work)
    return work


def publish(work: Path, final: Path) -> None:
    """Replace `final` by the finished `work` folder; the old run goes only now."""
    if final.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
        os.replace(final, old / "run")
        os.replace(work, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(work, final)


def is_run_dir(path: Path) -> bool:
    return (path / "config.yaml").is_file() and (path / "data.json").is_file()


def check_run_dir(path: Path) -> Path:
    if not path.is_dir():
        raise UsageError(f"{path}: no such run folder")
    if not is_run_dir(path):
        raise UsageError(f"{path}: not a run folder (no config.yaml and data.json)")
    return path


def provenance(argv: list[str] | None = None) -> dict[str, Any]:
    import platform

    import torch

    return {
        "command": " ".join(argv if argv is not None else sys.argv),
        "mmcli": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def save_weights(model, path: Path, meta: dict[str, Any]) -> None:
    from safetensors.torch import save

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    metadata = {"format_version": WEIGHTS_FORMAT, "mmcli": __version__}
    metadata.update({k: str(v) for k, v in meta.items()})
    write_atomic(path, save(state, metadata=metadata))


def load_weights(model, path: Path) -> dict[str, str]:
    from safetensors import safe_open
    from safetensors.torch import load_file

    if not path.is_file():
        raise UsageError(f"{path.parent}: run folder has no {path.name} (did training finish?)")
    try:
        state = load_file(str(path))
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except Exception as exc:  # safetensors raises several types for a broken file
        raise UsageError(f"{path}: cannot read weights ({exc})") from None
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise UsageError(f"{path}: weights do not fit the model in config.yaml (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return metadata


def spec_dict(spec) -> dict[str, Any]:
    return asdict(spec)
