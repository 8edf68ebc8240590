"""`vitcube.cli`: one command joining the server's commands and the worker's, importing neither."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from vitcube.cli import app


def test_every_command_is_listed() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0, result.output
    for command in ("serve", "demo", "worker", "db", "token"):
        assert command in result.output


def test_the_command_line_imports_neither_the_server_nor_torch() -> None:
    # `vitcube worker` on a GPU box loads this module first: it must stay light.
    probe = (
        "import sys, vitcube.cli\n"
        "heavy = ('fastapi', 'sqlalchemy', 'torch', 'botorch', 'vitcube.service.app')\n"
        "leaked = sorted(m for m in heavy if m in sys.modules)\n"
        "assert not leaked, leaked\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_python_dash_m_vitcube_is_the_command() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "vitcube", "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "worker" in done.stdout and "serve" in done.stdout
