"""Fixtures for the client tests: `vitcube.client.Client` against a real server, on both backends.

`server` is a live uvicorn server (tests.backends.LiveServer, make_settings: the test tokens, a
quick planner) on the backend under test; `vc` is the user's client on it with the admin token,
`worker_client` the worker's (worker token and name), `db` the server's database for writing
what workers would take minutes to report. The server's planner and analyst threads run in the
background: a test waits for what they do (tests.factories.wait_for), never assumes it is done.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.backends import LiveServer, backend, database_url, postgres_url, sqlite_url
from tests.factories import ADMIN_TOKEN, WORKER_TOKEN, make_settings
from vitcube.client import Client
from vitcube.service.db import Database

__all__ = [
    "backend",
    "database_url",
    "db",
    "postgres_url",
    "server",
    "sqlite_url",
    "vc",
    "worker_client",
]


@pytest.fixture
def server(database_url: str) -> Iterator[LiveServer]:
    with LiveServer(make_settings(database_url)) as live:
        yield live


@pytest.fixture
def vc(server: LiveServer) -> Iterator[Client]:
    """The user's client with the admin token (a short deadline: a test never waits 30 s)."""
    with Client(server.url, ADMIN_TOKEN, retry_for_s=5.0) as client:
        yield client


@pytest.fixture
def worker_client(server: LiveServer) -> Iterator[Client]:
    with Client(server.url, WORKER_TOKEN, worker="client-tests:0", retry_for_s=5.0) as client:
        yield client


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    try:
        yield database
    finally:
        database.dispose()
