"""The installed ``prediff`` command: every command is registered on the real parser."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from prediff import cli

COMMANDS = ("data", "train", "demo", "forecast", "evaluate", "app")


def _help_commands() -> list[list[str]]:
    """``prediff --help`` as the console script installed next to this Python, and as ``python -m``."""
    commands = [[sys.executable, "-m", "prediff", "--help"]]
    script = Path(sys.executable).with_name("prediff")
    if script.exists():
        commands.append([str(script), "--help"])
    return commands


@pytest.mark.parametrize("command", _help_commands(), ids=lambda c: Path(c[0]).name)
def test_installed_help_lists_every_command(command):
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONWARNINGS": "ignore"}
    )
    assert done.returncode == 0, done.stderr
    usage = done.stdout.splitlines()[0]
    assert usage.startswith("usage: prediff") and "{" + ",".join(COMMANDS) + "}" in usage, done.stdout
    for name in COMMANDS:
        assert f"\n    {name} " in done.stdout, name


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_has_help(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([name, "--help"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: prediff {name}")
