"""End to end over real HTTP: a worker that is nothing but an httpx client, on both databases.

lease → heartbeat per epoch → complete, until the search completes; plus a search planned by
the `gp` strategy, so the Bayesian-optimisation path runs under the real server too.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from tests.factories import (
    ADMIN,
    VIEWER,
    WORKER,
    search_body,
    surrogate_top1,
    wait_for,
)
from tests.service.conftest import LiveServer


def _run_worker(client: httpx.Client, name: str, epochs: int = 3) -> list[int]:
    """A complete worker: lease until the server has nothing left, train (pretend), report."""
    done: list[int] = []
    idle_since = time.monotonic()
    while time.monotonic() - idle_since < 60:  # the gp planner may think for a while
        response = client.post("/api/trials/lease", json={"worker": name}, headers=WORKER)
        if response.status_code == 204:
            searches = client.get("/api/searches", headers=VIEWER).json()
            if all(s["state"] != "running" for s in searches):
                return done
            time.sleep(0.05)
            continue
        idle_since = time.monotonic()
        response.raise_for_status()
        lease: dict[str, Any] = response.json()
        top1 = surrogate_top1(lease["effective_factors"])
        curve = []
        for epoch in range(epochs):
            point = {"epoch": epoch, "val_top1": top1 * (epoch + 1) / epochs, "train_loss": 1.0}
            curve.append(point)
            beat = client.post(
                f"/api/trials/{lease['id']}/heartbeat",
                json={"lease_id": lease["lease_id"], "epoch": epoch, "metrics": point},
                headers=WORKER,
            )
            beat.raise_for_status()
            assert beat.json()["action"] == "continue"
        report = {
            "lease_id": lease["lease_id"],
            "top1": top1,
            "top5": 1.0,
            "params": lease["params"],
            "macs": lease["macs"],
            "latency_ms": 1.0,
            "surrogate": True,
            "curve": curve,
        }
        client.post(f"/api/trials/{lease['id']}/complete", json=report, headers=WORKER)
        done.append(lease["id"])
    raise AssertionError("the server kept answering 204 while a search was running")


def test_an_httpx_worker_runs_a_search_to_completion(live_server: LiveServer) -> None:
    with httpx.Client(base_url=live_server.url, timeout=30) as client:
        created = client.post(
            "/api/searches", json=search_body(max_trials=6, parallelism=2), headers=ADMIN
        )
        assert created.status_code == 201
        search_id = created.json()["id"]
        done = _run_worker(client, "httpx-worker")
        assert len(done) == 6 == len(set(done))
        search = client.get(f"/api/searches/{search_id}", headers=VIEWER).json()
        assert search["state"] == "completed"
        assert search["counts"]["completed"] == 6
        trials = client.get(f"/api/searches/{search_id}/trials", headers=VIEWER).json()
        assert all(len(t["curve"]) == 3 for t in trials)
        assert search["best"]["top1"] == max(t["top1"] for t in trials)


def test_the_gp_strategy_plans_under_the_real_server(live_server: LiveServer) -> None:
    with httpx.Client(base_url=live_server.url, timeout=60) as client:
        body = search_body(strategy="gp", max_trials=8, parallelism=2, name="gp")
        search_id = client.post("/api/searches", json=body, headers=ADMIN).json()["id"]
        done = _run_worker(client, "gp-worker", epochs=1)
        assert len(done) == 8
        trials = client.get(f"/api/searches/{search_id}/trials", headers=VIEWER).json()
        kinds = [t["kind"] for t in trials]
        assert kinds[:2] == ["reference:width_only", "reference:compound"]
        assert kinds.count("search") == 6
        keys = {tuple(sorted(t["effective_factors"].items())) for t in trials}
        assert len(keys) == 8  # no network trained twice
        search = wait_for(
            lambda: (
                (s := client.get(f"/api/searches/{search_id}", headers=VIEWER).json())["state"]
                == "completed"
                and s
            )
        )
        assert all(t["macs"] <= search["max_macs"] for t in trials)
