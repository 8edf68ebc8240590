"""Fail fast on SQLite and PostgreSQL: a search whose trials keep failing the same way pauses.

Over the API as a worker and an admin would see it: three non-retryable failures with one
error pause the search with that error as its reason, nothing more is leased, an admin resumes
it; retryable failures, different errors and a completion in between do not pause it.
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.factories import ADMIN, VIEWER, WORKER, create_search, lease_one, report_body
from vitcube.service.failfast import error_signature

MISSING = "dataset cifar10: /data/cifar-10-batches-py not found; set --data-root"


def _fail(client: TestClient, lease: dict[str, Any], error: str, *, retry: bool) -> None:
    reply = client.post(
        f"/api/trials/{lease['id']}/fail",
        json={"lease_id": lease["lease_id"], "error": error, "retry": retry},
        headers=WORKER,
    )
    assert reply.status_code == 200, reply.text


def _search(client: TestClient, search_id: int) -> dict[str, Any]:
    return dict(client.get(f"/api/searches/{search_id}", headers=VIEWER).json())


def _lease_status(client: TestClient) -> int:
    return client.post("/api/trials/lease", json={"worker": "w"}, headers=WORKER).status_code


def test_three_identical_failures_pause_the_search_and_an_admin_resumes_it(
    client: TestClient,
) -> None:
    search = create_search(client, max_trials=20, parallelism=4)
    for _ in range(3):
        _fail(client, lease_one(client), MISSING, retry=False)
    paused = _search(client, search["id"])
    assert paused["state"] == "paused"
    assert MISSING in paused["error"] and "resume" in paused["error"]
    assert paused["counts"]["failed"] == 3
    # nothing more is leased or planned while it is paused, though trials are still queued
    assert _lease_status(client) == 204
    assert paused["counts"]["queued"] >= 1
    assert _search(client, search["id"])["counts"]["failed"] == 3

    # only an admin may resume, and only a paused (or failed) search
    assert client.post(f"/api/searches/{search['id']}/resume", headers=VIEWER).status_code == 403
    resumed = client.post(f"/api/searches/{search['id']}/resume", headers=ADMIN)
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["state"] == "running" and resumed.json()["error"] is None
    again = client.post(f"/api/searches/{search['id']}/resume", headers=ADMIN)
    assert again.status_code == 409 and "running" in again.json()["detail"]

    # the failures before the resume no longer count: one more is not a run of three
    _fail(client, lease_one(client), MISSING, retry=False)
    assert _search(client, search["id"])["state"] == "running"
    lease = lease_one(client)
    complete = client.post(
        f"/api/trials/{lease['id']}/complete", json=report_body(lease), headers=WORKER
    )
    assert complete.status_code == 200, complete.text


def test_the_search_page_says_why_it_is_paused_and_offers_resume(client: TestClient) -> None:
    search = create_search(client, max_trials=20, parallelism=4)
    for _ in range(3):
        _fail(client, lease_one(client), MISSING, retry=False)
    page = client.get(f"/searches/{search['id']}", headers=ADMIN)
    assert page.status_code == 200
    html = page.text
    alert = html[html.index('id="search-alert"') :].split("</div>", 1)[0]
    assert "hidden" not in alert.split(">", 1)[0]
    assert "This search is paused." in alert and MISSING in alert
    resume = html[html.index('id="resume-button"') :].split(">", 1)[0]
    assert "hidden" not in resume


def test_retryable_failures_do_not_count(client: TestClient) -> None:
    search = create_search(client, max_trials=20, parallelism=4)
    for _ in range(4):
        _fail(client, lease_one(client), "worker interrupted (SIGTERM)", retry=True)
    assert _search(client, search["id"])["state"] == "running"
    # ... nor do they break a run of non-retryable failures
    _fail(client, lease_one(client), MISSING, retry=False)
    _fail(client, lease_one(client), MISSING, retry=False)
    _fail(client, lease_one(client), "worker interrupted (SIGTERM)", retry=True)
    _fail(client, lease_one(client), MISSING, retry=False)
    assert _search(client, search["id"])["state"] == "paused"


@pytest.mark.parametrize("interruption", ["different error", "completion"])
def test_a_different_error_or_a_completion_breaks_the_run(
    client: TestClient, interruption: str
) -> None:
    search = create_search(client, max_trials=20, parallelism=4)
    _fail(client, lease_one(client), MISSING, retry=False)
    _fail(client, lease_one(client), MISSING, retry=False)
    lease = lease_one(client)
    if interruption == "completion":
        reply = client.post(
            f"/api/trials/{lease['id']}/complete", json=report_body(lease), headers=WORKER
        )
        assert reply.status_code == 200, reply.text
    else:
        _fail(client, lease, "ValueError: training.lr must be in (0, 10)", retry=False)
    _fail(client, lease_one(client), MISSING, retry=False)
    _fail(client, lease_one(client), MISSING, retry=False)
    assert _search(client, search["id"])["state"] == "running"
    _fail(client, lease_one(client), MISSING, retry=False)
    assert _search(client, search["id"])["state"] == "paused"


def test_a_paused_search_can_be_stopped(client: TestClient) -> None:
    search = create_search(client, max_trials=20, parallelism=4)
    for _ in range(3):
        _fail(client, lease_one(client), MISSING, retry=False)
    assert _search(client, search["id"])["state"] == "paused"
    stopped = client.post(f"/api/searches/{search['id']}/stop", headers=ADMIN)
    assert stopped.status_code == 200, stopped.text
    assert stopped.json()["state"] == "stopped"
    assert stopped.json()["counts"]["queued"] == 0


def test_the_same_error_is_the_same_first_line_whatever_its_numbers() -> None:
    oom = "CUDA out of memory. Tried to allocate {} GiB (GPU 0; 79.3 GiB total)\nTraceback …"
    assert error_signature(oom.format("2.31")) == error_signature(oom.format("1.07"))
    assert error_signature("ImportError: no module x") != error_signature("KeyError: 'x'")
    assert error_signature(None) == error_signature("") == ""
