"""The `mmcli` command: Typer subcommands joined into one app.

Every command module imports only typer at its top; the core (and torch) is imported
inside the command functions, so `mmcli --help` stays fast.
"""

from __future__ import annotations

from typing import Optional

import typer
from typing_extensions import Annotated

from mmcli import __version__
from mmcli.cli import cache, compare, datasets, evaluate, export, index, inspect, listing, predict, preprocess, serve, train
from mmcli.cli.common import STATE

app = typer.Typer(
    name="mmcli",
    help="Unimodal, multimodal and cross-modal deep learning: one command per question.",
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mmcli {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    debug: Annotated[bool, typer.Option("--debug", help="Show the traceback of an error.")] = False,
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Also log what happens inside: cache hits and misses, model sizes, devices, each comparison run (stderr).")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only results, for every command: no progress or log lines.")] = False,
) -> None:
    """Unimodal, multimodal and cross-modal deep learning: one command per question.

    Results go to stdout (a table on a terminal, JSON or CSV when piped), progress and logs
    to stderr. Exit codes: 0 success, 1 a failed run, 2 bad input or usage, 130 interrupted.
    Documentation: docs/index.md; every command and option: docs/cli.md."""
    import os

    from mmcli.cli.common import set_quiet
    from mmcli.reporting.console import setup_logging

    STATE["debug"], STATE["quiet"] = debug, quiet
    if verbose:
        os.environ["MMCLI_VERBOSE"] = "1"
    set_quiet(quiet)
    setup_logging()


app.add_typer(datasets.app, name="datasets")
app.add_typer(cache.app, name="cache")
app.command("preprocess")(preprocess.preprocess)
app.command("train")(train.train)
app.command("evaluate")(evaluate.evaluate)
app.command("predict")(predict.predict)
app.command("export")(export.export)
app.command("compare")(compare.compare)
app.command("list")(listing.list_cmd)
app.command("inspect")(inspect.inspect)
app.command("serve")(serve.serve)
app.add_typer(index.app, name="index")


def main() -> None:
    app(prog_name="mmcli")
