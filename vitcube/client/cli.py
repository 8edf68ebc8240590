"""`vitcube search …` and `vitcube login`: a vitcube server from the terminal, over its API.

Every command is a few calls of `vitcube.client.Client`. The server and token come from
`--server`/`--token`, else `VITCUBE_SERVER`/`VITCUBE_TOKEN`, else the profile file that
`vitcube login` writes (client.profiles). Exit codes: 0 done, 1 the server refused (its own
message is printed, never a traceback) or could not be reached, 2 usage (a bad flag, a file
that cannot be read or parsed). Imports typer, rich, yaml and vitcube.client only.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn

import typer
from rich.console import Console
from rich.live import Live

from vitcube.client import views
from vitcube.client.api import Client
from vitcube.client.errors import AuthError, ClientError, ServerRefused, ServerUnavailable
from vitcube.client.profiles import ProfileError, resolve, save_profile
from vitcube.contract import FACTORS, TRIAL_STATES, MetricSpec, SearchPublic, TrialPublic

EXIT_REFUSED = 1
EXIT_USAGE = 2
FINAL_STATES = ("completed", "stopped", "failed")
RETRY_FOR_S = 10.0  # a person at a terminal: say the server is down soon, saying each retry

search_app = typer.Typer(
    name="search",
    help="Create, follow, read and stop searches on a vitcube server (over its REST API).",
    no_args_is_help=True,
    add_completion=False,
)

ServerOpt = Annotated[
    str | None,
    typer.Option(
        "--server",
        envvar="VITCUBE_SERVER",
        help="The server's URL [default: the profile's, else http://127.0.0.1:8000].",
        show_default=False,
    ),
]
TokenOpt = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="VITCUBE_TOKEN",
        help="An API token [default: the profile's, for the profile's server].",
        show_default=False,
    ),
]
ProfileOpt = Annotated[
    str | None,
    typer.Option(
        "--profile",
        envvar="VITCUBE_PROFILE",
        help="The profile of `vitcube login` to use [default: default].",
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the server's answer as JSON.")]
SearchIdArg = Annotated[int, typer.Argument(help="The search's id (vitcube search list).")]


def _out() -> Console:
    # Piped (into a file, less, grep): wide enough for the trials table, not rich's 80 columns.
    return Console(soft_wrap=False, width=None if sys.stdout.isatty() else 132)


def _err() -> Console:
    return Console(stderr=True, soft_wrap=True)


def _fail(message: str, code: int = EXIT_REFUSED) -> NoReturn:
    _err().print(f"[bold red]error:[/] {message}", highlight=False, markup=True)
    raise typer.Exit(code)


@contextmanager
def _client(server: str | None, token: str | None, profile: str | None) -> Iterator[Client]:
    """A client for the resolved connection; every client error becomes a one-line message
    and exit code 1 (the server refused or is unreachable)."""
    try:
        connection = resolve(server, token, profile)
    except ProfileError as error:
        _fail(str(error), EXIT_USAGE)
    try:
        client = Client(
            connection.server,
            connection.token,
            retry_for_s=RETRY_FOR_S,
            log=lambda message: _err().print(f"[dim]{message}[/]", highlight=False),
        )
    except ValueError as error:
        _fail(f"--server: {error}", EXIT_USAGE)
    try:
        yield client
    except AuthError as error:
        hint = "" if connection.token else " (no token was sent: pass --token or run vitcube login)"
        _fail(f"{error.detail}{hint}")
    except ServerRefused as error:
        _fail(error.detail)
    except ServerUnavailable as error:
        _fail(f"{error} (is `vitcube serve` running at {connection.server}?)")
    except ClientError as error:
        _fail(str(error))
    finally:
        client.close()


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def load_body(path: Path) -> dict[str, Any]:
    """A create body from a .yaml/.yml or .json file (exit 2 naming the problem if it is not
    one)."""
    try:
        text = path.read_text()
    except OSError as error:
        _fail(f"cannot read {path}: {error.strerror or error}", EXIT_USAGE)
    if path.suffix.lower() == ".json":
        try:
            body = json.loads(text)
        except json.JSONDecodeError as error:
            _fail(f"{path} is not valid JSON: {error}", EXIT_USAGE)
    else:
        import yaml

        try:
            body = yaml.safe_load(text)
        except yaml.YAMLError as error:
            _fail(f"{path} is not valid YAML: {error}", EXIT_USAGE)
    if not isinstance(body, dict):
        _fail(
            f"{path} must hold one mapping (the body of POST /api/searches: name, base, "
            f"dataset, budget, …), not {type(body).__name__}",
            EXIT_USAGE,
        )
    return body


@search_app.command("create")
def create(
    file: Annotated[
        Path, typer.Argument(help="The search as YAML or JSON: the body of POST /api/searches.")
    ],
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Validate on the server and print m0, the budget in MACs, the reference "
            "networks and the smallest reachable MACs; create nothing.",
        ),
    ] = False,
    as_json: JsonOpt = False,
    server: ServerOpt = None,
    token: TokenOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """Create a search from FILE (or, with --dry-run, only check it)."""
    body = load_body(file)
    with _client(server, token, profile) as client:
        if dry_run:
            plan = client.validate_search(body)
            if as_json:
                _print_json(plan.model_dump(mode="json"))
                return
            out = _out()
            out.print(f"[bold green]valid[/]: {file} would create this search (nothing created)")
            out.print(views.plan_view(plan))
            return
        search = client.create_search(body)
    if as_json:
        _print_json(search.model_dump(mode="json"))
        return
    out = _out()
    out.print(
        f"[bold green]created[/] search {search.id} {search.name!r}: "
        f"{views.baseline(search.base)}, {views.budget(search)}"
    )
    out.print(f"follow it:  vitcube search watch {search.id}")


@search_app.command("list")
def list_searches(
    as_json: JsonOpt = False,
    server: ServerOpt = None,
    token: TokenOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """The server's searches, newest first."""
    from rich.table import Table

    with _client(server, token, profile) as client:
        searches = client.list_searches()
    if as_json:
        _print_json([s.model_dump(mode="json", exclude={"best"}) for s in searches])
        return
    if not searches:
        _out().print("no searches yet: vitcube search create FILE.yaml")
        return
    table = Table(box=None, header_style="bold")
    labels = {views.metric_label(s.metric) for s in searches}
    best = f"best {labels.pop()}" if len(labels) == 1 else "best"
    for column in ("id", "name", "state", "baseline", "budget", "completed", best):
        table.add_column(column, justify="right" if column in ("id", "completed") else "left")
    for search in searches:
        table.add_row(
            str(search.id),
            search.name,
            views.Text(search.state, style=views.STATE_STYLE.get(search.state, "")),
            views.baseline(search.base),
            f"≤ {views.macs(search.max_macs)}MACs",
            f"{search.counts.completed}/{search.max_trials}",
            _best_value(search),
        )
    _out().print(table)


@search_app.command("show")
def show(
    search_id: SearchIdArg,
    as_json: JsonOpt = False,
    server: ServerOpt = None,
    token: TokenOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """A search: state, trials by state, compute spent, the Pareto front, the best network."""
    with _client(server, token, profile) as client:
        search = client.get_search(search_id)
        front = client.pareto(search_id)
    if as_json:
        _print_json(
            {
                **search.model_dump(mode="json"),
                "pareto": [t.model_dump(mode="json", exclude={"curve"}) for t in front],
            }
        )
        return
    _out().print(views.search_view(search, front))


TRIAL_COLUMNS = (
    "id", "kind", "reference", "state", *FACTORS, "resolution", "macs", "params", "top1", "top5",
    "latency_ms", "epochs_trained", "attempts", "worker", "surrogate", "error",
)  # fmt: skip


def _best_value(search: SearchPublic) -> str:
    """The best trial's value of the search's metric, named unless it is top-1."""
    if search.best is None:
        return views.metric_value(search.metric, None)
    shown = views.metric_value(search.metric, search.best.value)
    label = views.metric_label(search.metric)
    return shown if label == "top-1" else f"{shown} {label}"


def _metric_column(metric: MetricSpec) -> str:
    """The CSV column of the search's metric: `top1` for val_top1 (as always), else its name."""
    return "top1" if views.metric_label(metric) == "top-1" else metric.name


def _row(trial: TrialPublic, metric: MetricSpec) -> dict[str, Any]:
    data = trial.model_dump(mode="json")
    row = {column: data.get(column) for column in TRIAL_COLUMNS}
    row.update({f: trial.effective_factors.get(f) for f in FACTORS})
    del row["top1"]
    return {**row, _metric_column(metric): trial.value}


@search_app.command("trials")
def trials(
    search_id: SearchIdArg,
    state: Annotated[
        list[str] | None,
        typer.Option(
            "--state",
            help=f"Only trials in this state (repeat for several): {', '.join(TRIAL_STATES)}.",
            show_default=False,
        ),
    ] = None,
    output: Annotated[
        Literal["table", "csv", "json"],
        typer.Option("--format", help="table, csv (one row per trial) or json (full trials)."),
    ] = "table",
    server: ServerOpt = None,
    token: TokenOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """A search's trials (r, d_i, d_m, w are the effective factors: what was built)."""
    unknown = sorted(set(state or ()) - set(TRIAL_STATES))
    if unknown:
        _fail(
            f"--state {', '.join(unknown)} is not a trial state; choose from "
            f"{', '.join(TRIAL_STATES)}",
            EXIT_USAGE,
        )
    with _client(server, token, profile) as client:
        metric = client.get_search(search_id).metric
        found = client.trials(search_id, states=state or None)
    if output == "json":
        _print_json([t.model_dump(mode="json") for t in found])
    elif output == "csv":
        column = _metric_column(metric)
        fields = [column if c == "top1" else c for c in TRIAL_COLUMNS]
        writer = csv.DictWriter(sys.stdout, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        for trial in found:
            writer.writerow(_row(trial, metric))
    else:
        title = f"{len(found)} trials of search {search_id}"
        _out().print(views.trials_table(found, title=title, curve_epochs=True, metric=metric))


@search_app.command("watch")
def watch(
    search_id: SearchIdArg,
    interval: Annotated[
        float, typer.Option("--interval", min=0.2, max=3600, help="Seconds between refreshes.")
    ] = 2.0,
    server: ServerOpt = None,
    token: TokenOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """Follow a search live: its front, running trials and failures, until it ends or Ctrl-C.

    Exits 0 when the search completes or on Ctrl-C, 1 when it ends stopped or failed."""
    out = _out()
    with _client(server, token, profile) as client:
        search = client.get_search(search_id)  # an unknown id fails here, before the view
        frame = _watch_data(client, search_id)
        try:
            with Live(console=out, auto_refresh=False) as live:
                while True:
                    search = frame[0]
                    live.update(views.watch_view(*frame), refresh=True)
                    if search.state in FINAL_STATES:
                        break
                    time.sleep(interval)
                    try:
                        frame = _watch_data(client, search_id)
                    except ServerUnavailable as error:  # a passing outage is shown, not fatal
                        live.update(views.watch_view(*frame, problem=str(error)), refresh=True)
        except KeyboardInterrupt:
            out.print(f"stopped watching search {search_id}; it goes on (state {search.state})")
            return
    out.line()
    out.print(f"search {search_id} {search.state}")
    if search.state != "completed":
        raise typer.Exit(EXIT_REFUSED)


def _watch_data(
    client: Client, search_id: int
) -> tuple[SearchPublic, list[TrialPublic], list[TrialPublic], list[TrialPublic]]:
    """One refresh: the search, its front, its running and its failed trials."""
    search = client.get_search(search_id)
    front = client.pareto(search_id)
    active = client.trials(search_id, states=["running", "failed"])
    running = [t for t in active if t.state == "running"]
    failed = [t for t in active if t.state == "failed"]
    return search, front, running, failed


@search_app.command("stop")
def stop(
    search_id: SearchIdArg,
    server: ServerOpt = None,
    token: TokenOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """Stop a search: queued trials are stopped, running ones told to stop at their next
    heartbeat."""
    with _client(server, token, profile) as client:
        search = client.stop_search(search_id)
    _print_state(search)


def _print_state(search: SearchPublic) -> None:
    """`search 3 stopped: completed 4  stopped 2`."""
    _out().print(f"search {search.id} {search.state}: {views.counts_line(search).plain.strip()}")


@search_app.command("resume")
def resume(
    search_id: SearchIdArg,
    server: ServerOpt = None,
    token: TokenOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """Resume a search that fail fast paused (after fixing the cause it names)."""
    with _client(server, token, profile) as client:
        search = client.resume_search(search_id)
    _print_state(search)


@search_app.command("formula")
def formula(
    search_id: SearchIdArg,
    c: Annotated[
        float | None,
        typer.Option(
            "--c", min=1e-6, max=100, help="MACs / m0 [default: the search's own budget]."
        ),
    ] = None,
    fresh: Annotated[
        bool, typer.Option("--fresh", help="Wait for a fit of every trial completed now.")
    ] = False,
    as_json: JsonOpt = False,
    server: ServerOpt = None,
    token: TokenOpt = None,
    profile: ProfileOpt = None,
) -> None:
    """The downsizing formula at c: (r, d_i, d_m, w) ± std, the network built and its MACs."""
    with _client(server, token, profile) as client:
        answer = client.formula(search_id, c, fresh=fresh)
    if as_json:
        _print_json(answer.model_dump(mode="json"))
        return
    _out().print(views.formula_view(answer))


def login(
    server: Annotated[str, typer.Option("--server", help="The server's URL.")],
    token: Annotated[
        str | None,
        typer.Option(
            "--token", envvar="VITCUBE_TOKEN", help="An API token (vitcube token create)."
        ),
    ] = None,
    profile: Annotated[
        str, typer.Option("--profile", help="The name to save it under.")
    ] = "default",
) -> None:
    """Check a server and token and save them as a profile, so later commands need no flags."""
    with _client(server, token, None) as client:
        searches = client.list_searches()  # a viewer read: proves the URL and the token
    path = save_profile(profile, server=server.rstrip("/"), token=token)
    _out().print(
        f"[bold green]saved[/] profile {profile!r} ({server}, {len(searches)} searches) to {path}"
    )
