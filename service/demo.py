"""`vitcube demo`: the whole mission on one machine, with no configuration.

It starts the server on loopback (embedded SQLite, generated tokens) in this process, creates a
`gp` search on the generated `shapes` dataset (workers/shapes.py: 48 px pictures whose class
needs the native resolution; `--dataset digits` for scikit-learn's digits) with a MobileViT v2
baseline at a small resolution and a budget of about half its MACs, starts local CPU workers as
subprocesses (`python -m vitcube.workers`) that really train, shows progress, and when the
search completes prints the Pareto front, the best architecture, where it stands against the
two reference rules given the dataset's seed noise, and the downsizing formula's recommendation
for a smaller budget. Everything it started stops with it. It talks to the server over HTTP,
through `vitcube.client.Client`, like any other client.
"""

from __future__ import annotations

import math
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from vitcube.client import Client, ClientError, RequestRejected

DEMO_DIR = Path(".vitcube-demo")
DEFAULT_DATABASE_URL = "sqlite:///vitcube-demo.db"
POLL_S = 1.0
# The paper's bounds are for ImageNet-length training; in a short run, shallower networks than
# the paper's d_i >= 1.3 are often best, so the demo lets the GP go there.
DEMO_SPACE = {"r": (0.5, 1.7), "d_i": (0.5, 2.3), "d_m": (0.5, 1.6), "w": (0.4, 1.2)}
# The recipe per dataset. shapes: one pass over its 10,000 training images (313 steps), evaluated
# once on its 5,000 validation images. Reading the stripes is learnt suddenly, at a step that
# varies with the seed; 313 steps at this peak LR and a 30 % warm-up take every seed past it,
# where 157 steps (or batch 16, or a peak of 0.001) left one network's top-1 between 62 and 92 %
# from seed to seed (benchmarks/bench_dataset.py measures it). digits: a few epochs need the
# reference's full peak LR; its square-root scaling to batch 64 (0.0005) is for ImageNet-length
# runs and leaves a short trial near chance.
DEMO_RECIPES: dict[str, dict[str, Any]] = {
    "shapes": {"epochs": 1, "batch_size": 32, "lr": 0.0015, "warmup_epochs": 0.3},
    "digits": {"epochs": 8, "batch_size": 64, "lr": 0.002},
}
# The baseline's R0 per dataset: shapes' native size (the stripes need it), digits' usual 64 px.
DEMO_RESOLUTIONS = {"shapes": 48, "digits": 64}
DEMO_DATASETS = tuple(DEMO_RECIPES)  # the first is the default


# The seed-to-seed standard deviation of one network's top-1 (points) at the demo's recipe, as
# measured on the dataset (benchmarks/bench_resume.py for digits, benchmarks/bench_dataset.py for
# shapes): the noise a difference between two trials must beat before it says anything.
SEED_NOISE_POINTS = {"digits": 1.74, "shapes": 0.50}


def standing(trials: list[dict[str, Any]], noise_points: float | None) -> str | None:
    """Where the search's best network stands against the reference rules, in one sentence.

    trials: the search's trials (GET /trials); noise_points: one network's seed-to-seed standard
    deviation of top-1, in points. A difference of two independent runs has √2 times that
    deviation: one beyond 2·√2·σ (two standard deviations of the difference, ~95 %) counts as
    a win or a loss, anything smaller is a tie within noise. None when nothing to compare
    completed.
    """
    done = [t for t in trials if t["state"] == "completed" and t.get("top1") is not None]
    found = [t for t in done if t["kind"] == "search"]
    references = [t for t in done if t["kind"].startswith("reference:")]
    if not found or not references:
        return None
    best = max(found, key=lambda t: (t["top1"], -t["macs"]))
    margin = None if noise_points is None else 2 * math.sqrt(2) * noise_points
    parts = []
    verdicts = []
    for reference in sorted(references, key=lambda t: t["kind"]):
        diff = (best["top1"] - reference["top1"]) * 100
        name = reference["kind"].removeprefix("reference:")
        parts.append(f"{name} {reference['top1']:.3f} ({diff:+.1f} points)")
        if margin is None:
            verdicts.append("unknown")
        else:
            verdicts.append("win" if diff > margin else "loss" if diff < -margin else "tie")
    if margin is None:
        judged = "no noise level is known for this dataset"
    elif all(v == "win" for v in verdicts):
        judged = f"it beats every reference beyond noise (> {margin:.1f} points)"
    elif any(v == "loss" for v in verdicts):
        judged = f"a reference beats it beyond noise (> {margin:.1f} points)"
    else:
        judged = f"not beyond noise against every reference (needs > {margin:.1f} points)"
    noise = (
        ""
        if noise_points is None
        else f"; one network's seed-to-seed σ is {noise_points:.2f} points"
    )
    return (
        f"the search's best, trial {best['id']} at {best['top1']:.3f}, against the reference "
        f"rules: {', '.join(parts)} — {judged}{noise}"
    )


def compute_summary(search: dict[str, Any]) -> str:
    """The training the search spent, and for ASHA what each rung kept, in one line."""
    text = f"trained {search['epochs_trained']:g} epochs, {search['train_macs']:.3g} MACs"
    schedule = search.get("schedule") or {}
    if schedule.get("kind") == "asha":
        rungs = " · ".join(
            f"epoch {r['epoch']}: {r['reached']} reached, {r['promoted']} promoted"
            for r in search["rungs"]
        )
        text += f" (ASHA, eta {schedule['eta']}: {rungs})"
    return text


@dataclass(frozen=True)
class DemoOptions:
    """What one demo run does; the CLI's flags map onto these one to one."""

    trials: int = 10
    workers: int = 2
    port: int = 8000
    exit_when_done: bool = False
    dataset: str = "shapes"
    epochs: int | None = None  # None: DEMO_RECIPES[dataset]'s
    seed: int = 0
    resolution: int | None = None  # None: DEMO_RESOLUTIONS[dataset]
    width: float = 0.5
    c: float = 0.5
    formula_c: float = 0.3
    trainer: str = "real"
    strategy: str = "gp"
    schedule: str = "auto"  # auto: the server's default for the epochs; full; asha


# `--schedule asha`: rungs at 1, 3, 9, … epochs (eta 3) up to the recipe's epochs.
DEMO_ASHA = {"kind": "asha", "min_epochs": 1, "eta": 3}
DEMO_SCHEDULES = ("auto", "full", "asha")


def search_body(options: DemoOptions) -> dict[str, Any]:
    """The create-search body the demo submits (the same JSON a user would POST)."""
    if options.dataset not in DEMO_RECIPES:
        raise ValueError(f"the demo runs on {' or '.join(DEMO_DATASETS)}, not {options.dataset!r}")
    if options.schedule not in DEMO_SCHEDULES:
        raise ValueError(f"the demo's schedule is one of {', '.join(DEMO_SCHEDULES)}")
    training = dict(DEMO_RECIPES[options.dataset])
    resolution = options.resolution or DEMO_RESOLUTIONS[options.dataset]
    if options.epochs is not None:
        training["epochs"] = options.epochs
    extra: dict[str, Any] = {}
    if options.schedule == "asha":
        if training["epochs"] < 2:
            raise ValueError(
                f"--schedule asha needs at least 2 epochs (rungs 1, 3, …); {options.dataset}'s "
                f"recipe trains {training['epochs']}: add --epochs 3 (or more)"
            )
        extra["schedule"] = dict(DEMO_ASHA)
    elif options.schedule == "full":
        extra["schedule"] = {"kind": "full"}
    return {
        "name": f"demo: MobileViT v2-{options.width:g} on {options.dataset} at c = {options.c:g}",
        "base": {
            "family": "mobilevit_v2",
            "width": options.width,
            "resolution": resolution,
        },
        "dataset": {"name": options.dataset},
        "budget": {"c": options.c},
        "space": dict(DEMO_SPACE),
        "objective": "accuracy",
        "strategy": options.strategy,
        "max_trials": options.trials,
        "parallelism": options.workers,
        "training": training,
        "seed": options.seed,
        **extra,
    }


class _Server:
    """uvicorn serving create_app(settings) on a background thread of this process."""

    def __init__(self, settings: Any, port: int) -> None:
        import uvicorn

        from vitcube.service.app import create_app

        config = uvicorn.Config(
            create_app(settings), host="127.0.0.1", port=port, log_level="warning"
        )
        self._server = uvicorn.Server(config)
        # uvicorn installs signal handlers only on the main thread; Ctrl-C is ours to handle.
        self._thread = threading.Thread(target=self._server.run, name="vitcube-server", daemon=True)

    def start(self, timeout_s: float = 60.0) -> int:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the demo server did not start (is the port in use?)")
            time.sleep(0.05)
        return int(self._server.servers[0].sockets[0].getsockname()[1])

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=15)


def _start_workers(
    options: DemoOptions, url: str, worker_token: str
) -> list[subprocess.Popen[bytes]]:
    """K local CPU workers; each gets an equal share of the cores and its own log file."""
    threads = max(1, (os.cpu_count() or 1) // options.workers)
    env = dict(
        os.environ,
        VITCUBE_WORKER_TOKEN=worker_token,
        VITCUBE_SPOOL_DIR=str((DEMO_DIR / "spool").resolve()),
    )
    children = []
    for index in range(options.workers):
        log = (DEMO_DIR / f"worker-{index}.log").open("wb")
        command = [
            sys.executable,
            "-m",
            "vitcube.workers",
            "--server",
            url,
            "--device",
            "cpu",
            "--trainer",
            options.trainer,
            "--name",
            f"demo-{index}",
            "--progress",
            "plain",
            "--threads",
            str(threads),
        ]
        children.append(subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT))
    return children


def _stop_workers(children: list[subprocess.Popen[bytes]]) -> None:
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)  # the worker fails its trial with retry and exits
    for child in children:
        try:
            child.wait(timeout=20)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _follow(
    client: Client, search_id: int, options: DemoOptions, console: Console
) -> dict[str, Any]:
    """Show progress until the search is no longer running; returns the final search JSON."""
    columns = (
        TextColumn("[bold]trials"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("search", total=options.trials, status="planning…")
        while True:
            search = client.get_search(search_id).model_dump(mode="json")
            counts = search["counts"]
            done = sum(counts.get(s, 0) for s in ("completed", "paused", "failed", "stopped"))
            best = search.get("best")
            best_text = f"best top-1 {best['top1']:.3f}" if best else "no result yet"
            paused = f", {counts['paused']} paused at a rung" if counts.get("paused") else ""
            progress.update(
                task,
                completed=min(done, options.trials),
                status=f"{counts.get('running', 0)} training{paused}, {best_text}",
            )
            if search["state"] != "running":
                return dict(search)
            time.sleep(POLL_S)


def _print_results(
    client: Client, search: dict[str, Any], options: DemoOptions, console: Console
) -> bool:
    """The Pareto front, the best architecture, the formula; False when nothing completed."""
    search_id = search["id"]
    front = [trial.model_dump(mode="json") for trial in client.pareto(search_id)]
    console.print(
        f"\nsearch {search_id} {search['state']}: m0 = {search['m0'] / 1e6:.1f} M MACs, "
        f"budget {search['max_macs'] / 1e6:.1f} M MACs (c = {options.c:g})"
    )
    console.print(compute_summary(search))
    if not front:
        console.print("[red]no trial completed: see the worker logs in .vitcube-demo/[/red]")
        return False
    table = Table(title="Pareto front (top-1 vs MACs)")
    for column in ("trial", "kind", "r", "d_i", "d_m", "w", "px", "MMACs", "params", "top-1"):
        table.add_column(column, justify="right")
    for trial in sorted(front, key=lambda t: t["macs"]):
        factors = trial["effective_factors"] or trial["factors"]
        table.add_row(
            str(trial["id"]),
            trial["kind"].removeprefix("reference:"),
            *(f"{factors[f]:.2f}" for f in ("r", "d_i", "d_m", "w")),
            str(trial["resolution"]),
            f"{trial['macs'] / 1e6:.1f}",
            f"{trial['params'] / 1e6:.2f} M",
            f"{trial['top1']:.3f}",
        )
    console.print(table)

    best = search["best"]
    if best is not None:
        factors = best["effective_factors"] or best["factors"]
        console.print(
            f"best under budget: trial {best['id']} ({best['kind']}), top-1 {best['top1']:.3f} at "
            f"{best['macs'] / 1e6:.1f} M MACs — r={factors['r']:.2f} d_i={factors['d_i']:.2f} "
            f"d_m={factors['d_m']:.2f} w={factors['w']:.2f}, {best['resolution']} px"
        )
    trials = [trial.model_dump(mode="json") for trial in client.trials(search_id)]
    verdict = standing(trials, SEED_NOISE_POINTS.get(str(search["dataset"].get("name"))))
    if verdict:
        console.print(verdict)
    try:
        formula = client.formula(search_id, options.formula_c)
    except RequestRejected as refused:
        console.print(f"downsizing formula: not available yet ({refused.detail})")
        return True
    parts = ", ".join(f"{f}={v.mean:.2f}±{v.std:.2f}" for f, v in formula.factors.items())
    console.print(
        f"downsizing formula for c = {options.formula_c:g}: {parts} → builds "
        f"{formula.arch['resolution']} px, {formula.macs / 1e6:.1f} M MACs "
        f"(budget {formula.max_macs / 1e6:.1f} M)"
    )
    return True


def run_demo(options: DemoOptions, console: Console | None = None) -> int:
    """Run the demo; returns the process exit code (0 when the search produced a front)."""
    from vitcube.service.db import upgrade
    from vitcube.service.settings import Settings

    console = console or Console()
    DEMO_DIR.mkdir(exist_ok=True)
    admin_token = secrets.token_urlsafe(24)
    worker_token = secrets.token_urlsafe(24)
    settings = Settings(
        database_url=os.environ.get("VITCUBE_DATABASE_URL", DEFAULT_DATABASE_URL),
        admin_token=SecretStr(admin_token),
        worker_token=SecretStr(worker_token),
        lease_seconds=60,
    )
    upgrade(settings.database_url)
    server = _Server(settings, options.port)
    port = server.start()
    url = f"http://127.0.0.1:{port}"
    children: list[subprocess.Popen[bytes]] = []
    try:
        with Client(url, admin_token) as client:
            try:
                search_id = client.create_search(search_body(options)).id
            except ClientError as error:
                console.print(f"[red]could not create the demo search: {error}[/red]")
                return 1
            dashboard = f"{url}/searches/{search_id}"
            console.print(f"dashboard: {dashboard}  (log in with the admin token {admin_token})")
            children = _start_workers(options, url, worker_token)
            try:
                search = _follow(client, search_id, options, console)
            except KeyboardInterrupt:
                console.print("interrupted: stopping the workers and the server")
                return 130
            finally:
                _stop_workers(children)
            ok = _print_results(client, search, options, console)
            console.print(f"dashboard: {dashboard}")
            if not options.exit_when_done:
                console.print("serving the dashboard until Ctrl-C")
                try:
                    while True:
                        time.sleep(3600)
                except KeyboardInterrupt:
                    pass
            return 0 if ok else 1
    finally:
        _stop_workers(children)
        server.stop()
