"""The worker protocol on SQLite and PostgreSQL: lease, heartbeat, complete, fail, expiry."""

from __future__ import annotations

import time
from typing import Any

from fastapi.testclient import TestClient

from tests.factories import (
    ADMIN,
    VIEWER,
    WORKER,
    command_trainer,
    create_search,
    curve,
    heartbeat_body,
    lease_one,
    make_settings,
    report_body,
    wait_for,
)
from vitcube.service.app import create_app


def _trial(client: TestClient, trial_id: int) -> dict[str, Any]:
    return dict(client.get(f"/api/trials/{trial_id}", headers=VIEWER).json())


def test_lease_hands_out_the_oldest_queued_trial_with_everything_a_worker_needs(
    client: TestClient,
) -> None:
    search = create_search(client)
    lease = lease_one(client, worker="box-1:cuda0")
    assert lease["search_id"] == search["id"]
    assert lease["kind"] == "reference:width_only"  # queued first
    assert set(lease) >= {
        "id", "lease_id", "search_id", "factors", "arch", "dataset", "training", "seed",
        "lease_expires_at",
    }  # fmt: skip
    assert lease["dataset"] == {"name": "digits", "num_classes": 10}
    assert lease["training"]["epochs"] == 3
    trial = _trial(client, lease["id"])
    assert trial["state"] == "running" and trial["worker"] == "box-1:cuda0"


def test_a_boolean_where_a_number_is_meant_is_422_and_changes_nothing(client: TestClient) -> None:
    create_search(client)
    lease = lease_one(client)
    point = {"epoch": 1, "val_top1": 0.5, "epoch_time_s": True}
    bad = report_body(lease, curve=[point])
    refused = client.post(f"/api/trials/{lease['id']}/complete", json=bad, headers=WORKER)
    assert refused.status_code == 422, refused.text
    assert refused.json()["detail"][0]["loc"] == ["body", "curve", 0, "epoch_time_s"]
    beat = heartbeat_body(lease, 1, train_loss=True)
    assert (
        client.post(f"/api/trials/{lease['id']}/heartbeat", json=beat, headers=WORKER).status_code
        == 422
    )
    assert _trial(client, lease["id"])["state"] == "running"
    # A JSON integer where a float is meant is a number: accepted.
    good = report_body(lease, curve=[{**point, "epoch_time_s": 3}])
    done = client.post(f"/api/trials/{lease['id']}/complete", json=good, headers=WORKER)
    assert done.status_code == 200, done.text
    assert _trial(client, lease["id"])["state"] == "completed"


def test_nothing_queued_is_204(client: TestClient) -> None:
    response = client.post("/api/trials/lease", json={"worker": "w"}, headers=WORKER)
    assert response.status_code == 204


def test_heartbeat_extends_the_lease_and_records_the_curve(client: TestClient) -> None:
    create_search(client)
    lease = lease_one(client)
    time.sleep(0.05)
    reply = client.post(
        f"/api/trials/{lease['id']}/heartbeat",
        json=heartbeat_body(lease, 1, val_top1=0.5, train_loss=1.2, lr=0.001),
        headers=WORKER,
    )
    assert reply.status_code == 200
    assert reply.json()["action"] == "continue"
    assert reply.json()["lease_expires_at"] > lease["lease_expires_at"]
    trial = _trial(client, lease["id"])
    assert trial["curve"] == [
        {"epoch": 1, "val_top1": 0.5, "val_top5": None, "train_loss": 1.2, "lr": 0.001}
    ]


def test_complete_is_idempotent_and_a_different_report_conflicts(client: TestClient) -> None:
    create_search(client)
    lease = lease_one(client)
    body = report_body(lease, top1=0.83)
    first = client.post(f"/api/trials/{lease['id']}/complete", json=body, headers=WORKER)
    assert first.status_code == 200, first.text
    again = client.post(f"/api/trials/{lease['id']}/complete", json=body, headers=WORKER)
    assert again.status_code == 200 and again.json() == first.json()
    other = client.post(
        f"/api/trials/{lease['id']}/complete", json={**body, "top1": 0.5}, headers=WORKER
    )
    assert other.status_code == 409
    trial = _trial(client, lease["id"])
    assert trial["state"] == "completed" and trial["top1"] == 0.83
    assert [p["epoch"] for p in trial["curve"]] == [0, 1, 2]
    assert trial["surrogate"] is True


def test_stale_lease_gets_409_and_changes_nothing(client: TestClient) -> None:
    create_search(client)
    lease = lease_one(client)
    stale = {**lease, "lease_id": "not-the-lease"}
    before = _trial(client, lease["id"])
    for path, body in (
        ("heartbeat", heartbeat_body(stale, 0, val_top1=0.1)),
        ("complete", report_body(stale)),
        ("fail", {"lease_id": "not-the-lease", "error": "x", "retry": True}),
    ):
        response = client.post(f"/api/trials/{lease['id']}/{path}", json=body, headers=WORKER)
        assert response.status_code == 409, (path, response.text)
        assert "lease" in response.json()["detail"]
    assert _trial(client, lease["id"]) == before


def test_bad_reports_are_422(client: TestClient) -> None:
    create_search(client)
    lease = lease_one(client)
    url = f"/api/trials/{lease['id']}/complete"
    nan = b'{"lease_id": "%s", "top1": NaN}' % lease["lease_id"].encode()
    headers = {**WORKER, "content-type": "application/json"}
    assert client.post(url, content=nan, headers=headers).status_code == 422
    for bad in (
        report_body(lease, top1=1.5),
        report_body(lease, top1=-0.1),
        {**report_body(lease), "unknown_field": 1},
        # A curve point may carry any further metric, but only as a number.
        report_body(lease, curve=[{"epoch": 0, "val_top1": 0.5, "mystery": "high"}]),
        report_body(lease, curve=[{"epoch": 0, "val_top1": 0.5, "mystery": True}]),
        report_body(lease, latency_ms=-1),
    ):
        response = client.post(url, json=bad, headers=WORKER)
        assert response.status_code == 422, bad
    assert _trial(client, lease["id"])["state"] == "running"


def test_fail_with_retry_queues_again_until_max_attempts(client: TestClient) -> None:
    create_search(client, parallelism=1, max_trials=2)
    lease = lease_one(client)
    for attempt in (1, 2):
        reply = client.post(
            f"/api/trials/{lease['id']}/fail",
            json={"lease_id": lease["lease_id"], "error": "CUDA OOM", "retry": True},
            headers=WORKER,
        )
        assert reply.json() == {
            "id": lease["id"],
            "search_id": lease["search_id"],
            "state": "queued",
            "attempts": attempt,
        }
        lease = lease_one(client)
        assert lease["id"] == reply.json()["id"] and lease["attempts"] == attempt
    last = client.post(
        f"/api/trials/{lease['id']}/fail",
        json={"lease_id": lease["lease_id"], "error": "CUDA OOM", "retry": True},
        headers=WORKER,
    )
    assert last.json()["state"] == "failed"  # max_attempts = 3
    assert _trial(client, lease["id"])["error"] == "CUDA OOM"


def test_an_expired_lease_is_reclaimed_and_its_old_holder_refused(database_url: str) -> None:
    settings = make_settings(database_url, lease_seconds=0.3, max_attempts=2)
    with TestClient(create_app(settings)) as client:
        create_search(client, parallelism=1, max_trials=2)
        old = lease_one(client)
        new = lease_one(client, timeout_s=10)  # the sweeper queues it again; another worker
        assert new["id"] == old["id"]
        assert new["lease_id"] != old["lease_id"] and new["attempts"] == 1
        refused = client.post(
            f"/api/trials/{old['id']}/complete", json=report_body(old), headers=WORKER
        )
        assert refused.status_code == 409
        # The second expiry uses up max_attempts = 2: failed.
        wait_for(lambda: _trial(client, old["id"])["state"] == "failed", 10)
        assert "lease expired" in _trial(client, old["id"])["error"]


def test_search_completes_after_max_trials(client: TestClient) -> None:
    search = create_search(client, parallelism=2, max_trials=4)
    for _ in range(4):
        lease = lease_one(client)
        response = client.post(
            f"/api/trials/{lease['id']}/complete", json=report_body(lease), headers=WORKER
        )
        assert response.status_code == 200
    done = wait_for(
        lambda: (
            (s := client.get(f"/api/searches/{search['id']}", headers=VIEWER).json())["state"]
            == "completed"
            and s
        )
    )
    assert done["counts"]["completed"] == 4
    assert done["best"]["top1"] == 0.8
    assert client.post("/api/trials/lease", json={"worker": "w"}, headers=WORKER).status_code == 204


def test_median_rule_stops_a_hopeless_trial(database_url: str) -> None:
    settings = make_settings(database_url, median_stop_min_trials=2, median_stop_warmup_epochs=1)
    with TestClient(create_app(settings)) as client:
        create_search(client, parallelism=2, max_trials=6)
        for top1 in (0.9, 0.9, 0.9):  # two references and one search trial complete well
            lease = lease_one(client)
            body = report_body(lease, top1=top1, curve=curve(3, top1))
            client.post(f"/api/trials/{lease['id']}/complete", json=body, headers=WORKER)
        lease, other = lease_one(client), lease_one(client)
        assert lease["kind"] == other["kind"] == "search"
        good = client.post(
            f"/api/trials/{lease['id']}/heartbeat",
            json=heartbeat_body(lease, 1, val_top1=0.95),
            headers=WORKER,
        )
        assert good.json()["action"] == "continue"
        bad = client.post(
            f"/api/trials/{lease['id']}/heartbeat",
            json=heartbeat_body(lease, 2, val_top1=0.1),
            headers=WORKER,
        )
        assert bad.json()["action"] == "continue"  # its best so far (0.95) is still fine
        lease = other
        hopeless = client.post(
            f"/api/trials/{lease['id']}/heartbeat",
            json=heartbeat_body(lease, 1, val_top1=0.05),
            headers=WORKER,
        )
        assert hopeless.json()["action"] == "stop"
        assert "median" in hopeless.json()["reason"]
        assert _trial(client, lease["id"])["state"] == "stopped"


def test_leasing_is_fair_across_searches(client: TestClient) -> None:
    first = create_search(client, name="first", parallelism=4, max_trials=8)
    wait_for(lambda: len(client.get(f"/api/searches/{first['id']}/trials", headers=VIEWER).json())
             == 4)  # fmt: skip
    second = create_search(client, name="second", parallelism=4, max_trials=8, seed=2)
    wait_for(lambda: len(client.get(f"/api/searches/{second['id']}/trials", headers=VIEWER).json())
             == 4)  # fmt: skip
    leased = [lease_one(client)["search_id"] for _ in range(4)]
    # The older search does not starve the newer one: two each.
    assert sorted(leased) == sorted([first["id"], first["id"], second["id"], second["id"]])


def test_workers_are_listed(client: TestClient) -> None:
    create_search(client)
    lease = lease_one(client, worker="box-7:cuda1")
    workers = client.get("/api/workers", headers=VIEWER).json()
    assert workers == [
        {
            "worker": "box-7:cuda1",
            "running": 1,
            "completed": 0,
            "failed": 0,
            "last_seen_at": workers[0]["last_seen_at"],
            "running_trials": [lease["id"]],
            "trainers": ["builtin"],
        }
    ]
    assert client.get("/api/workers", headers=ADMIN).status_code == 200


def test_a_lease_goes_only_to_a_worker_that_names_the_searchs_trainer(client: TestClient) -> None:
    command = create_search(client, name="det", **command_trainer("det-v2"))
    builtin = create_search(client, name="classic")
    # A body of only {"worker"} is a builtin-only worker, as before trainers existed.
    assert lease_one(client, worker="old-box")["search_id"] == builtin["id"]
    lease = lease_one(client, worker="det-box", trainers=["command:det-v2"])
    assert lease["search_id"] == command["id"]
    assert lease["trainer"] == {"kind": "command", "name": "det-v2"}
    assert lease["metric"] == {"name": "val_map", "goal": "maximize"}
    assert lease["dataset"] == command_trainer()["dataset"]  # untouched, for the script
    for _ in range(3):  # another label's worker gets nothing of it
        other = client.post(
            "/api/trials/lease",
            json={"worker": "seg-box", "trainers": ["command:seg"]},
            headers=WORKER,
        )
        assert other.status_code == 204, other.text
    listed = {w["worker"]: w for w in client.get("/api/workers", headers=VIEWER).json()}
    assert listed["det-box"]["trainers"] == ["command:det-v2"]
    assert listed["det-box"]["running_trials"] == [lease["id"]]
    assert listed["seg-box"]["trainers"] == ["command:seg"]  # seen, though it got nothing
    assert (listed["seg-box"]["running"], listed["seg-box"]["last_seen_at"] is not None) == (
        0,
        True,
    )
    assert listed["old-box"]["trainers"] == ["builtin"]


def test_a_lease_body_with_a_malformed_trainer_label_is_422(client: TestClient) -> None:
    for trainers in (["docker:det"], ["command:"], [], ["command:has space"]):
        body = {"worker": "w", "trainers": trainers}
        refused = client.post("/api/trials/lease", json=body, headers=WORKER)
        assert refused.status_code == 422, (trainers, refused.text)
        assert refused.json()["detail"][0]["loc"][:2] == ["body", "trainers"]
    assert client.get("/api/workers", headers=VIEWER).json() == []  # nothing recorded
