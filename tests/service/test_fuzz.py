"""Schema-driven fuzz: schemathesis generates requests from /openapi.json; no answer is a 5xx.

Runs against the app in-process (ASGI) on SQLite with a search already present, as admin (so
requests get past auth and reach the handlers). Bounded: a few examples per operation.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings

from tests.factories import ADMIN, make_settings, search_body
from vitcube.service import db as service_db
from vitcube.service.app import create_app


def _app(tmp: Path) -> object:
    url = f"sqlite:///{tmp / 'fuzz.db'}"
    service_db.upgrade(url)
    app = create_app(make_settings(url, background=False))
    with TestClient(app) as client:  # one search so that /api/searches/1/... reaches the handlers
        assert client.post("/api/searches", json=search_body(), headers=ADMIN).status_code == 201
    return app


APP = _app(Path(__import__("tempfile").mkdtemp(prefix="vitcube-fuzz-")))
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@schema.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_request_gets_a_server_error(case: schemathesis.Case) -> None:
    response = case.call(headers=ADMIN)
    assert response.status_code < 500, (case.method, case.path, response.text[:500])
