"""`vitcube.cli`: one command joining the server's commands and the worker's, importing neither."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from tests.imports import modules_loaded_by
from vitcube.cli import app


def test_every_command_is_listed() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0, result.output
    for command in ("serve", "demo", "worker", "db", "token", "export"):
        assert command in result.output


def test_the_command_line_imports_neither_the_server_nor_torch() -> None:
    # `vitcube worker` on a GPU box loads this module first: it must stay light.
    heavy = ("fastapi", "sqlalchemy", "torch", "botorch", "vitcube.service.app")
    assert modules_loaded_by("import vitcube.cli", heavy) == []


def test_python_dash_m_vitcube_is_the_command() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "vitcube", "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "worker" in done.stdout and "serve" in done.stdout
