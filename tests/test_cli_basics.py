"""The command line itself: fast help without torch, `python -m mmcli`, help on every option."""

from __future__ import annotations

import subprocess
import sys

import click
import typer.main

from mmcli.cli import app


def test_help_does_not_import_torch():
    code = ("import sys; from mmcli.cli import main; sys.argv=['mmcli','--help']\n"
            "try:\n main()\nexcept SystemExit:\n pass\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "Usage: mmcli" in result.stdout
    assert result.stderr.strip().endswith("NO-TORCH")


def test_python_dash_m_works():
    result = subprocess.run([sys.executable, "-m", "mmcli", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "compare" in result.stdout
    version = subprocess.run([sys.executable, "-m", "mmcli", "--version"], capture_output=True, text=True, timeout=60)
    assert version.stdout.startswith("mmcli ")


def _commands(group: click.Command, prefix: str = ""):
    yield prefix or "mmcli", group
    if isinstance(group, click.Group):
        for name, cmd in group.commands.items():
            yield from _commands(cmd, f"{prefix} {name}".strip())


def test_every_command_and_option_has_help():
    root = typer.main.get_command(app)
    missing = []
    for name, cmd in _commands(root):
        if not (cmd.help or cmd.short_help):
            missing.append(f"{name}: command")
        for param in cmd.params:
            if param.name in ("help", "install_completion", "show_completion"):
                continue
            if not getattr(param, "help", None):
                missing.append(f"{name}: {param.name}")
    assert not missing, missing


def test_usage_error_exit_code_2():
    result = subprocess.run([sys.executable, "-m", "mmcli", "train", "--epochs", "zero"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
