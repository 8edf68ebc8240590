"""`vitcube worker`: lease trials from a vitcube server, train them, report results.

Imports nothing from service/; heavy imports (torch, the trainer) happen inside the command.
"""

from __future__ import annotations

import typer


def worker_command(
    server: str = typer.Option(..., help="vitcube server URL, e.g. http://127.0.0.1:8000"),
    token: str = typer.Option(..., envvar="VITCUBE_WORKER_TOKEN", help="A worker token."),
) -> None:
    """Lease trials, train them, report back (stub until the workers issue lands)."""
    raise typer.Exit(2)
