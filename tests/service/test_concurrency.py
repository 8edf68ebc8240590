"""PostgreSQL under concurrency: many workers leasing at once, two server processes planning.

Leasing uses FOR UPDATE SKIP LOCKED; planning a search takes an advisory transaction lock.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.factories import (
    ADMIN,
    ADMIN_TOKEN,
    VIEWER,
    VIEWER_TOKEN,
    WORKER,
    WORKER_TOKEN,
    make_settings,
    search_body,
    wait_for,
)
from tests.service.conftest import LiveServer, empty_tables, free_port

THREADS = 24


@pytest.fixture
def pg_url(postgres_url: str) -> str:
    empty_tables(postgres_url)
    return postgres_url


def test_concurrent_workers_never_share_a_trial(pg_url: str) -> None:
    trials = 60
    with LiveServer(make_settings(pg_url, pool_size=10, max_overflow=30)) as server:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            body = search_body(max_trials=trials, parallelism=trials)
            search_id = client.post("/api/searches", json=body, headers=ADMIN).json()["id"]
            wait_for(
                lambda: (
                    client.get(f"/api/searches/{search_id}", headers=VIEWER).json()["counts"][
                        "queued"
                    ]
                    == trials
                ),
                timeout_s=60,
            )
        leased: list[int] = []
        lock = threading.Lock()
        start = threading.Barrier(THREADS)

        def worker(n: int) -> None:
            with httpx.Client(base_url=server.url, timeout=30) as http:
                start.wait()
                while True:
                    response = http.post(
                        "/api/trials/lease", json={"worker": f"w{n}"}, headers=WORKER
                    )
                    if response.status_code == 204:
                        return
                    assert response.status_code == 200, response.text
                    with lock:
                        leased.append(response.json()["id"])

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        duplicates = [i for i, n in Counter(leased).items() if n > 1]
        assert duplicates == []
        assert len(leased) == trials


@pytest.fixture
def two_servers(pg_url: str, tmp_path: Any) -> Iterator[list[str]]:
    """Two real `vitcube serve` processes on one PostgreSQL database."""
    env = {
        **os.environ,
        "VITCUBE_DATABASE_URL": pg_url,
        "VITCUBE_ADMIN_TOKEN": ADMIN_TOKEN,
        "VITCUBE_WORKER_TOKEN": WORKER_TOKEN,
        "VITCUBE_VIEWER_TOKEN": VIEWER_TOKEN,
        "VITCUBE_PLANNER_INTERVAL_S": "0.05",
    }
    ports = [free_port(), free_port()]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "vitcube",
                "serve",
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            env=env,
            stdout=(tmp_path / f"serve-{port}.log").open("w"),
            stderr=subprocess.STDOUT,
        )
        for port in ports
    ]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    try:
        for url, proc in zip(urls, procs, strict=True):
            deadline = time.monotonic() + 90
            while True:
                assert proc.poll() is None, (tmp_path / f"serve-{url[-5:]}.log").read_text()
                try:
                    if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, "vitcube serve did not come up"
                time.sleep(0.2)
        yield urls
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)


def test_two_server_processes_never_plan_a_search_twice(two_servers: list[str]) -> None:
    clients = [httpx.Client(base_url=url, timeout=30) for url in two_servers]
    try:
        body = search_body(max_trials=12, parallelism=4)
        search_id = clients[0].post("/api/searches", json=body, headers=ADMIN).json()["id"]
        active_seen: list[int] = []
        done = 0
        turn = 0
        deadline = time.monotonic() + 120
        while done < 12:
            assert time.monotonic() < deadline, "search did not finish"
            client = clients[turn % 2]  # alternate: both processes serve and plan
            turn += 1
            counts = client.get(f"/api/searches/{search_id}", headers=VIEWER).json()["counts"]
            active_seen.append(counts["queued"] + counts["running"])
            response = client.post("/api/trials/lease", json={"worker": "w"}, headers=WORKER)
            if response.status_code == 204:
                time.sleep(0.05)
                continue
            lease = response.json()
            report = {"lease_id": lease["lease_id"], "top1": 0.5, "surrogate": True}
            other = clients[turn % 2]
            assert (
                other.post(
                    f"/api/trials/{lease['id']}/complete", json=report, headers=WORKER
                ).status_code
                == 200
            )
            done += 1
        trials = clients[1].get(f"/api/searches/{search_id}/trials", headers=VIEWER).json()
        assert len(trials) == 12  # not one more than max_trials
        assert len({tuple(sorted(t["effective_factors"].items())) for t in trials}) == 12
        assert max(active_seen) <= 4  # parallelism held across both planners
        state = wait_for(
            lambda: (
                clients[0].get(f"/api/searches/{search_id}", headers=VIEWER).json()["state"]
                == "completed"
            ),
            timeout_s=30,
        )
        assert state
    finally:
        for client in clients:
            client.close()


def test_asha_promotes_each_trial_once_under_concurrent_workers_and_two_planners(
    two_servers: list[str],
) -> None:
    """Eight workers on two server processes, each planning (promoting) under its advisory
    lock: every segment of every trial is leased exactly once, promotions climb one rung at a
    time, and the search ends with its rungs accounted for."""
    epochs, workers = 4, 8
    body = search_body(
        max_trials=24,
        parallelism=6,
        training={"epochs": epochs, "batch_size": 16},
        schedule={"kind": "asha", "min_epochs": 1, "eta": 2},
    )
    with httpx.Client(base_url=two_servers[0], timeout=30) as admin:
        search_id = admin.post("/api/searches", json=body, headers=ADMIN).json()["id"]
    segments: list[tuple[int, int, int]] = []  # (trial, from_epoch, to_epoch)
    lock = threading.Lock()
    errors: list[str] = []

    def worker(n: int) -> None:
        with httpx.Client(base_url=two_servers[n % 2], timeout=30) as http:
            # A safety net only: a worker leaves when the search is over. The servers' first
            # planning pass imports torch, which takes a while on a busy box.
            idle_since = time.monotonic()
            while time.monotonic() - idle_since < 90:
                response = http.post("/api/trials/lease", json={"worker": f"w{n}"}, headers=WORKER)
                if response.status_code == 204:
                    state = http.get(f"/api/searches/{search_id}", headers=VIEWER).json()["state"]
                    if state != "running":
                        return
                    time.sleep(0.02)
                    continue
                idle_since = time.monotonic()
                lease = response.json()
                with lock:
                    segments.append((lease["id"], lease["from_epoch"], lease["to_epoch"]))
                # Results that cross between rungs, a function of the trial and its segment.
                top1 = round(0.2 + 0.7 * ((lease["id"] * 37 + lease["to_epoch"] * 11) % 97) / 97, 6)
                report = {"lease_id": lease["lease_id"], "top1": top1, "surrogate": True}
                done = http.post(f"/api/trials/{lease['id']}/complete", json=report, headers=WORKER)
                if done.status_code != 200:
                    with lock:
                        errors.append(done.text)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)
    assert errors == []
    keys = [(trial, to) for trial, _, to in segments]
    assert [k for k, n in Counter(keys).items() if n > 1] == []  # each segment leased once
    by_trial: dict[int, list[int]] = {}
    for trial, _, to in segments:
        by_trial.setdefault(trial, []).append(to)
    rungs = [1, 2, 4]
    for trial, ends in by_trial.items():
        assert ends in ([4], rungs[:1], rungs[:2], rungs), (trial, ends)  # one rung at a time
    with httpx.Client(base_url=two_servers[1], timeout=30) as http:
        search = wait_for(
            lambda: (
                found
                if (found := http.get(f"/api/searches/{search_id}", headers=VIEWER).json())["state"]
                == "completed"
                else None
            ),
            timeout_s=30,
        )
    assert search["counts"]["paused"] > 0
    assert sum(search["counts"].values()) == 24
    promoted = sum(len(ends) - 1 for ends in by_trial.values())
    assert promoted == sum(r["promoted"] for r in search["rungs"]) > 0
    assert search["epochs_trained"] == sum(max(ends) for ends in by_trial.values())
