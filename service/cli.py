"""The server's commands: serve, db, token, demo (`vitcube.cli` joins them with `worker`).

Each command imports what it needs lazily, so that importing this module (as `vitcube worker`
does on a GPU box, through `vitcube.cli`) imports neither FastAPI, SQLAlchemy nor BoTorch.
"""

from __future__ import annotations

import typer

db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)
token_app = typer.Typer(help="API tokens.", no_args_is_help=True)


def demo(
    trials: int = typer.Option(10, min=1, max=1000, help="Trials in the demo search."),
    workers: int = typer.Option(2, min=1, max=64, help="Local CPU workers that really train."),
    port: int = typer.Option(8000, min=0, max=65535, help="Dashboard port; 0 picks a free one."),
    exit_when_done: bool = typer.Option(
        False, "--exit-when-done", help="Exit once the search completes."
    ),
    dataset: str = typer.Option(
        "shapes", help="shapes (generated, where the architecture matters) or digits."
    ),
    epochs: int | None = typer.Option(
        None, min=1, max=1000, help="Training epochs per trial (default: 1 on shapes, 8 on digits)."
    ),
    seed: int = typer.Option(0, min=0, help="The search's seed (its Sobol points, trial seeds)."),
    resolution: int | None = typer.Option(
        None,
        min=32,
        max=1024,
        help="Baseline resolution R0 in pixels, a multiple of 16 (default: 48 on shapes, 64 on "
        "digits).",
    ),
    c: float = typer.Option(
        0.5, min=0.01, max=1.0, help="Budget as a fraction of the baseline's MACs."
    ),
    trainer: str = typer.Option(
        "real", help="real: really train; surrogate: the synthetic landscape (no training)."
    ),
    schedule: str = typer.Option(
        "auto",
        help="auto (the server's default: asha from 9 epochs, else full), full, or asha (rungs "
        "1, 3, 9, … epochs; needs --epochs 2 or more on shapes).",
    ),
) -> None:
    """Run the whole mission on this machine: server, a gp search on shapes, local workers."""
    from vitcube.service.demo import (
        DEMO_DATASETS,
        DEMO_SCHEDULES,
        DemoOptions,
        run_demo,
        search_body,
    )

    if trainer not in ("real", "surrogate"):
        raise typer.BadParameter("must be real or surrogate", param_hint="--trainer")
    if dataset not in DEMO_DATASETS:
        raise typer.BadParameter(
            f"must be one of {', '.join(DEMO_DATASETS)}", param_hint="--dataset"
        )
    if schedule not in DEMO_SCHEDULES:
        raise typer.BadParameter(
            f"must be one of {', '.join(DEMO_SCHEDULES)}", param_hint="--schedule"
        )
    options = DemoOptions(
        schedule=schedule,
        trials=trials,
        workers=workers,
        port=port,
        exit_when_done=exit_when_done,
        dataset=dataset,
        epochs=epochs,
        seed=seed,
        resolution=resolution,
        c=c,
        trainer=trainer,
    )
    try:
        search_body(options)  # a combination the demo cannot run is a usage error, not a crash
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--schedule") from None
    raise typer.Exit(run_demo(options))


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: could resolve anywhere


def serve(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8000, min=0, max=65535, help="Port to listen on."),
    workers: int = typer.Option(1, min=1, max=64, help="uvicorn worker processes."),
    log_level: str = typer.Option("info", help="uvicorn log level."),
) -> None:
    """Upgrade the database schema, then serve the API and dashboard with uvicorn.

    Settings come from VITCUBE_* variables (VITCUBE_DATABASE_URL, VITCUBE_ADMIN_TOKEN, …).
    Listening on a non-loopback address needs an admin token.
    """
    import uvicorn

    from vitcube.service import db
    from vitcube.service.settings import get_settings

    settings = get_settings()
    db.upgrade(settings.database_url)
    if not _is_loopback(host) and not (
        settings.admin_token is not None or _has_db_admin_token(settings.database_url)
    ):
        typer.echo(
            f"refusing to listen on {host} without an admin token: set VITCUBE_ADMIN_TOKEN "
            "(or run `vitcube token create --role admin`), or bind 127.0.0.1",
            err=True,
        )
        raise typer.Exit(2)
    if workers > 1:
        uvicorn.run(
            "vitcube.service.app:create_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level=log_level,
        )
        return
    from vitcube.service.app import create_app

    uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level)


def _has_db_admin_token(url: str) -> bool:
    from sqlalchemy import select

    from vitcube.service.db import Database
    from vitcube.service.tables import ApiToken

    database = Database(url)
    try:
        with database.session() as session:
            found = session.scalar(
                select(ApiToken.id).where(ApiToken.role == "admin", ApiToken.revoked_at.is_(None))
            )
        return found is not None
    finally:
        database.dispose()


@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head", help="Target revision.")) -> None:
    """Apply migrations up to REVISION (default head): the only way a schema is made."""
    from vitcube.service import db
    from vitcube.service.settings import get_settings

    url = get_settings().database_url
    db.upgrade(url, revision)
    typer.echo(f"database at revision {db.current_revision(url)}")


@db_app.command("downgrade")
def db_downgrade(revision: str = typer.Argument(..., help="Target revision, e.g. base.")) -> None:
    """Revert migrations down to REVISION."""
    from vitcube.service import db
    from vitcube.service.settings import get_settings

    url = get_settings().database_url
    db.downgrade(url, revision)
    typer.echo(f"database at revision {db.current_revision(url)}")


@db_app.command("current")
def db_current() -> None:
    """Print the database's current revision."""
    from vitcube.service import db
    from vitcube.service.settings import get_settings

    typer.echo(db.current_revision(get_settings().database_url) or "(empty database)")


@token_app.command("create")
def token_create(
    role: str = typer.Option(..., "--role", help="admin, worker or viewer."),
    name: str | None = typer.Option(None, help="A label, e.g. the worker box."),
) -> None:
    """Create a token and print it once; only its SHA-256 is stored."""
    from vitcube.service import db
    from vitcube.service.auth import GRANTS, create_token
    from vitcube.service.settings import get_settings

    if role not in GRANTS:
        typer.echo(f"--role must be one of {', '.join(sorted(GRANTS))}", err=True)
        raise typer.Exit(2)
    url = get_settings().database_url
    db.upgrade(url)
    database = db.Database(url)
    try:
        with database.session(write=True) as session:
            _, token = create_token(session, role, name)  # type: ignore[arg-type]
    finally:
        database.dispose()
    typer.echo(token)
