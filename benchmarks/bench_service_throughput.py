"""Trial cycles per second: vitcube's REST service vs Optuna's RDB storage, same PostgreSQL.

A cycle is what a worker does per trial: get a trial with its parameters, report one
intermediate value, report the result.

- vitcube: `vitcube serve` (uvicorn, `--server-processes` processes) on a fresh PostgreSQL
  database; `--workers` concurrent simulated workers do POST /api/trials/lease → /heartbeat →
  /complete, each on its own HTTP/1.1 keep-alive connection. The load generator runs in
  `--client-processes` processes of its own (asyncio, uvloop when installed); `--client raw`
  (default) speaks HTTP/1.1 directly so that the generator is not the bottleneck, `--client
  httpx` uses httpx.AsyncClient as a real worker would. The search uses the `random` strategy
  and is fully queued before measuring (planning runs off the request path), so the workers
  measure the lease/heartbeat/complete path, as Optuna's ask/tell does.
- Optuna: `optuna.storages.RDBStorage` on another fresh database of the same server; N threads
  sharing one study (RandomSampler) do study.ask() + four suggest_float → trial.report() →
  study.tell(). Optuna has no server: each worker talks to the database itself.

Both run in this one invocation, one after the other, on the same machine and PostgreSQL.
Prints cycles/s, p50/p99 latency of getting a trial, CPU seconds per cycle of the client, the
server and PostgreSQL's backends (so that a starved component shows), the machine's load
average, and the ratios.

    .venv/bin/python benchmarks/bench_service_throughput.py [--workers 32] [--seconds 15]
        [--server-processes 2] [--client-processes 2] [--client raw|httpx]
        [--admin-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.factories import scratch_database  # noqa: E402  (the tests' throwaway databases)

TOKENS = {
    "VITCUBE_ADMIN_TOKEN": "bench-admin-" + secrets.token_hex(8),
    "VITCUBE_WORKER_TOKEN": "bench-worker-" + secrets.token_hex(8),
    "VITCUBE_VIEWER_TOKEN": "bench-viewer-" + secrets.token_hex(8),
}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


# -- CPU accounting ---------------------------------------------------------------------------


def process_cpu(pids: list[int], *, children: bool = False) -> float:
    """User + system CPU seconds of these processes (and their children) so far."""
    import psutil

    total = 0.0
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            procs = [proc, *(proc.children(recursive=True) if children else [])]
            for p in procs:
                times = p.cpu_times()
                total += times.user + times.system
        except psutil.Error:
            continue
    return total


def backend_pids(admin_url: str, database: str) -> list[int]:
    """PostgreSQL backend processes connected to `database` now."""
    engine = create_engine(admin_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text("SELECT pid FROM pg_stat_activity WHERE datname = :name"), {"name": database}
            )
            return [int(pid) for (pid,) in rows]
    finally:
        engine.dispose()


# -- vitcube: the load generator (its own processes) --------------------------------------------


class RawHttp:
    """The least a client can do: HTTP/1.1 over one keep-alive connection, JSON bodies."""

    def __init__(self, host: str, port: int, token: str) -> None:
        self.host, self.port = host, port
        self.head = (
            f"Host: {host}:{port}\r\nAuthorization: Bearer {token}\r\n"
            "Content-Type: application/json\r\n"
        ).encode()

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def post(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        data = json.dumps(body).encode()
        self.writer.write(
            b"POST %s HTTP/1.1\r\n%sContent-Length: %d\r\n\r\n%s"
            % (path.encode(), self.head, len(data), data)
        )
        status = int((await self.reader.readline()).split(b" ", 2)[1])
        length = 0
        while (line := await self.reader.readline()) != b"\r\n":
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        payload = await self.reader.readexactly(length) if length else b""
        return status, json.loads(payload) if payload else None

    async def close(self) -> None:
        self.writer.close()


class HttpxHttp:
    """The same through httpx.AsyncClient, as vitcube's own worker talks to the server."""

    def __init__(self, host: str, port: int, token: str) -> None:
        self.client = httpx.AsyncClient(
            base_url=f"http://{host}:{port}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        )

    async def open(self) -> None:
        pass

    async def post(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        response = await self.client.post(path, json=body)
        return response.status_code, response.json() if response.content else None

    async def close(self) -> None:
        await self.client.aclose()


async def _drive(
    kind: str, port: int, token: str, workers: int, first: int, begin: float, end: float
) -> tuple[int, list[float], int]:
    """`workers` simulated workers; cycles and lease latencies inside [begin, end) (wall)."""
    make = RawHttp if kind == "raw" else HttpxHttp
    latencies: list[float] = []
    cycles = 0
    errors = 0

    async def worker(n: int) -> None:
        nonlocal cycles, errors
        http = make("127.0.0.1", port, token)
        await http.open()
        try:
            while (now := time.time()) < end:
                t0 = time.perf_counter()
                status, lease = await http.post("/api/trials/lease", {"worker": f"bench-{n}"})
                elapsed = time.perf_counter() - t0
                if status == 204:
                    await asyncio.sleep(0.01)
                    continue
                if status != 200:
                    errors += 1
                    if errors <= 3:
                        print(f"lease answered {status}: {lease}", file=sys.stderr)
                    continue
                path = f"/api/trials/{lease['id']}"
                beat = {"lease_id": lease["lease_id"], "epoch": 0, "metrics": {"val_top1": 0.5}}
                status_beat, _ = await http.post(f"{path}/heartbeat", beat)
                done = {"lease_id": lease["lease_id"], "top1": 0.5, "surrogate": True}
                status_done, _ = await http.post(f"{path}/complete", done)
                if status_beat != 200 or status_done != 200:
                    errors += 1
                    continue
                if now >= begin and time.time() < end:
                    latencies.append(elapsed)
                    cycles += 1
        finally:
            await http.close()

    await asyncio.gather(*(worker(first + n) for n in range(workers)))
    return cycles, latencies, errors


def client_process(
    kind: str, port: int, token: str, workers: int, first: int, begin: float, end: float, out: Any
) -> None:
    """One load-generator process: reports (cycles, latencies, errors, CPU seconds in window)."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    import resource

    def cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    cpu_at: list[float] = []

    async def main() -> tuple[int, list[float], int]:
        async def mark() -> None:
            await asyncio.sleep(max(0.0, begin - time.time()))
            cpu_at.append(cpu())

        marker = asyncio.ensure_future(mark())
        result = await _drive(kind, port, token, workers, first, begin, end)
        await marker
        return result

    cycles, latencies, errors = asyncio.run(main())
    out.put((cycles, latencies, errors, cpu() - cpu_at[0]))


def run_vitcube(
    admin_url: str,
    workers: int,
    seconds: float,
    processes: int,
    client_processes: int,
    client: str,
    warmup: float,
) -> dict[str, float]:
    with scratch_database(admin_url, "bench_vitcube") as url:
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
                *(sys.executable, "-m", "vitcube", "serve", "--port", str(port)),
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
            # Spawned processes import this module afresh (new random TOKENS): pass the token.
            worker_token = TOKENS["VITCUBE_WORKER_TOKEN"]
            context = multiprocessing.get_context("spawn")
            out = context.Queue()
            begin = time.time() + 3.0 + warmup  # 3 s to start the client processes
            end = begin + seconds
            share = [workers // client_processes] * client_processes
            for i in range(workers % client_processes):
                share[i] += 1
            clients = [
                context.Process(
                    target=client_process,
                    args=(client, port, worker_token, n, sum(share[:i]), begin, end, out),
                    daemon=True,
                )
                for i, n in enumerate(share)
                if n > 0
            ]
            for process in clients:
                process.start()
            time.sleep(max(0.0, begin - time.time()))
            server_cpu0 = process_cpu([server.pid], children=True)
            pg = backend_pids(admin_url, make_url(url).database or "")
            pg_cpu0 = process_cpu(pg)
            time.sleep(max(0.0, end - time.time()))
            server_cpu = process_cpu([server.pid], children=True) - server_cpu0
            pg_cpu = process_cpu(pg) - pg_cpu0
            results = [out.get(timeout=120) for _ in clients]
            for process in clients:
                process.join(timeout=30)
        finally:
            server.terminate()
            server.wait(timeout=30)
    cycles = sum(r[0] for r in results)
    latencies = [x for r in results for x in r[1]]
    per_cycle = 1000 / max(cycles, 1)
    return {
        "cycles_per_s": cycles / seconds,
        "p50_ms": 1000 * percentile(latencies, 0.50),
        "p99_ms": 1000 * percentile(latencies, 0.99),
        "cycles": cycles,
        "errors": sum(r[2] for r in results),
        "client_ms": per_cycle * sum(r[3] for r in results),
        "server_ms": per_cycle * server_cpu,
        "pg_ms": per_cycle * pg_cpu,
    }


# -- Optuna -----------------------------------------------------------------------------------


def run_optuna(admin_url: str, workers: int, seconds: float, warmup: float) -> dict[str, float]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with scratch_database(admin_url, "bench_optuna") as url:
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

        run(warmup)
        latencies.clear()
        cycles = 0
        pg = backend_pids(admin_url, make_url(url).database or "")
        pg_cpu0, own_cpu0 = process_cpu(pg), process_cpu([os.getpid()])
        run(seconds)
        pg_cpu, own_cpu = process_cpu(pg) - pg_cpu0, process_cpu([os.getpid()]) - own_cpu0
        storage.engine.dispose()
    per_cycle = 1000 / max(cycles, 1)
    return {
        "cycles_per_s": cycles / seconds,
        "p50_ms": 1000 * percentile(latencies, 0.50),
        "p99_ms": 1000 * percentile(latencies, 0.99),
        "cycles": cycles,
        "errors": 0,
        "client_ms": per_cycle * own_cpu,  # Optuna's workers are its clients: no server
        "server_ms": 0.0,
        "pg_ms": per_cycle * pg_cpu,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=32, help="concurrent simulated workers")
    parser.add_argument("--seconds", type=float, default=15.0, help="measured seconds per side")
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds first")
    parser.add_argument("--server-processes", type=int, default=2, help="uvicorn workers")
    parser.add_argument(
        "--client-processes", type=int, default=2, help="load-generator processes (vitcube)"
    )
    parser.add_argument("--client", choices=("raw", "httpx"), default="raw")
    parser.add_argument(
        "--admin-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    args = parser.parse_args()
    load = os.getloadavg()
    print(
        f"{os.cpu_count()} CPU cores; {args.workers} workers; {args.seconds:.0f} s per side; "
        f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    ours = run_vitcube(
        args.admin_url,
        args.workers,
        args.seconds,
        args.server_processes,
        args.client_processes,
        args.client,
        args.warmup,
    )
    theirs = run_optuna(args.admin_url, args.workers, args.seconds, args.warmup)
    print(
        f"{'':34}{'cycles/s':>9}{'p50 get':>9}{'p99 get':>9}"
        f"{'CPU ms per cycle: client':>26}{'server':>8}{'pg':>7}"
    )
    ours_name = (
        f"vitcube REST ({args.server_processes} srv, {args.client_processes} {args.client} cli)"
    )
    for name, result in ((ours_name, ours), ("Optuna RDBStorage (threads)", theirs)):
        print(
            f"{name:34}{result['cycles_per_s']:>9.0f}"
            f"{result['p50_ms']:>7.1f}ms{result['p99_ms']:>7.1f}ms"
            f"{result['client_ms']:>26.2f}{result['server_ms']:>8.2f}{result['pg_ms']:>7.2f}"
        )
    if ours["errors"]:
        print(f"vitcube cycles that failed: {ours['errors']}")
    ratio = ours["cycles_per_s"] / max(theirs["cycles_per_s"], 1e-9)
    print(f"throughput ratio vitcube / Optuna: {ratio:.2f}x")
    print(f"p50 latency ratio Optuna / vitcube: {theirs['p50_ms'] / ours['p50_ms']:.2f}x")
    print(f"p99 latency ratio Optuna / vitcube: {theirs['p99_ms'] / ours['p99_ms']:.2f}x")
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"goal >= 500 cycles/s: {'met' if ours['cycles_per_s'] >= 500 else 'not met'}")
    print(f"goal ahead of Optuna: {'met' if ratio > 1 else 'not met'}")


if __name__ == "__main__":
    main()
