"""Conventions of the ecosystem (issue 11): the generated CLI reference and its staleness
check, evaluate --plots, shell completion, --verbose / --quiet, and MMCLI_CONFIG."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def test_cli_reference_is_up_to_date():
    from mmcli.cli.reference import render

    assert (ROOT / "docs" / "cli.md").read_text(encoding="utf-8") == render(), \
        "docs/cli.md is stale: run `make docs` (python -m mmcli.cli.reference > docs/cli.md)"


def test_cli_reference_changes_when_an_option_changes(monkeypatch):
    """The staleness check has teeth: a new option, or new help text, changes the reference."""
    import typer

    from mmcli.cli import app, reference

    before = reference.render()
    info = next(c for c in app.registered_commands if c.name == "inspect")
    original = info.callback

    def inspect(run: Path, extra: bool = typer.Option(False, "--extra-option", help="A new option.")) -> None:
        original(run)

    monkeypatch.setattr(info, "callback", inspect)
    after = reference.render()
    assert after != before and "--extra-option" in after and "--extra-option" not in before


def test_every_option_has_help_text():
    import click
    import typer

    from mmcli.cli import app

    missing = []

    def walk(command: click.Command, path: str) -> None:
        for param in command.params:
            if isinstance(param, click.Option) and not param.help and param.name not in ("help",):
                missing.append(f"{path} {param.opts[0]}")
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, f"{path} {name}")

    walk(typer.main.get_command(app), "mmcli")
    assert missing == []


def run_mmcli(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mmcli", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=cwd, timeout=600)


def test_shell_completion_completes_commands_and_subcommands():
    env = {"_MMCLI_COMPLETE": "complete_bash", "COMP_WORDS": "mmcli datasets get avm", "COMP_CWORD": "3"}
    result = subprocess.run([str(Path(sys.executable).parent / "mmcli")], capture_output=True, text=True,
                            env={**os.environ, **env}, timeout=60)
    assert result.stdout.split() == ["avmnist"]
    env.update(COMP_WORDS="mmcli ev", COMP_CWORD="1")
    result = subprocess.run([str(Path(sys.executable).parent / "mmcli")], capture_output=True, text=True,
                            env={**os.environ, **env}, timeout=60)
    assert result.stdout.split() == ["evaluate"]


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> Path:
    from typer.testing import CliRunner

    from mmcli.cli import app

    folder = tmp_path_factory.mktemp("ux")
    runner = CliRunner()
    assert runner.invoke(app, ["datasets", "make", "toy", str(folder / "toy"), "--n", "120", "--quiet"]).exit_code == 0
    result = runner.invoke(app, ["train", str(folder / "toy"), "--epochs", "3", "--out", str(folder / "run"), "--quiet"])
    assert result.exit_code == 0, result.output
    return folder / "run"


def test_evaluate_plots_writes_pngs_of_the_stated_size(cli, small_run):
    from mmcli.reporting.plots import CONFUSION_SIZE, CURVES_SIZE

    result = cli("evaluate", small_run, "--plots", "--json")
    assert result.exit_code == 0, result.output
    with Image.open(small_run / "curves.png") as im:
        assert im.format == "PNG" and im.size == CURVES_SIZE == (1000, 400)
        assert len(np.unique(np.asarray(im.convert("L")))) > 10  # lines and text, not a blank canvas
    with Image.open(small_run / "confusion-test.png") as im:
        assert im.format == "PNG" and im.size == CONFUSION_SIZE == (800, 800)
    result = cli("evaluate", small_run, "--plots", "--split", "val", "--json")
    assert result.exit_code == 0 and (small_run / "confusion-val.png").is_file()
    assert cli("evaluate", small_run, "--plots", "--robustness").exit_code == 2


def test_verbose_logs_the_inside_and_quiet_silences_everything(small_run, tmp_path):
    toy = small_run.parent / "toy"
    result = run_mmcli("--verbose", "train", toy, "--epochs", "1", "--out", tmp_path / "v")
    assert result.returncode == 0, result.stderr
    assert "cache hit" in result.stderr and "parameters" in result.stderr and "threads" in result.stderr
    assert json.loads(result.stdout)["run"]  # results still on stdout, logs on stderr
    result = run_mmcli("--quiet", "train", toy, "--epochs", "1", "--out", tmp_path / "q")
    assert result.returncode == 0 and result.stderr == ""
    result = run_mmcli("train", toy, "--epochs", "1", "--out", tmp_path / "n")
    assert "epoch 1" in result.stderr and "cache hit" not in result.stderr


def test_mmcli_config_holds_your_defaults_beneath_flags(small_run, tmp_path):
    toy = small_run.parent / "toy"
    own = tmp_path / "mine.yaml"
    own.write_text("train:\n  epochs: 2\n  lr: 0.001\nmodel:\n  fusion: sum\n")
    result = run_mmcli("train", toy, "--out", tmp_path / "r", "--lr", "0.002", "--quiet", env={"MMCLI_CONFIG": str(own)})
    assert result.returncode == 0, result.stderr
    config = (tmp_path / "r" / "config.yaml").read_text()
    assert "epochs: 2" in config and "fusion: sum" in config and "lr: 0.002" in config
    result = run_mmcli("train", toy, "--quiet", env={"MMCLI_CONFIG": str(tmp_path / "absent.yaml")})
    assert result.returncode == 2 and "MMCLI_CONFIG" in result.stderr


def test_a_closed_pipe_stops_quietly(small_run):
    # `true` exits at once, long before mmcli (which imports torch first) writes its first line
    manifest = small_run.parent / "toy" / "manifest.csv"
    mmcli = Path(sys.executable).parent / "mmcli"
    result = subprocess.run(["bash", "-c", f"'{mmcli}' predict '{small_run}' '{manifest}' | true; echo \"status=${{PIPESTATUS[0]}}\""],
                            capture_output=True, text=True, timeout=300)
    assert result.stdout.strip() == "status=141"
    assert result.stderr == ""
