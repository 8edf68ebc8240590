"""The views a dashboard reads at scale, on SQLite and PostgreSQL: the compact trials view and its
`since` cursor, paged /trials, /curves, and analyses stored in the database (served by another
replica, or a restarted server, without a fit)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import update

from tests.factories import (
    VIEWER,
    WORKER,
    create_search,
    lease_one,
    make_settings,
    queued,
    report_body,
    wait_for,
)
from vitcube.service.app import create_app
from vitcube.service.schemas import COMPACT_COLUMNS
from vitcube.service.tables import SearchAnalysis, Trial, utcnow


def _complete(client: TestClient, n: int) -> list[dict[str, Any]]:
    done = []
    for i in range(n):
        lease = lease_one(client)
        body = report_body(lease, top1=0.5 + 0.03 * i)
        reply = client.post(f"/api/trials/{lease['id']}/complete", json=body, headers=WORKER)
        assert reply.status_code == 200, reply.text
        done.append(lease)
    return done


def _age_every_trial(client: TestClient, search_id: int, hours: float = 1.0) -> None:
    """As if every trial of the search had last changed an hour ago."""
    with client.app.state.db.session(write=True) as session:  # type: ignore[attr-defined]
        session.execute(
            update(Trial)
            .where(Trial.search_id == search_id)
            .values(updated_at=utcnow() - timedelta(hours=hours))
        )


def test_the_compact_view_has_every_trial_and_since_only_those_that_changed(
    client: TestClient,
) -> None:
    search = create_search(client, parallelism=3, max_trials=12)
    base = f"/api/searches/{search['id']}"
    _complete(client, 3)
    # Three completed and three queued in their place, once the planner has topped it up.
    wait_for(lambda: len(client.get(f"{base}/trials", headers=VIEWER).json()) == 6)
    full = client.get(f"{base}/trials/compact", headers=VIEWER).json()
    trials = client.get(f"{base}/trials", headers=VIEWER).json()
    assert full["columns"] == list(COMPACT_COLUMNS) and full["since"] is None
    assert [row[0] for row in full["rows"]] == [t["id"] for t in trials]
    assert full["total"] == len(trials)
    by_id = {t["id"]: t for t in trials}
    for row in full["rows"]:
        values = dict(zip(full["columns"], row, strict=True))
        trial = by_id[values["id"]]
        assert values["state"] == trial["state"] and values["macs"] == trial["macs"]
        assert values["r"] == round(trial["effective_factors"]["r"], 4)
        if trial["top1"] is not None:
            assert values["top1"] == round(trial["top1"], 5)

    _age_every_trial(client, search["id"])
    cursor = client.get(f"{base}/trials/compact", headers=VIEWER).json()["cursor"]
    assert client.get(f"{base}/trials/compact", params={"since": cursor}, headers=VIEWER).json()[
        "rows"
    ] == []  # fmt: skip
    (changed,) = _complete(client, 1)
    delta = client.get(f"{base}/trials/compact", params={"since": cursor}, headers=VIEWER).json()
    ids = [row[0] for row in delta["rows"]]
    assert changed["id"] in ids
    # The completed trial, and the one the planner queued in its place: not the whole search.
    assert len(ids) <= 3 < delta["total"], ids
    assert delta["since"] is not None and delta["cursor"] >= cursor


def test_a_bad_cursor_is_refused_with_what_to_send(client: TestClient) -> None:
    search = create_search(client)
    base = f"/api/searches/{search['id']}/trials/compact"
    for since in ("yesterday", "0.5", "2026-12-01T10:00:00"):
        reply = client.get(base, params={"since": since}, headers=VIEWER)
        assert reply.status_code == 422, (since, reply.text)
        assert "cursor" in reply.json()["detail"] and "zone" in reply.json()["detail"]


def test_trials_page_with_limit_and_offset(client: TestClient) -> None:
    search = create_search(client, parallelism=5, max_trials=5)
    base = f"/api/searches/{search['id']}/trials"
    wait_for(lambda: len(client.get(base, headers=VIEWER).json()) == 5)
    every = [t["id"] for t in client.get(base, headers=VIEWER).json()]
    first = client.get(base, params={"limit": 2}, headers=VIEWER)
    assert [t["id"] for t in first.json()] == every[:2]
    assert first.headers["X-Total-Count"] == "5"
    assert 'rel="next"' in first.headers["Link"] and "offset=2" in first.headers["Link"]
    last = client.get(base, params={"limit": 2, "offset": 4}, headers=VIEWER)
    assert [t["id"] for t in last.json()] == every[4:] and "Link" not in last.headers
    assert client.get(base, params={"limit": 0}, headers=VIEWER).status_code == 422
    assert client.get(base, params={"limit": 10_001}, headers=VIEWER).status_code == 422


def test_curves_of_chosen_trials(client: TestClient) -> None:
    search = create_search(client, parallelism=2, max_trials=4)
    other = create_search(client, name="other", parallelism=1, max_trials=1)
    done = _complete(client, 2)
    base = f"/api/searches/{search['id']}/curves"
    ids = ",".join(str(t["id"]) for t in done)
    curves = client.get(base, params={"ids": ids}, headers=VIEWER).json()
    for trial in done:
        full = client.get(f"/api/trials/{trial['id']}", headers=VIEWER).json()["curve"]
        assert curves[str(trial["id"])] == full and full
    trials_of_other = wait_for(
        lambda: client.get(f"/api/searches/{other['id']}/trials", headers=VIEWER).json()
    )  # once the planner has queued the other search's trial
    foreign = trials_of_other[0]["id"]
    assert client.get(base, params={"ids": str(foreign)}, headers=VIEWER).json() == {
        str(foreign): []
    }  # another search's trial: nothing of it
    for bad in ("1,x", "-3", ",".join(str(i) for i in range(1, 600))):
        reply = client.get(base, params={"ids": bad}, headers=VIEWER)
        assert reply.status_code == 422, (bad, reply.text)


def test_a_stored_analysis_is_served_by_another_replica_without_a_fit(database_url: str) -> None:
    # A server with its planner queues and completes trials; then two servers on the same
    # database, neither running the background analyst (only requests fit), read them.
    with TestClient(create_app(make_settings(database_url))) as planner:
        search = create_search(planner, strategy="sobol", parallelism=3, max_trials=12)
        done = _complete(planner, 6)
        # The last server below completes one more: the planner must have queued it first.
        wait_for(lambda: queued(planner, search["id"]))
    base = f"/api/searches/{search['id']}"
    settings = make_settings(database_url, background=False)
    with TestClient(create_app(settings)) as one, TestClient(create_app(settings)) as two:
        # The first server's own analyst may have stored a fit of fewer trials: ask for one
        # of all of them, stored for the others.
        first = one.get(f"{base}/analysis", params={"fresh": True}, headers=VIEWER).json()
        assert first["fitted"] and first["fitted_on"]["trials"] == len(done)
        again = two.get(f"{base}/analysis", headers=VIEWER).json()
        assert again["computed_at"] == first["computed_at"] and again["stale"] is False
        formula = two.get(f"{base}/formula", params={"c": 0.3}, headers=VIEWER)
        assert formula.status_code == 200, formula.text
        assert formula.json()["fitted_on"]["trials"] == len(done)

    with TestClient(create_app(make_settings(database_url, background=False))) as restarted:
        kept = restarted.get(f"{base}/analysis", headers=VIEWER).json()
        assert kept["computed_at"] == first["computed_at"]  # a restart keeps it
    with TestClient(create_app(settings)) as one:
        _complete(one, 1)  # one of the trials the planner left queued
        stale = one.get(f"{base}/analysis", headers=VIEWER).json()
        # Answered at once from the stored fit, saying it is behind.
        assert stale["computed_at"] == first["computed_at"]
        assert stale["stale"] is True and stale["current_trials"] == len(done) + 1
        fresh = one.get(f"{base}/analysis", params={"fresh": True}, headers=VIEWER).json()
        assert fresh["stale"] is False and fresh["fitted_on"]["trials"] == len(done) + 1


def test_a_claimed_computation_is_not_run_twice(client: TestClient, database_url: str) -> None:
    search = create_search(client, parallelism=3, max_trials=6)
    _complete(client, 3)
    # A results store of its own: the client's background analyst must not hold the claim.
    from vitcube.service.db import Database
    from vitcube.service.results import Results

    db = Database(database_url)
    results = Results(db)
    wait_for(lambda: results.compute(search["id"]))
    with db.session(write=True) as session:  # another replica claims it, for a while
        session.execute(
            update(SearchAnalysis)
            .where(SearchAnalysis.search_id == search["id"])
            .values(claimed_by="elsewhere", claimed_until=utcnow() + timedelta(minutes=5))
        )
    assert results.compute(search["id"]) is False
    with db.session(write=True) as session:  # that replica died: its claim lapses
        session.execute(
            update(SearchAnalysis)
            .where(SearchAnalysis.search_id == search["id"])
            .values(claimed_until=utcnow() - timedelta(seconds=1))
        )
    assert results.compute(search["id"]) is True
