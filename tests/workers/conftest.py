"""Fixtures for the workers tests: a real server and real worker processes.

`live_server` starts a real `vitcube serve` subprocess on a fresh SQLite database with short
leases; `start_worker` starts real `python -m vitcube.workers` processes against it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.factories import scratch_database
from vitcube.client import Client

ADMIN_TOKEN = "workers-tests-admin-token-0123456789"
WORKER_TOKEN = "workers-tests-worker-token-012345678"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
VITCUBE = Path(sys.executable).parent / "vitcube"
POSTGRES_ADMIN_URL = os.environ.get(
    "VITCUBE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)

# MobileViT v2-0.5 without stages 4 and 5 (the small-image variant) at 32 px: ~1-2 M MACs, so
# a CPU trains a trial in seconds.
TINY_BASE = {
    "family": "mobilevit_v2",
    "width": 0.5,
    "resolution": 32,
    "num_classes": 10,
    "dropped_stages": [4, 5],
}


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Small CPU models on a box shared with other suites: one thread avoids oversubscription
    (with two cores busy elsewhere, two threads train several times slower than one)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def decode_cache_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Image folders decoded by a test (and the worker processes it starts) are cached in the
    test's own directory, never in the user's ~/.cache."""
    cache = tmp_path / "decode-cache"
    monkeypatch.setenv("VITCUBE_DECODE_CACHE", str(cache))
    return cache


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(predicate: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


class LiveServer:
    """A real `vitcube serve` subprocess on a SQLite file (or the PostgreSQL database given);
    stop() and start() keep port and data."""

    def __init__(
        self, directory: Path, lease_seconds: float, database_url: str | None = None
    ) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = directory / "server.log"
        self.env = dict(
            os.environ,
            VITCUBE_DATABASE_URL=database_url or f"sqlite:///{directory / 'vitcube.db'}",
            VITCUBE_ADMIN_TOKEN=ADMIN_TOKEN,
            VITCUBE_WORKER_TOKEN=WORKER_TOKEN,
            VITCUBE_VIEWER_TOKEN="",
            VITCUBE_LEASE_SECONDS=str(lease_seconds),
            VITCUBE_SWEEP_INTERVAL_S="0.3",
            VITCUBE_PLANNER_INTERVAL_S="0.2",
            OMP_NUM_THREADS="1",
        )
        self.process: subprocess.Popen[bytes] | None = None
        self.http = httpx.Client(base_url=self.url, headers=ADMIN, timeout=30)
        # What the tests read and create through: the user's client (retrying only while the
        # server restarts, within a test's patience).
        self.client = Client(self.url, ADMIN_TOKEN, retry_for_s=20.0)

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [str(VITCUBE), "serve", "--port", str(self.port), "--log-level", "warning"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

        def ready() -> bool:
            assert self.process is not None and self.process.poll() is None, self.log()
            try:
                return self.http.get("/api/searches").status_code == 200
            except httpx.TransportError:
                return False

        wait_for(ready, 90, "vitcube serve to answer")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)
        self.process = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def create_search(self, **overrides: Any) -> int:
        body: dict[str, Any] = {
            "name": "workers test",
            "base": dict(TINY_BASE),
            "dataset": {"name": "digits"},
            "budget": {"c": 0.5},
            "strategy": "random",
            "max_trials": 1,
            "parallelism": 1,
            "training": {"epochs": 2, "batch_size": 64, "max_steps_per_epoch": 4},
        }
        body.update(overrides)
        return self.client.create_search(body).id

    def trials(self, search_id: int) -> list[dict[str, Any]]:
        return [trial.model_dump(mode="json") for trial in self.client.trials(search_id)]

    def trial(self, search_id: int) -> dict[str, Any]:
        """The search's one trial (a placeholder until the planner has created it)."""
        trials = self.trials(search_id)
        assert len(trials) <= 1, trials
        return trials[0] if trials else {"state": "not planned yet", "curve": []}


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., LiveServer]]:
    """Start a server with the given lease length (seconds), on SQLite unless a database URL
    is given."""
    servers: list[LiveServer] = []

    def start(lease_seconds: float = 60.0, database_url: str | None = None) -> LiveServer:
        server = LiveServer(tmp_path, lease_seconds=lease_seconds, database_url=database_url)
        servers.append(server)
        server.start()
        return server

    yield start
    for server in servers:
        server.stop()
        server.http.close()
        server.client.close()


@pytest.fixture
def worker_token() -> str:
    return WORKER_TOKEN


@pytest.fixture
def live_server(server_factory: Callable[..., LiveServer]) -> LiveServer:
    return server_factory()


class WorkerProcess:
    """A real `python -m vitcube.workers` process (plain progress lines in a log file)."""

    def __init__(self, server: LiveServer, spool: Path, log_path: Path, args: list[str]) -> None:
        self.log_path = log_path
        command = [
            sys.executable,
            "-m",
            "vitcube.workers",
            "--server",
            server.url,
            "--token",
            WORKER_TOKEN,
            "--device",
            "cpu",
            "--threads",
            "1",
            "--progress",
            "plain",
            "--spool-dir",
            str(spool),
            *args,
        ]
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command, env=dict(os.environ, OMP_NUM_THREADS="1"), stdout=log, stderr=log
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait(self, timeout_s: float = 120) -> int:
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise AssertionError(f"worker did not exit in {timeout_s} s:\n{self.log()}") from None

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start a worker process; `own_home=True` gives it a spool (and, beside it, checkpoints)
    of its own, so that two workers share nothing on disk, as two machines would."""
    started: list[WorkerProcess] = []

    def start(
        server: LiveServer, *args: str, name: str = "w1", own_home: bool = False
    ) -> WorkerProcess:
        spool = tmp_path / "spool"
        if own_home:
            (tmp_path / f"worker-{name}").mkdir()
            spool = tmp_path / f"worker-{name}" / "spool"
        worker = WorkerProcess(
            server, spool, tmp_path / f"worker-{name}.log", [*args, "--name", name]
        )
        started.append(worker)
        return worker

    yield start
    for worker in started:
        if worker.process.poll() is None:
            worker.kill()


@pytest.fixture(params=["sqlite", "postgres"])
def server(
    request: pytest.FixtureRequest, tmp_path: Path, server_factory: Callable[..., LiveServer]
) -> Iterator[LiveServer]:
    """A live server on each backend (SQLite; a scratch PostgreSQL database), its artifacts in
    the test's directory; a test module's SERVER_LEASE_SECONDS sets its lease (default 60 s)."""
    lease_seconds = float(getattr(request.module, "SERVER_LEASE_SECONDS", 60.0))
    os.environ["VITCUBE_ARTIFACT_URL"] = str(tmp_path / "artifacts")
    try:
        if request.param == "sqlite":
            yield server_factory(lease_seconds=lease_seconds)
        else:
            with scratch_database(POSTGRES_ADMIN_URL, "vitcube_workers") as url:
                live = server_factory(lease_seconds=lease_seconds, database_url=url)
                yield live
                live.stop()  # before the database is dropped
    finally:
        del os.environ["VITCUBE_ARTIFACT_URL"]
