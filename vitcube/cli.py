"""The `vitcube` command: the server's commands (serve, db, token, demo), `worker`, `export`, and
the client's (`search …`, `login`).

The two sides are joined here, one level above both, so that service/ never imports workers/
and workers/ never imports service/. Every command imports what it needs lazily: `vitcube
worker` on a GPU box imports neither the server (FastAPI, SQLAlchemy) nor BoTorch.
"""

from __future__ import annotations

import typer

from vitcube.client.cli import login, search_app
from vitcube.export import export_command
from vitcube.service import cli as service_cli
from vitcube.trial_cli import trial_app
from vitcube.workers.cli import worker_command

app = typer.Typer(
    name="vitcube",
    help="Bayesian-optimisation search for the best MobileViT under a MAC budget.",
    no_args_is_help=True,
    add_completion=False,
)
app.command("serve")(service_cli.serve)
app.command("demo")(service_cli.demo)
app.add_typer(service_cli.db_app, name="db")
app.add_typer(service_cli.token_app, name="token")
app.command("worker")(worker_command)
app.command("export")(export_command)
app.add_typer(search_app, name="search")
app.command("login")(login)
app.add_typer(trial_app, name="trial")
