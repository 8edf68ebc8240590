"""Faults: a server restarted mid-search continues from the database; a PostgreSQL outage gives
503 (never 500) and the same server recovers when the database comes back.

The outage is made on a private database of this test, not by stopping the machine's cluster
(other suites share it): every connection is terminated with pg_terminate_backend and new ones
are refused with `ALTER DATABASE … ALLOW_CONNECTIONS false`; to the server that looks exactly like
a PostgreSQL restart. A true restart (`pg_ctlcluster 15 main restart`) behaves the same way.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.factories import (
    ADMIN,
    VIEWER,
    WORKER,
    create_search,
    lease_one,
    make_settings,
    report_body,
    scratch_database,
    wait_for,
)
from vitcube.service import db as service_db
from vitcube.service.app import create_app


def test_a_restarted_server_continues_the_search_from_the_database(database_url: str) -> None:
    settings = make_settings(database_url)
    with TestClient(create_app(settings)) as client:
        search = create_search(client, max_trials=5, parallelism=2)
        first = lease_one(client)
        client.post(f"/api/trials/{first['id']}/complete", json=report_body(first), headers=WORKER)
        in_flight = lease_one(client)
    # A new process: no cached strategy, no memory of the old one.
    with TestClient(create_app(settings)) as client:
        # The lease survived the restart: the worker that held it can still report.
        reply = client.post(
            f"/api/trials/{in_flight['id']}/complete", json=report_body(in_flight), headers=WORKER
        )
        assert reply.status_code == 200
        for _ in range(3):
            lease = lease_one(client)
            client.post(
                f"/api/trials/{lease['id']}/complete", json=report_body(lease), headers=WORKER
            )
        done = wait_for(
            lambda: (
                (s := client.get(f"/api/searches/{search['id']}", headers=VIEWER).json())["state"]
                == "completed"
                and s
            )
        )
        assert done["counts"]["completed"] == 5
        trials = client.get(f"/api/searches/{search['id']}/trials", headers=VIEWER).json()
        assert len({tuple(sorted(t["effective_factors"].items())) for t in trials}) == 5


@pytest.fixture
def private_pg(postgres_url: str) -> Iterator[tuple[str, str]]:
    """A migrated database of its own (URL and name), which the test can take down."""
    admin_url = make_url(postgres_url).set(database="postgres").render_as_string(False)
    with scratch_database(admin_url, "vitcube_outage") as url:
        service_db.upgrade(url)
        yield url, make_url(url).database or ""


def _set_outage(admin_url: str, name: str, *, down: bool) -> None:
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        allow = "false" if down else "true"
        connection.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {allow}'))
        if down:
            connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": name},
            )
    admin.dispose()


def test_a_postgres_outage_is_503_and_the_server_recovers(
    private_pg: tuple[str, str], postgres_url: str
) -> None:
    url, name = private_pg
    admin_url = make_url(postgres_url).set(database="postgres").render_as_string(False)
    with TestClient(create_app(make_settings(url))) as client:
        search = create_search(client, max_trials=4, parallelism=2)
        lease = lease_one(client)
        _set_outage(admin_url, name, down=True)
        try:
            for method, path, kwargs in (
                ("get", "/api/searches", {"headers": VIEWER}),
                ("get", f"/api/searches/{search['id']}/trials", {"headers": VIEWER}),
                ("post", "/api/trials/lease", {"headers": WORKER, "json": {"worker": "w"}}),
                (
                    "post",
                    f"/api/trials/{lease['id']}/complete",
                    {"headers": WORKER, "json": report_body(lease)},
                ),
                ("get", "/api/health", {}),
            ):
                response = getattr(client, method)(path, **kwargs)
                assert response.status_code == 503, (path, response.text)
                assert response.headers["retry-after"]
                assert "database" in response.json()["detail"]
        finally:
            _set_outage(admin_url, name, down=False)
        # Same process, same pool: stale connections are replaced (pool_pre_ping).
        reply = client.post(
            f"/api/trials/{lease['id']}/complete", json=report_body(lease), headers=WORKER
        )
        assert reply.status_code == 200, reply.text
        assert client.get("/api/searches", headers=ADMIN).status_code == 200
        assert lease_one(client)["search_id"] == search["id"]  # the planner recovered too
