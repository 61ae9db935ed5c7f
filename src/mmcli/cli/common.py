"""Shared pieces of the commands: error handling, config resolution, option types.

This module must stay cheap to import: no torch here, nor in any command module's top.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any, Callable, Optional

import typer
from typing_extensions import Annotated

STATE = {"debug": False, "quiet": False}

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML config with sections data, model, train, eval.", show_default=False)]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="Override one config value: section.key=value (repeatable); the value is read as YAML.", show_default=False)]
CacheDirOpt = Annotated[Optional[Path], typer.Option("--cache-dir", help="Folder for the preprocessing cache (default: $MMCLI_CACHE_DIR or the user cache folder).", show_default=False)]
WorkersOpt = Annotated[int, typer.Option("--workers", min=1, help="Processes that decode files while preprocessing (each decodes 64 rows at a time).")]
EncoderOpt = Annotated[Optional[list[str]], typer.Option("--encoder", "-e", help="Encoder of a modality (or of every modality of a kind): MODALITY=NAME, e.g. image=resnet18 (repeatable; see mmcli list encoders; options with --set model.encoder_options.MODALITY.KEY=VALUE, or for an encoder wherever it is used, model.encoder_options.KIND.ENCODER.KEY=VALUE).", show_default=False)]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Print only results: no progress or log lines.")]


def fail(message: str, code: int) -> None:
    from mmcli.reporting.console import err

    err().print(f"[bold red]error:[/bold red] {message}", markup=True, highlight=False) if err().is_terminal else \
        print(f"error: {message}", file=sys.stderr)
    raise typer.Exit(code)


def handles_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn mmcli's errors into a message and an exit code; --debug keeps the traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from mmcli.errors import MmcliError

        try:
            return fn(*args, **kwargs)
        except MmcliError as exc:
            if STATE["debug"]:
                raise
            fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            if STATE["debug"]:
                raise
            fail("interrupted; finished files are kept, unfinished ones were not written", 130)
        except BrokenPipeError:
            # the reader went away (`mmcli predict ... | head`): stop quietly, as tools killed by SIGPIPE do
            import os

            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(141)
        except OSError as exc:
            if STATE["debug"]:
                raise
            where = f"{exc.filename}: " if exc.filename else ""
            fail(f"{where}{exc.strerror or exc}", 2)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except Exception as exc:  # a bug, not a user error: say so, keep the traceback for --debug
            if STATE["debug"]:
                raise
            fail(f"internal error: {type(exc).__name__}: {exc}. Rerun with --debug for the traceback, and please report it.", 1)

    return wrapper


def set_quiet(quiet: bool) -> None:
    from mmcli.reporting import console

    console.QUIET["on"] = quiet or STATE["quiet"]  # `mmcli --quiet CMD` holds for every command


def resolve_config(config: Optional[Path], flags: dict[str, Any], sets: Optional[list[str]], base: dict | None = None):
    """defaults < $MMCLI_CONFIG (your own defaults, e.g. train.device) < base < --config < flags < --set."""
    import os

    from mmcli.config import load_yaml, merge, resolve
    from mmcli.errors import UsageError

    own = os.environ.get("MMCLI_CONFIG")
    if own:
        if not Path(own).is_file():
            raise UsageError(f"MMCLI_CONFIG={own}: no such file (it names a YAML config of your own defaults)")
        layered = load_yaml(Path(own))
        merge(layered, base or {})
        base = layered
    resolved = resolve(config, flags, sets or [], base)
    if resolved.model.encoders or resolved.model.encoder_options:  # pretrained backbones set the image size
        from mmcli.models import adapt_data
        from mmcli.pipeline import modality_kinds

        resolved = adapt_data(resolved, modality_kinds(resolved))
    return resolved


def encoder_flags(values: Optional[list[str]]) -> dict[str, str]:
    """--encoder image=resnet18 -> {"model.encoders.image": "resnet18"}."""
    from mmcli.errors import UsageError

    flags = {}
    for value in values or []:
        modality, sep, name = value.partition("=")
        if not sep or not modality.strip() or not name.strip() or "." in modality:
            raise UsageError(f"--encoder expects MODALITY=NAME (e.g. image=resnet18), got '{value}'")
        flags[f"model.encoders.{modality.strip()}"] = name.strip()
    return flags


def split_list(value: Optional[str]) -> Optional[list[str]]:
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    return items or None


def cache_arg(cache_dir: Optional[Path]) -> Optional[str]:
    return str(cache_dir) if cache_dir is not None else None
