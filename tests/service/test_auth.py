"""Role tokens: 401 without, 403 for the wrong role, cookies, database tokens stored hashed."""

from __future__ import annotations

import hashlib
import time

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from tests.factories import ADMIN, ADMIN_TOKEN, VIEWER, VIEWER_TOKEN, WORKER, make_settings
from vitcube.service.app import create_app
from vitcube.service.auth import create_token
from vitcube.service.db import Database

ROUTES = [
    ("get", "/api/searches", "viewer"),
    ("post", "/api/searches", "admin"),
    ("post", "/api/searches/1/stop", "admin"),
    ("post", "/api/trials/lease", "worker"),
    ("post", "/api/trials/1/complete", "worker"),
]
HEADERS = {"admin": ADMIN, "worker": WORKER, "viewer": VIEWER}


@pytest.mark.parametrize(("method", "path", "role"), ROUTES)
def test_no_token_is_401_and_a_wrong_role_is_403(
    client: TestClient, method: str, path: str, role: str
) -> None:
    response = getattr(client, method)(path)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    bogus = getattr(client, method)(path, headers={"Authorization": "Bearer nope-nope-nope"})
    assert bogus.status_code == 401
    for other, headers in HEADERS.items():
        if other not in (role, "admin"):
            response = getattr(client, method)(path, headers=headers)
            assert response.status_code == 403, (other, path)
            assert role in response.json()["detail"]


def test_the_dashboard_cookie_is_accepted(client: TestClient) -> None:
    client.cookies.set("vitcube_token", VIEWER_TOKEN)
    try:
        assert client.get("/api/searches").status_code == 200
    finally:
        client.cookies.clear()


def test_database_tokens_work_and_only_their_digest_is_stored(database_url: str) -> None:
    db = Database(database_url)
    with db.session(write=True) as session:
        _, token = create_token(session, "viewer", name="laptop")
    db.dispose()
    with TestClient(create_app(make_settings(database_url, background=False))) as client:
        assert (
            client.get("/api/searches", headers={"Authorization": f"Bearer {token}"}).json() == []
        )
        worker_only = client.post(
            "/api/trials/lease", json={"worker": "w"}, headers={"Authorization": f"Bearer {token}"}
        )
        assert worker_only.status_code == 403
    engine = create_engine(database_url)
    with engine.connect() as connection:
        stored = connection.execute(text("SELECT token_sha256, role FROM api_tokens")).all()
    engine.dispose()
    assert stored == [(hashlib.sha256(token.encode()).hexdigest(), "viewer")]
    assert token not in str(stored)


def test_open_mode_only_without_any_token(database_url: str) -> None:
    settings = make_settings(
        database_url, admin_token=None, worker_token=None, viewer_token=None, background=False
    )
    with TestClient(create_app(settings)) as client:
        assert client.get("/api/searches").status_code == 200  # local, loopback-only mode
    settings = make_settings(database_url, worker_token=None, viewer_token=None, background=False)
    with TestClient(create_app(settings)) as client:
        assert client.get("/api/searches").status_code == 401
        ok = client.get("/api/searches", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert ok.status_code == 200


def test_a_revoked_database_token_is_refused_once_the_auth_cache_expires(
    database_url: str,
) -> None:
    db = Database(database_url)
    with db.session(write=True) as session:
        row, token = create_token(session, "worker", name="to-revoke")
    settings = make_settings(database_url, background=False, auth_cache_seconds=0.3)
    headers = {"Authorization": f"Bearer {token}"}
    try:
        with TestClient(create_app(settings)) as client:
            assert (
                client.post("/api/trials/lease", json={"worker": "w"}, headers=headers).status_code
                == 204
            )
            with db.session(write=True) as session:
                session.execute(
                    text("UPDATE api_tokens SET revoked_at = CURRENT_TIMESTAMP WHERE id = :id"),
                    {"id": row.id},
                )
            time.sleep(0.5)
            refused = client.post("/api/trials/lease", json={"worker": "w"}, headers=headers)
            assert refused.status_code == 401
    finally:
        db.dispose()
