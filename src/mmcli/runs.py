"""The run folder: everything evaluate and predict need, and nothing absolute.

    config.yaml          the resolved config (data.manifest relative to the run folder)
    labels.json          the label names, in the order of the model's outputs
    tokenizer-<m>.json   the tokenizer of each text modality
    data.json            modality kinds and shapes, split sizes, the data's cache key
    splits.json          each split's row ids and fingerprints (mmcli.data.membership)
    provenance.json      command line, versions, timings
    best.safetensors     weights of the best epoch on validation (metadata: epoch, metric)
    last.safetensors     weights of the last epoch
    metrics.jsonl        one line per epoch
    eval-<split>.json    what `mmcli evaluate` measured
    .mmcli-files.jsonl   every file mmcli wrote here, with size and SHA-256: --overwrite replaces
                         the folder only when this vouches for every file in it (mmcli.ledger)
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import sys
import tempfile
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NoReturn

from mmcli import __version__, ledger
from mmcli.errors import UsageError, writing

WEIGHTS_FORMAT = "1"
LOG = logging.getLogger("mmcli")


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
    ledger.check_replace(path)  # in a run or comparison folder, a file mmcli did not write is never replaced
    raw = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = _named_first(path)
    try:
        with writing(path), os.fdopen(fd, "wb") as handle:
            handle.write(raw)
        open_up(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    ledger.record(path, raw)  # what mmcli wrote there, so that --overwrite may replace it later


def _named_first(path: Path) -> tuple[int, str]:
    """A new temporary twin of `path`, its name put in a staging folder's ledger before the
    file exists: a run killed between the two would otherwise leave a file that its ledger
    cannot account for, and that blocks removing the killed run's folder."""
    import secrets

    for _ in range(100):
        tmp = path.parent / f".{path.name}-{secrets.token_hex(4)}"
        ledger.intend(path, tmp)
        try:
            return os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600), str(tmp)
        except FileExistsError:
            continue
    raise FileExistsError(f"{path.parent}: no free temporary name for {path.name}")


def write_json(path: Path, value: Any) -> None:
    write_atomic(path, json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def read_json(path: Path, kind: type | None = None) -> Any:
    """A JSON file of a run folder; with `kind` (dict or list), what its top level must be."""
    if path.exists() and not path.is_file():  # a FIFO or a device would block or never end
        raise UsageError(f"{path}: not a regular file")
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{path.parent}: not a run folder ({path.name} is missing)") from None
    except (OSError, ValueError, RecursionError) as exc:
        raise UsageError(f"{path}: cannot read ({str(exc)[:200] or 'nested too deeply'})") from None
    if kind is not None and not isinstance(value, kind):
        wanted = "an object ({...})" if kind is dict else "a list ([...])"
        raise UsageError(f"{path}: damaged: holds {type(value).__name__ if value is not None else 'null'}, not {wanted}")
    return value


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """metrics.jsonl: one object per epoch, its epoch a number and its losses and
    validation metrics numbers (or null); [] when there is none."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    if not path.is_file():
        raise UsageError(f"{path}: not a regular file")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: cannot read ({exc})") from None
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            record = None
        numbers = isinstance(record, dict) and type(record.get("epoch")) is int and all(
            v is None or type(v) in (int, float) for k, v in record.items() if k.endswith("_loss") or k.startswith("val_"))
        if not numbers:
            raise UsageError(f"{path}, line {number}: damaged: not an epoch's record (a JSON object with its epoch and numbers)")
        records.append(record)
    return records


def resolve_out_dir(out: Path | None, variant: str, overwrite: bool) -> Path:
    """`out`, or runs/<variant>-<timestamp>; checked, never touched: a non-empty `out`
    needs `overwrite` and must be a run folder holding only files mmcli wrote; a run
    training into `out` right now is a refusal too."""
    if out is None:
        out = _fresh_name(Path("runs"), f"{variant.replace(':', '-')}-{datetime.now().strftime('%Y%m%d-%H%M%S')}")
    if out.is_symlink():  # publishing replaces the folder at `out`: the link would be replaced, not its folder
        raise UsageError(f"{out}: is a symbolic link; give the folder itself as --out")
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise UsageError(f"{out}: folder exists and is not empty; pass --overwrite to replace it")
        problem = replace_problem(out)
        if problem:
            raise UsageError(problem)
    if out.parent.is_dir():
        with out_lock(out):  # refused now, not after preprocessing; train() holds the lock until it publishes
            pass
    return out


def _fresh_name(parent: Path, stem: str) -> Path:
    """parent/stem, or parent/stem-2, -3 ...: a default run folder name that no folder, and no
    training still running (its lock or staging folder), has taken; two runs started in the
    same second get two folders."""
    for k in range(1, 10_000):
        out = parent / (stem if k == 1 else f"{stem}-{k}")
        taken = os.path.lexists(out) or os.path.lexists(parent / f".{out.name}.lock") \
            or any(parent.glob(f".{out.name}.partial-*"))
        if not taken:
            return out
    raise UsageError(f"{parent}: no free run folder name for {stem}; give one with --out")


def replace_problem(out: Path) -> str | None:
    """Why the folder `out` may not be replaced by a new run, or None: only a run folder
    whose ledger vouches for every file in it may go (mmcli.ledger)."""
    if out.is_symlink():  # its files are elsewhere: mmcli replaces folders, not what links point to
        return f"{out}: is a symbolic link; refusing to overwrite it (give the folder itself as --out)"
    head = ledger.header(out)
    if head is None:
        if is_run_dir(out):
            return (f"{out}: looks like a run folder but holds no {ledger.LEDGER} listing the files mmcli wrote "
                    "(an older mmcli made it, or not mmcli), so mmcli cannot tell its files from yours; refusing to "
                    "overwrite it (delete or move it yourself, or choose another --out)")
        return f"{out}: not a run folder; refusing to overwrite it (choose another --out)"
    if head.get("kind") != "run":
        return f"{out}: an mmcli {head.get('kind')} folder, not a run folder; refusing to overwrite it (choose another --out)"
    found = ledger.survey(out)
    if found.foreign or found.busy:
        return (f"{out}: holds {len(found.foreign + found.busy)} file(s) that mmcli did not write or that changed since "
                f"it wrote them ({found.names(found.foreign + found.busy)}); refusing to overwrite it (move them out "
                "of the folder, or choose another --out)")
    return None


def out_lock(final: Path):
    """Held from the start of a training to its publish (a lock file beside the run folder),
    so that a second `train --out` to the same folder is refused instead of replacing it."""
    return ledger.hold(final.parent / f".{final.name}.lock",
                       f"{final}: another mmcli is training into this run folder; wait for it to finish, or choose another --out")


def staging_dir(final: Path, overwrite: bool = False) -> Path:
    """A hidden sibling of the run folder to train into; published when training ends. Its
    ledger proves it mmcli's and says whether publishing may replace a run at `final`."""
    final.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=final.parent))
    open_up(work)
    ledger.start(work, "staging", overwrite=overwrite)
    ledger.intend(work / "metrics.jsonl", work / "tensorboard")  # the files training appends to, not write_atomic
    return work


def publish(work: Path, final: Path) -> Path:
    """Replace `final` by the finished `work` folder; the old run goes only now, and only
    the files its ledger vouches for. A folder that appeared at `final` meanwhile (without
    --overwrite), or a run that holds files mmcli did not write, is not replaced: the new run
    is saved beside it and the user told where (a UsageError)."""
    overwrite = bool((ledger.header(work) or {}).get("overwrite"))
    ledger.seal(work, "run")
    if not _occupied(final):
        _rename(work, final, f"{final}: another run was saved there while this one trained")
        return final
    problem = replace_problem(final) if overwrite else f"{final}: another run was saved there while this one trained"
    if problem:
        _set_aside(work, final, problem)
    old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
    os.replace(final, old / "run")
    _rename(work, final, f"{final}: another run was saved there while this one replaced the run now in {old / 'run'}")
    left = ledger.remove_written(old / "run")
    with contextlib.suppress(OSError):
        old.rmdir()
    if left.foreign or left.busy:
        LOG.warning("%s: kept %d file(s) that appeared in the replaced run while it was replaced: %s", old / "run",
                    len(left.foreign + left.busy), left.names(left.foreign + left.busy))
    return final


def _occupied(final: Path) -> bool:
    if not os.path.lexists(final):
        return False
    return final.is_symlink() or not final.is_dir() or any(final.iterdir())


def _rename(work: Path, final: Path, problem: str) -> None:
    try:
        os.rename(work, final)  # onto a folder that is not empty, this fails: nothing there is lost
    except OSError:
        _set_aside(work, final, problem)


def _set_aside(work: Path, final: Path, problem: str) -> NoReturn:
    """Keep the finished run under a new name beside `final`, and say so."""
    stem = f"{final.name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    for _ in range(1000):  # another process may take the free name first
        kept = _fresh_name(final.parent, stem)
        try:
            os.rename(work, kept)
            break
        except OSError:
            continue
    else:
        kept = work
    raise UsageError(f"{problem}; it was not replaced. This run finished and was saved in {kept} instead")


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


def read_weights(path: Path) -> tuple[dict, dict[str, str]]:
    """A weights file's tensors and metadata; an unreadable file is a UsageError naming it."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    if not path.is_file():
        raise UsageError(f"{path.parent}: run folder has no {path.name} (did training finish?)")
    try:
        state = load_file(str(path))
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except BaseException as exc:  # safetensors raises several types, and a Rust panic is a BaseException
        if not isinstance(exc, Exception) and type(exc).__name__ != "PanicException":
            raise
        raise UsageError(f"{path}: cannot read weights ({str(exc)[:200]})") from None
    return state, metadata


def load_weights(model, path: Path) -> dict[str, str]:
    state, metadata = read_weights(path)
    _check_weights(path, model, state, metadata)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise UsageError(f"{path}: weights do not fit the model in config.yaml (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return metadata


def _check_weights(path: Path, model, state: dict, metadata: dict[str, str]) -> None:
    """Each tensor must have its parameter's shape and hold finite numbers; the metadata
    must be what `save_weights` writes (a newer format is refused, not misread)."""
    import torch

    own = model.state_dict()
    for name, tensor in state.items():
        if name in own and tuple(tensor.shape) != tuple(own[name].shape):
            raise UsageError(f"{path}: damaged: '{name}' has shape {list(tensor.shape)}, the model in config.yaml and "
                             f"data.json needs {list(own[name].shape)}")
        want = own[name].dtype if name in own else tensor.dtype
        if tensor.dtype != want and not (tensor.is_floating_point() and want.is_floating_point):
            raise UsageError(f"{path}: damaged: '{name}' holds {tensor.dtype}, not {want}")
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise UsageError(f"{path}: damaged: '{name}' holds NaN or infinite values")
    version = metadata.get("format_version", WEIGHTS_FORMAT)
    if version != WEIGHTS_FORMAT:
        raise UsageError(f"{path}: weights format {version!r}, this mmcli reads format {WEIGHTS_FORMAT}")
    if not str(metadata.get("epoch", "0")).isdigit():
        raise UsageError(f"{path}: damaged: its metadata's epoch is {metadata.get('epoch')!r}, not a number")


def spec_dict(spec) -> dict[str, Any]:
    return asdict(spec)
