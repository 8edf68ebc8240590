"""Artifacts over the API on SQLite and PostgreSQL: checkpoints, weights, the lease's resume
point, retention, and who may do what."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.factories import (
    ADMIN,
    VIEWER,
    WORKER,
    artifact_files,
    create_search,
    lease_one,
    make_settings,
    report_body,
    wait_for,
)
from vitcube.contract import preprocessing
from vitcube.service.app import create_app
from vitcube.service.db import Database
from vitcube.service.tables import Trial

BINARY = {"Content-Type": "application/octet-stream"}


def _app(database_url: str, tmp_path: Path, **overrides: Any) -> TestClient:
    settings = make_settings(database_url, artifact_url=str(tmp_path / "store"), **overrides)
    return TestClient(create_app(settings))


@pytest.fixture
def client(database_url: str, tmp_path: Path) -> Iterator[TestClient]:
    with _app(database_url, tmp_path) as test_client:
        yield test_client


def _files(tmp_path: Path) -> list[Path]:
    return artifact_files(tmp_path / "store")


def _put(
    client: TestClient,
    lease: dict[str, Any],
    body: bytes,
    kind: str = "checkpoint",
    headers: dict[str, str] = WORKER,
    **params: Any,
) -> Any:
    return client.put(
        f"/api/trials/{lease['id']}/{kind}",
        params={"lease_id": lease["lease_id"], **params},
        content=body,
        headers={**headers, **BINARY},
    )


def _trial(client: TestClient, trial_id: int) -> dict[str, Any]:
    return dict(client.get(f"/api/trials/{trial_id}", headers=VIEWER).json())


def _search(client: TestClient, search_id: int) -> dict[str, Any]:
    return dict(client.get(f"/api/searches/{search_id}", headers=VIEWER).json())


def test_a_checkpoint_round_trips_and_a_new_one_replaces_it(
    client: TestClient, tmp_path: Path
) -> None:
    search = create_search(client)
    lease = lease_one(client)
    first = os.urandom(1_500_000)  # over the 1 MiB JSON body limit: uploads are exempt
    put = _put(client, lease, first, epoch=1, step=0)
    assert put.status_code == 200, put.text
    assert put.json() | {"created_at": None} == {
        "kind": "checkpoint", "trial_id": lease["id"], "search_id": search["id"],
        "bytes": len(first), "sha256": hashlib.sha256(first).hexdigest(), "epoch": 1, "step": 0,
        "attempt": 0, "created_at": None,
    }  # fmt: skip
    second = os.urandom(200_000)
    assert _put(client, lease, second, epoch=2, step=7).status_code == 200
    assert len(_files(tmp_path)) == 1  # the replaced object is gone
    got = client.get(f"/api/trials/{lease['id']}/checkpoint", headers=WORKER)
    assert got.status_code == 200 and got.content == second
    assert got.headers["content-type"] == "application/octet-stream"
    assert got.headers["content-length"] == str(len(second))
    assert (got.headers["x-vitcube-epoch"], got.headers["x-vitcube-step"]) == ("2", "7")
    assert got.headers["x-vitcube-sha256"] == hashlib.sha256(second).hexdigest()
    assert _trial(client, lease["id"])["checkpoint"] == {"epoch": 2, "step": 7, "bytes": 200_000}
    assert _search(client, search["id"])["artifact_bytes"] == len(second)
    listed = client.get(f"/api/searches/{search['id']}/artifacts", headers=VIEWER).json()
    assert listed["bytes"] == len(second) and [a["kind"] for a in listed["artifacts"]] == [
        "checkpoint"
    ]


def test_uploads_need_a_worker_token(client: TestClient, tmp_path: Path) -> None:
    create_search(client)
    lease = lease_one(client)
    assert _put(client, lease, b"x" * 100, headers={}, epoch=1).status_code == 401
    refused = _put(client, lease, b"x" * 100, headers=VIEWER, epoch=1)
    assert refused.status_code == 403
    assert _put(client, lease, b"x", "weights", headers=VIEWER).status_code == 403
    assert client.get(f"/api/trials/{lease['id']}/checkpoint", headers=VIEWER).status_code == 403
    assert _files(tmp_path) == [] and _trial(client, lease["id"])["checkpoint"] is None


def test_a_stale_lease_cannot_write_and_changes_nothing(database_url: str, tmp_path: Path) -> None:
    with _app(database_url, tmp_path, lease_seconds=0.3) as client:
        create_search(client, parallelism=1, max_trials=2)
        old = lease_one(client)
        new = lease_one(client, timeout_s=10)  # the sweeper re-queued it; another worker
        assert new["id"] == old["id"] and new["lease_id"] != old["lease_id"]
        assert _put(client, new, b"kept", epoch=1).status_code == 200
        for kind in ("checkpoint", "weights"):
            refused = _put(client, old, b"stale" * 1000, kind, epoch=2)
            assert refused.status_code == 409, refused.text
            assert "not the current lease" in refused.json()["detail"]
        gone = client.delete(
            f"/api/trials/{old['id']}/checkpoint",
            params={"lease_id": old["lease_id"], "reason": "x"},
            headers=WORKER,
        )
        assert gone.status_code == 409
        assert len(_files(tmp_path)) == 1
        got = client.get(f"/api/trials/{old['id']}/checkpoint", headers=WORKER)
        assert got.content == b"kept" and got.headers["x-vitcube-epoch"] == "1"


def test_an_upload_over_the_limit_is_413_and_stores_nothing(
    database_url: str, tmp_path: Path
) -> None:
    with _app(database_url, tmp_path, max_artifact_bytes=10_000) as client:
        create_search(client)
        lease = lease_one(client)
        refused = _put(client, lease, b"x" * 10_001, epoch=1)  # by Content-Length
        assert refused.status_code == 413 and "VITCUBE_MAX_ARTIFACT_BYTES" in refused.text

        def chunked() -> Iterator[bytes]:  # no Content-Length: refused while streaming
            for _ in range(3):
                yield b"y" * 5000

        streamed = client.put(
            f"/api/trials/{lease['id']}/weights",
            params={"lease_id": lease["lease_id"]},
            content=chunked(),
            headers={**WORKER, **BINARY},
        )
        assert streamed.status_code == 413, streamed.text
        assert _files(tmp_path) == []
        trial = _trial(client, lease["id"])
        assert trial["checkpoint"] is None and trial["weights_bytes"] is None
        assert _put(client, lease, b"z" * 10_000, epoch=1).status_code == 200  # at the limit


def test_a_re_leased_trial_is_told_its_checkpoint_and_completing_deletes_it(
    client: TestClient, tmp_path: Path
) -> None:
    create_search(client, parallelism=1)
    lease = lease_one(client)
    assert (lease["from_epoch"], lease["to_epoch"], lease["checkpoint"]) == (0, 3, None)
    blob = os.urandom(50_000)
    assert _put(client, lease, blob, epoch=2, step=5).status_code == 200
    failed = client.post(
        f"/api/trials/{lease['id']}/fail",
        json={"lease_id": lease["lease_id"], "error": "SIGTERM", "retry": True},
        headers=WORKER,
    )
    assert failed.json()["state"] == "queued"
    again = lease_one(client)
    assert again["id"] == lease["id"] and again["from_epoch"] == 2 and again["to_epoch"] == 3
    ref = again["checkpoint"]
    assert ref["url"] == f"/api/trials/{lease['id']}/checkpoint"
    assert (ref["epoch"], ref["step"], ref["bytes"], ref["attempt"]) == (2, 5, 50_000, 0)
    assert ref["sha256"] == hashlib.sha256(blob).hexdigest()
    assert client.get(ref["url"], headers=WORKER).content == blob
    weights = os.urandom(30_000)
    assert _put(client, again, weights, "weights").status_code == 200
    report = report_body(
        again, resumed_from_epoch=2, epochs_trained=1.0, latency_onnx_ms=1.25,
        latency_onnx_device="onnxruntime CPU",
    )  # fmt: skip
    done = client.post(f"/api/trials/{lease['id']}/complete", json=report, headers=WORKER)
    assert done.status_code == 200, done.text
    trial = _trial(client, lease["id"])
    assert trial["checkpoint"] is None and trial["weights_bytes"] == 30_000
    # epochs_trained: the epoch the trial's training reached (all 3); this attempt trained 1.
    assert (trial["resumed_from_epoch"], trial["epochs_trained"], trial["latency_onnx_ms"]) == (
        2, 3.0, 1.25,
    )  # fmt: skip
    assert trial["attempt_epochs_trained"] == 1.0
    missing = client.get(f"/api/trials/{lease['id']}/checkpoint", headers=WORKER)
    assert missing.status_code == 404 and "no checkpoint" in missing.json()["detail"]
    assert [p.name.split("-")[0] for p in _files(tmp_path)] == ["weights"]


def test_a_checkpoint_the_worker_cannot_load_is_discarded_with_its_reason(
    client: TestClient, tmp_path: Path
) -> None:
    create_search(client)
    lease = lease_one(client)
    assert _put(client, lease, b"truncated", epoch=3).status_code == 200
    reply = client.delete(
        f"/api/trials/{lease['id']}/checkpoint",
        params={"lease_id": lease["lease_id"], "reason": "unpickling failed: truncated"},
        headers=WORKER,
    )
    assert reply.status_code == 200 and reply.json()["deleted"] == 1
    assert _files(tmp_path) == [] and _trial(client, lease["id"])["checkpoint"] is None
    assert client.get(f"/api/trials/{lease['id']}/checkpoint", headers=WORKER).status_code == 404
    report = report_body(lease)
    client.post(f"/api/trials/{lease['id']}/complete", json=report, headers=WORKER)
    db: Database = client.app.state.db  # type: ignore[attr-defined]
    with db.session() as session:
        metrics = session.scalar(select(Trial.metrics).where(Trial.id == lease["id"]))
    # The reason is kept beside the report's extras once the trial completed.
    assert metrics["checkpoint_discarded"] == "unpickling failed: truncated"
    assert metrics["reported_macs"] == lease["macs"]


def test_weights_and_architecture_serve_any_viewer(client: TestClient) -> None:
    search = create_search(client)
    lease = lease_one(client)
    none_yet = client.get(f"/api/trials/{lease['id']}/weights", headers=VIEWER)
    assert none_yet.status_code == 404 and "no weights" in none_yet.json()["detail"]
    weights = os.urandom(40_000)
    assert _put(client, lease, weights, "weights").status_code == 200
    client.post(f"/api/trials/{lease['id']}/complete", json=report_body(lease), headers=WORKER)
    got = client.get(f"/api/trials/{lease['id']}/weights", headers=VIEWER)
    assert got.status_code == 200 and got.content == weights
    assert got.headers["content-disposition"] == (
        f'attachment; filename="vitcube-trial-{lease["id"]}-weights.pt"'
    )
    assert got.headers["x-vitcube-sha256"] == hashlib.sha256(weights).hexdigest()
    arch = client.get(f"/api/trials/{lease['id']}/architecture", headers=VIEWER).json()
    trial = _trial(client, lease["id"])
    assert arch == {
        "trial_id": lease["id"], "search_id": search["id"], "arch": lease["arch"],
        "resolution": trial["resolution"], "macs": lease["macs"], "params": lease["params"],
        "num_classes": 10, "dataset": "digits",
        "preprocessing": preprocessing("digits", trial["resolution"]), "top1": 0.8,
    }  # fmt: skip
    assert client.get(f"/api/trials/{lease['id']}/weights").status_code == 401
    assert client.get("/api/trials/999999/architecture", headers=VIEWER).status_code == 404


def test_retention_keeps_the_front_and_the_best_k_when_a_search_completes(
    database_url: str, tmp_path: Path
) -> None:
    with _app(database_url, tmp_path, keep_weights=2) as client:
        search = create_search(client, parallelism=2, max_trials=5)
        top1: dict[int, float] = {}
        for n in range(5):
            lease = lease_one(client)
            # Accuracy falls with MACs except for the last trial: the front is the smallest
            # network plus whatever beats it; the best 2 by top-1 are kept too.
            top1[lease["id"]] = 0.95 if n == 4 else round(0.9 - lease["macs"] / 1e10, 6)
            assert _put(client, lease, os.urandom(1000 + n), "weights").status_code == 200
            assert _put(client, lease, b"ckpt", epoch=1).status_code == 200
            body = report_body(lease, top1=top1[lease["id"]])
            ok = client.post(f"/api/trials/{lease['id']}/complete", json=body, headers=WORKER)
            assert ok.status_code == 200
        wait_for(lambda: _search(client, search["id"])["state"] == "completed")
        front = {
            t["id"]
            for t in client.get(f"/api/searches/{search['id']}/pareto", headers=VIEWER).json()
        }
        best = set(sorted(top1, key=lambda i: -top1[i])[:2])
        keep = front | best

        def held() -> set[int]:
            listed = client.get(f"/api/searches/{search['id']}/artifacts", headers=VIEWER).json()
            assert all(a["kind"] == "weights" for a in listed["artifacts"])
            return {a["trial_id"] for a in listed["artifacts"]}

        wait_for(lambda: held() == keep)  # retention runs right after the completing commit
        assert len(keep) < 5 and len(_files(tmp_path)) == len(keep)
        for trial_id in top1:
            reply = client.get(f"/api/trials/{trial_id}/weights", headers=VIEWER)
            assert reply.status_code == (200 if trial_id in keep else 404)
            assert (_trial(client, trial_id)["weights_bytes"] is not None) == (trial_id in keep)


def test_stopping_a_search_drops_its_checkpoints_and_an_admin_can_drop_everything(
    client: TestClient, tmp_path: Path
) -> None:
    search = create_search(client)
    done, running = lease_one(client), lease_one(client)
    assert _put(client, done, b"w" * 300, "weights").status_code == 200
    client.post(f"/api/trials/{done['id']}/complete", json=report_body(done), headers=WORKER)
    assert _put(client, running, b"c" * 500, epoch=1).status_code == 200
    assert _search(client, search["id"])["artifact_bytes"] == 800
    stop = client.post(f"/api/searches/{search['id']}/stop", headers=ADMIN)
    assert stop.status_code == 200 and stop.json()["artifact_bytes"] == 300
    assert _trial(client, running["id"])["checkpoint"] is None  # the best trial keeps weights
    url = f"/api/searches/{search['id']}/artifacts"
    assert client.delete(url, headers=VIEWER).status_code == 403
    assert client.delete(url, headers=WORKER).status_code == 403
    assert client.delete(url, headers=ADMIN).json() == {"deleted": 1, "bytes": 300}
    assert _search(client, search["id"])["artifact_bytes"] == 0 and _files(tmp_path) == []
    assert client.get(f"/api/trials/{done['id']}/weights", headers=VIEWER).status_code == 404
    assert client.delete("/api/searches/999999/artifacts", headers=ADMIN).status_code == 404
