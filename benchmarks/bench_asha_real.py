"""ASHA against full training with real workers: the same search twice, side by side.

One `vitcube serve` (SQLite in a temporary directory) and ``--workers`` N = 2 real CPU workers
(``python -m vitcube.workers --trainer real --threads 1``). Two searches with the same seed,
baseline, budget, space, strategy and ``--trials`` T = 11 configurations (the two references
included: 9 search trials give ASHA 9 at rung 1, 3 at rung 3 and 1 at rung 9) on the
generated ``shapes`` dataset: one with ``{"kind": "asha", "min_epochs": e, "eta": η}``
(default rungs 1, 3, 9), one with ``{"kind": "full"}``. They run one after the other on the same
server and workers (ASHA first by default; ``--order full,asha`` swaps them); the dataset is
generated into the run's decode cache before either starts, so neither pays for it.

Problem (the demo's, service/demo.py): MobileViT v2-0.5 at DEMO_RESOLUTIONS["shapes"] = 48 px,
budget c = 0.5 (DemoOptions.c), DEMO_SPACE; the recipe DEMO_RECIPES["shapes"] (batch 32, peak
LR 0.0015, warm-up 0.3 epochs) with ``--epochs`` E = 9 over ``--train-images`` (default 640: 20
steps an epoch, 180 in all, well short of the demo's 313 so that the run fits in about 25
minutes on the 2-core box), evaluated every epoch on ``--val-images`` (default 500). The default
strategy is ``sobol``, whose i-th proposal depends only on the seed and i, so both searches
train the same networks and only the schedule differs (the run prints how many they share);
``--strategy gp`` compares the whole method instead (the GP then sees different evidence).
Under `full` the server's median stopping rule (settings median_stop_*: a search trial whose
best top-1 by epoch e >= 5 is below the median of 5 completed trials at e is stopped) is on, as
it is for any user's full search; ``--no-median-stop`` turns it off, so every full trial trains
all E epochs.

Printed per search: trials per rung (reached, paused there, promoted), promotions, resumed
segments (the workers' "resuming from its checkpoint" lines for the search's trials), epochs
trained and training MACs (the search's own `epochs_trained` and `train_macs`), wall time
(creation to completion, as the poll saw it), the best completed trial's top-1, MACs and kind
(the search's `best`), and whether ASHA's rule, applied to the final rung results, still names
a paused trial (a search that completes with one skipped a promotion); then the ratios full/asha
of training MACs and of wall time.

Run:  .venv/bin/python benchmarks/bench_asha_real.py               (about 25 minutes; README)
      .venv/bin/python benchmarks/bench_asha_real.py --trials 6 --epochs 4 --eta 2 \
          --train-images 320 --val-images 200                          (a smoke run, 5 minutes)

Imports the standard library, httpx, vitcube.contract, vitcube.search.asha, vitcube.workers.shapes
and service.demo's constants; everything else runs in the subprocesses it starts.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from vitcube.contract import AshaSchedule, rung_epochs
from vitcube.search.asha import promotable
from vitcube.service.demo import DEMO_RECIPES, DEMO_RESOLUTIONS, DEMO_SPACE, DemoOptions
from vitcube.workers import shapes

VITCUBE = Path(sys.executable).parent / "vitcube"
POLL_S = 1.0


@dataclass
class Outcome:
    """One search's result, as the API reports it after completion."""

    kind: str
    search: dict[str, Any]
    trials: list[dict[str, Any]]
    wall_s: float
    resumed_segments: int
    skipped_promotions: list[
        tuple[int, int]
    ]  # (trial id, rung epoch) left paused though promotable


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait(predicate: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(POLL_S)
    raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def search_body(args: argparse.Namespace, schedule: dict[str, Any]) -> dict[str, Any]:
    """The create-search body: the demo's problem on shapes with this run's sizes and schedule."""
    training = dict(DEMO_RECIPES["shapes"])
    training["epochs"] = args.epochs
    if args.warmup_epochs is not None:
        training["warmup_epochs"] = args.warmup_epochs
    return {
        "name": f"bench_asha_real: {schedule['kind']}",
        "base": {
            "family": "mobilevit_v2",
            "width": DemoOptions.width,
            "resolution": DEMO_RESOLUTIONS["shapes"],
        },
        "dataset": {
            "name": "shapes",
            "train_images": args.train_images,
            "val_images": args.val_images,
        },
        "budget": {"c": DemoOptions.c},
        "space": {factor: list(bounds) for factor, bounds in DEMO_SPACE.items()},
        "objective": "accuracy",
        "strategy": args.strategy,
        "max_trials": args.trials,
        "parallelism": args.workers,
        "training": training,
        "schedule": schedule,
        "seed": args.seed,
    }


def skipped_promotions(trials: list[dict[str, Any]], rungs: tuple[int, ...], eta: int) -> list:
    """(trial id, rung) of every trial still paused that ASHA's rule promotes on the final
    results: none for a search that completed correctly."""
    ordered = sorted((t for t in trials if t["kind"] == "search"), key=lambda t: int(t["id"]))
    skipped = []
    for epoch in rungs[:-1]:
        results = {
            t["id"]: t["rung_top1"][str(epoch)] for t in ordered if str(epoch) in t["rung_top1"]
        }
        waiting = [t["id"] for t in ordered if t["state"] == "paused" and t["to_epoch"] == epoch]
        skipped += [(trial_id, epoch) for trial_id in promotable(results, waiting, eta)]
    return skipped


class Run:
    """The server and the workers of one benchmark run, in a temporary directory."""

    def __init__(self, args: argparse.Namespace, directory: Path) -> None:
        self.args = args
        self.directory = directory
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        admin, worker = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        self.worker_token = worker
        self.env = dict(
            os.environ,
            VITCUBE_DATABASE_URL=f"sqlite:///{directory / 'vitcube.db'}",
            VITCUBE_ARTIFACT_URL=str(directory / "artifacts"),
            VITCUBE_ADMIN_TOKEN=admin,
            VITCUBE_WORKER_TOKEN=worker,
            VITCUBE_VIEWER_TOKEN="",
            VITCUBE_DECODE_CACHE=str(directory / "decode-cache"),
            VITCUBE_PLANNER_INTERVAL_S="0.5",
            OMP_NUM_THREADS="1",
        )
        if args.no_median_stop:
            self.env["VITCUBE_MEDIAN_STOP_WARMUP_EPOCHS"] = str(10**6)  # never reached
        self.http = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {admin}"}, timeout=60
        )
        self.processes: list[subprocess.Popen[bytes]] = []
        self.worker_logs: list[Path] = []

    def _spawn(self, command: list[str], log_path: Path) -> subprocess.Popen[bytes]:
        with log_path.open("ab") as log:
            process = subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.processes.append(process)
        return process

    def start(self) -> None:
        # The dataset first, into the decode cache the workers read, so no search pays for it.
        shapes.load_or_generate(
            train_images=self.args.train_images,
            val_images=self.args.val_images,
            cache_dir=self.directory / "decode-cache",
        )
        server = self._spawn(
            [str(VITCUBE), "serve", "--port", str(self.port), "--log-level", "warning"],
            self.directory / "server.log",
        )

        def ready() -> bool:
            if server.poll() is not None:
                raise RuntimeError(f"vitcube serve exited:\n{self.tail('server.log')}")
            try:
                return self.http.get("/api/searches").status_code == 200
            except httpx.TransportError:
                return False

        _wait(ready, 120, "vitcube serve")
        for i in range(self.args.workers):
            home = self.directory / f"worker-{i}"
            home.mkdir()
            log_path = self.directory / f"worker-{i}.log"
            self.worker_logs.append(log_path)
            self._spawn(
                [
                    sys.executable,
                    "-m",
                    "vitcube.workers",
                    "--server",
                    self.url,
                    "--token",
                    self.worker_token,
                    "--device",
                    "cpu",
                    "--threads",
                    "1",
                    "--trainer",
                    "real",
                    "--progress",
                    "plain",
                    "--name",
                    f"bench-{i}",
                    "--spool-dir",
                    str(home / "spool"),
                ],
                log_path,
            )
        _wait(
            lambda: all("serving" in path.read_text(errors="replace") for path in self.worker_logs),
            180,
            "the workers to start",
        )

    def tail(self, name: str, chars: int = 3000) -> str:
        return (self.directory / name).read_text(errors="replace")[-chars:]

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        for process in reversed(self.processes):
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)
        self.http.close()

    def run_search(self, schedule: dict[str, Any]) -> Outcome:
        response = self.http.post("/api/searches", json=search_body(self.args, schedule))
        if response.status_code != 201:
            raise RuntimeError(f"create search: {response.status_code} {response.text}")
        search_id = int(response.json()["id"])
        started = time.monotonic()

        def finished() -> dict[str, Any] | None:
            view = self.http.get(f"/api/searches/{search_id}").json()
            if view["state"] in ("failed", "stopped", "paused"):
                raise RuntimeError(f"search {search_id} is {view['state']}: {view.get('error')}")
            for process in self.processes:
                if process.poll() is not None:
                    raise RuntimeError(
                        "a process exited:\n"
                        + "\n".join(self.tail(p.name) for p in self.worker_logs)
                    )
            return view if view["state"] == "completed" else None

        view = _wait(finished, self.args.timeout_s, f"search {search_id} ({schedule['kind']})")
        wall_s = time.monotonic() - started
        trials = self.http.get(f"/api/searches/{search_id}/trials").json()
        ids = {int(t["id"]) for t in trials}
        resumed = sum(
            int(found) in ids
            for path in self.worker_logs
            for found in re.findall(
                r"trial (\d+): resuming from its checkpoint", path.read_text(errors="replace")
            )
        )
        epochs = int(view["training"]["epochs"])
        if schedule["kind"] == "asha":
            asha = AshaSchedule(**schedule)
            rungs = rung_epochs(asha, epochs)
            skipped = skipped_promotions(trials, rungs, asha.eta)
        else:
            skipped = []
        return Outcome(schedule["kind"], view, trials, wall_s, resumed, skipped)


def _rungs_text(search: dict[str, Any]) -> str:
    return ", ".join(
        f"{r['epoch']}: {r['reached']} ({r['paused']} paused, {r['promoted']} on)"
        for r in search["rungs"]
    )


def _trials_text(outcome: Outcome) -> str:
    counts = outcome.search["counts"]
    return f"{len(outcome.trials)} ({counts['completed']} / {counts['paused']})"


def _best_text(search: dict[str, Any]) -> str:
    best = search.get("best")
    if not best:
        return "none"
    return f"{best['top1']:.4f} at {best['macs'] / 1e6:.2f} M MACs ({best['kind']}, #{best['id']})"


def report(outcomes: dict[str, Outcome], args: argparse.Namespace) -> None:
    asha, full = outcomes["asha"], outcomes["full"]
    keys = {
        kind: {json.dumps(t["arch"], sort_keys=True) for t in o.trials}
        for kind, o in outcomes.items()
    }
    shared = len(keys["asha"] & keys["full"])
    rows = [
        ("schedule", lambda o: json.dumps(o.search["schedule"])),
        ("trials (completed / paused)", _trials_text),
        ("trials per rung: epoch: reached", lambda o: _rungs_text(o.search)),
        ("promotions", lambda o: str(sum(r["promoted"] for r in o.search["rungs"]))),
        ("resumed segments", lambda o: str(o.resumed_segments)),
        ("epochs trained", lambda o: f"{o.search['epochs_trained']:g}"),
        ("train MACs", lambda o: f"{o.search['train_macs']:.3e}"),
        ("wall time", lambda o: f"{o.wall_s:.0f} s"),
        ("best completed top-1", lambda o: _best_text(o.search)),
        ("promotions left undone", lambda o: str(o.skipped_promotions or "none")),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"{'':{width}}  | asha | full")
    for name, cell in rows:
        print(f"{name:{width}}  | {cell(asha)} | {cell(full)}")
    macs_ratio = full.search["train_macs"] / max(asha.search["train_macs"], 1.0)
    print(
        f"full / asha: train MACs {macs_ratio:.2f}x, wall time {full.wall_s / asha.wall_s:.2f}x; "
        f"networks in both searches: {shared} of {len(keys['asha'])} / {len(keys['full'])}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--trials", type=int, default=11, help="max_trials of each search")
    parser.add_argument("--epochs", type=int, default=9)
    parser.add_argument("--min-epochs", type=int, default=1)
    parser.add_argument("--eta", type=int, default=3)
    parser.add_argument("--train-images", type=int, default=640)
    parser.add_argument("--val-images", type=int, default=500)
    parser.add_argument("--warmup-epochs", type=float, default=None, help="default: the demo's")
    parser.add_argument("--strategy", default="sobol", choices=("sobol", "random", "gp"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--no-median-stop", action="store_true", help="full trials all train E epochs"
    )
    parser.add_argument("--order", default="asha,full", choices=("asha,full", "full,asha"))
    parser.add_argument("--timeout-s", type=float, default=3600.0, help="per search")
    parser.add_argument("--keep", type=Path, default=None, help="keep logs and database here")
    parser.add_argument("--json", type=Path, default=None, help="write the outcomes here")
    args = parser.parse_args()
    schedules = {
        "asha": {"kind": "asha", "min_epochs": args.min_epochs, "eta": args.eta},
        "full": {"kind": "full"},
    }
    with tempfile.TemporaryDirectory(prefix="bench-asha-real-") as scratch:
        directory = args.keep or Path(scratch)
        directory.mkdir(parents=True, exist_ok=True)
        run = Run(args, directory)
        began = time.monotonic()
        try:
            run.start()
            print(
                f"server and {args.workers} workers up in {time.monotonic() - began:.0f} s; "
                f"searches run one after the other: {args.order}",
                flush=True,
            )
            outcomes: dict[str, Outcome] = {}
            for kind in args.order.split(","):
                outcomes[kind] = run.run_search(schedules[kind])
                print(f"{kind}: completed in {outcomes[kind].wall_s:.0f} s", flush=True)
        finally:
            run.stop()
        report(outcomes, args)
        print(f"total {time.monotonic() - began:.0f} s")
        if args.json is not None:
            args.json.write_text(
                json.dumps(
                    {
                        kind: {
                            "search": o.search,
                            "trials": o.trials,
                            "wall_s": o.wall_s,
                            "resumed_segments": o.resumed_segments,
                            "skipped_promotions": o.skipped_promotions,
                        }
                        for kind, o in outcomes.items()
                    },
                    indent=1,
                    default=str,
                )
            )


if __name__ == "__main__":
    main()
