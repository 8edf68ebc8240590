"""The `vitcube` command line: serve, db, token, worker, demo.

This module only wires commands together; each command imports what it needs lazily so that
`vitcube worker` on a GPU box never imports the server (FastAPI, SQLAlchemy) or BoTorch.
"""

from __future__ import annotations

import typer

from workers.cli import worker_command

app = typer.Typer(
    name="vitcube",
    help="Bayesian-optimisation search for the best MobileViT under a MAC budget.",
    no_args_is_help=True,
    add_completion=False,
)
db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)
token_app = typer.Typer(help="API tokens.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(token_app, name="token")
app.command("worker")(worker_command)


@app.command()
def demo(
    trials: int = typer.Option(12, min=1, help="Trials in the demo search."),
    workers: int = typer.Option(2, min=1, help="Local CPU workers that really train."),
    port: int = typer.Option(8000, min=0, max=65535, help="Dashboard port; 0 picks a free one."),
    exit_when_done: bool = typer.Option(False, help="Exit once the search completes."),
) -> None:
    """Run the whole mission on this machine: server, a gp search on digits, local workers."""
    from service.demo import run_demo

    raise typer.Exit(
        run_demo(trials=trials, workers=workers, port=port, exit_when_done=exit_when_done)
    )
