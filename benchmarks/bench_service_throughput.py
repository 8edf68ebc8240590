"""Trial cycles per second: vitcube's REST service vs Optuna's RDB storage, same PostgreSQL.

A cycle is what a worker does per trial: get a trial with its parameters, report one
intermediate value, report the result.

- vitcube: `vitcube serve` (uvicorn, `--workers` processes) on a fresh PostgreSQL database; N
  concurrent simulated workers (asyncio + httpx, one process) do POST /api/trials/lease →
  /heartbeat → /complete. The search uses the `random` strategy; the planner keeps it topped up
  in the background (the search is created with a large `parallelism` so planning runs ahead).
- Optuna: `optuna.storages.RDBStorage` on another fresh database of the same server; N threads
  sharing one study (RandomSampler) do study.ask() + four suggest_float → trial.report() →
  study.tell(). Optuna has no server: each worker talks to the database itself.

Both run in this one invocation, one after the other, on the same machine and PostgreSQL.
Prints cycles/s, p50/p99 latency of getting a trial, and the ratios.

    .venv/bin/python benchmarks/bench_service_throughput.py [--workers 32] [--seconds 15]
        [--server-processes 2] [--admin-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
TOKENS = {
    "VITCUBE_ADMIN_TOKEN": "bench-admin-" + secrets.token_hex(8),
    "VITCUBE_WORKER_TOKEN": "bench-worker-" + secrets.token_hex(8),
    "VITCUBE_VIEWER_TOKEN": "bench-viewer-" + secrets.token_hex(8),
}


@contextmanager
def fresh_database(admin_url: str, prefix: str) -> Iterator[str]:
    name = f"{prefix}_{secrets.token_hex(4)}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


# -- vitcube ----------------------------------------------------------------------------------


async def vitcube_workers(url: str, workers: int, seconds: float) -> tuple[int, list[float]]:
    headers = {"Authorization": f"Bearer {TOKENS['VITCUBE_WORKER_TOKEN']}"}
    latencies: list[float] = []
    cycles = 0
    stop_at = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=workers, max_keepalive_connections=workers)

    async def worker(client: httpx.AsyncClient, n: int) -> None:
        nonlocal cycles
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            response = await client.post(
                "/api/trials/lease", json={"worker": f"bench-{n}"}, headers=headers
            )
            latencies.append(time.perf_counter() - t0)
            if response.status_code == 204:
                await asyncio.sleep(0.01)
                continue
            response.raise_for_status()
            lease = response.json()
            beat = await client.post(
                f"/api/trials/{lease['id']}/heartbeat",
                json={"lease_id": lease["lease_id"], "epoch": 0, "metrics": {"val_top1": 0.5}},
                headers=headers,
            )
            beat.raise_for_status()
            done = await client.post(
                f"/api/trials/{lease['id']}/complete",
                json={"lease_id": lease["lease_id"], "top1": 0.5, "surrogate": True},
                headers=headers,
            )
            done.raise_for_status()
            cycles += 1

    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        await asyncio.gather(*(worker(client, n) for n in range(workers)))
    return cycles, latencies


def run_vitcube(admin_url: str, workers: int, seconds: float, processes: int) -> dict[str, float]:
    with fresh_database(admin_url, "bench_vitcube") as url:
        port = 18000 + secrets.randbelow(1000)
        env = {
            **os.environ,
            **TOKENS,
            "VITCUBE_DATABASE_URL": url,
            "VITCUBE_POOL_SIZE": "20",
            "VITCUBE_PLANNER_INTERVAL_S": "0.2",
        }
        server = subprocess.Popen(
            [
                *(sys.executable, "-m", "service", "serve", "--port", str(port)),
                *("--workers", str(processes), "--log-level", "warning"),
            ],
            env=env,
            cwd=ROOT,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if httpx.get(f"{base}/api/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("vitcube serve did not start")
                time.sleep(0.2)
            admin = {"Authorization": f"Bearer {TOKENS['VITCUBE_ADMIN_TOKEN']}"}
            body = {
                "name": "throughput",
                "base": {"family": "mobilevit_v1", "size": "xxs"},
                "dataset": {"name": "digits"},
                "budget": {"c": 1.0},
                "strategy": "random",
                "max_trials": 6_000,
                "parallelism": 6_000,
                "training": {"epochs": 1},
            }
            created = httpx.post(f"{base}/api/searches", json=body, headers=admin, timeout=60)
            created.raise_for_status()
            search_url = f"{base}/api/searches/{created.json()['id']}"
            # Planning runs off the request path; let it queue the whole search first so that
            # the workers measure the lease/heartbeat/complete path, as Optuna's ask/tell does.
            while httpx.get(search_url, headers=admin).json()["counts"]["queued"] < 6_000:
                time.sleep(0.5)
            asyncio.run(vitcube_workers(base, workers, 2.0))  # warm-up
            cycles, latencies = asyncio.run(vitcube_workers(base, workers, seconds))
        finally:
            server.terminate()
            server.wait(timeout=30)
    return {
        "cycles_per_s": cycles / seconds,
        "p50_ms": 1000 * percentile(latencies, 0.50),
        "p99_ms": 1000 * percentile(latencies, 0.99),
        "cycles": cycles,
    }


# -- Optuna -----------------------------------------------------------------------------------


def run_optuna(admin_url: str, workers: int, seconds: float) -> dict[str, float]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with fresh_database(admin_url, "bench_optuna") as url:
        storage = optuna.storages.RDBStorage(
            url, engine_kwargs={"pool_size": workers + 4, "max_overflow": 8}
        )
        study = optuna.create_study(
            storage=storage,
            study_name="throughput",
            sampler=optuna.samplers.RandomSampler(seed=0),
            direction="maximize",
        )
        latencies: list[float] = []
        cycles = 0
        lock = threading.Lock()

        def worker(stop_at: float) -> None:
            nonlocal cycles
            while time.perf_counter() < stop_at:
                t0 = time.perf_counter()
                trial = study.ask()
                for name, low, high in (("r", 0.8, 1.7), ("d_i", 1.3, 2.3), ("d_m", 0.8, 1.6)):
                    trial.suggest_float(name, low, high)
                trial.suggest_float("w", 0.4, 1.2)
                elapsed = time.perf_counter() - t0
                trial.report(0.5, 0)
                study.tell(trial, 0.5)
                with lock:
                    latencies.append(elapsed)
                    cycles += 1

        def run(duration: float) -> None:
            stop_at = time.perf_counter() + duration
            threads = [threading.Thread(target=worker, args=(stop_at,)) for _ in range(workers)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()

        run(2.0)  # warm-up
        latencies.clear()
        cycles = 0
        run(seconds)
        storage.engine.dispose()
    return {
        "cycles_per_s": cycles / seconds,
        "p50_ms": 1000 * percentile(latencies, 0.50),
        "p99_ms": 1000 * percentile(latencies, 0.99),
        "cycles": cycles,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=32, help="concurrent simulated workers")
    parser.add_argument("--seconds", type=float, default=15.0, help="measured seconds per side")
    parser.add_argument("--server-processes", type=int, default=2, help="uvicorn workers")
    parser.add_argument(
        "--admin-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPU cores; {args.workers} workers; {args.seconds:.0f} s per side")
    ours = run_vitcube(args.admin_url, args.workers, args.seconds, args.server_processes)
    theirs = run_optuna(args.admin_url, args.workers, args.seconds)
    print(f"{'':28}{'cycles/s':>10}{'p50 get ms':>12}{'p99 get ms':>12}")
    for name, result in (
        (f"vitcube REST ({args.server_processes} procs)", ours),
        ("Optuna RDBStorage", theirs),
    ):
        print(
            f"{name:28}{result['cycles_per_s']:>10.0f}"
            f"{result['p50_ms']:>12.1f}{result['p99_ms']:>12.1f}"
        )
    ratio = ours["cycles_per_s"] / max(theirs["cycles_per_s"], 1e-9)
    print(f"throughput ratio vitcube / Optuna: {ratio:.2f}x")
    print(f"p50 latency ratio Optuna / vitcube: {theirs['p50_ms'] / ours['p50_ms']:.2f}x")
    print(f"p99 latency ratio Optuna / vitcube: {theirs['p99_ms'] / ours['p99_ms']:.2f}x")
    print(f"goal >= 500 cycles/s: {'met' if ours['cycles_per_s'] >= 500 else 'not met'}")
    print(f"goal ahead of Optuna: {'met' if ratio > 1 else 'not met'}")


if __name__ == "__main__":
    main()
