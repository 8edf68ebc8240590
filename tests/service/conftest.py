"""Fixtures for the service tests: one shared suite on SQLite and on the machine's PostgreSQL.

The backends (`backend`, `database_url`, `postgres_url`, `sqlite_url`) and `live_server` live in
tests/backends.py, shared with the client tests, and are registered here by importing them;
`LiveServer`, `free_port` and `empty_tables` stay importable from this module too. `client` is
the app in-process (FastAPI's TestClient) with its background threads running.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from tests.backends import (
    TABLES,
    LiveServer,
    backend,
    database_url,
    empty_tables,
    free_port,
    live_server,
    postgres_url,
    sqlite_url,
)
from tests.factories import make_settings
from vitcube.service.app import create_app

__all__ = [
    "TABLES",
    "LiveServer",
    "backend",
    "client",
    "database_url",
    "empty_tables",
    "free_port",
    "live_server",
    "postgres_url",
    "sqlite_url",
]


@pytest.fixture
def client(database_url: str) -> Iterator[TestClient]:
    """The app with its planner and sweeper threads running, on the backend under test."""
    app = create_app(make_settings(database_url))
    with TestClient(app) as test_client:
        yield test_client
