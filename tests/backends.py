"""The two database backends and a real server on them, for every suite that talks to a server.

`backend` is parametrised over SQLite and the machine's PostgreSQL, so a test that asks for
`database_url` (or `live_server`) runs once on each: one shared suite on both, as Optuna's
storage tests do. A conftest registers these fixtures by importing them
(`from tests.backends import backend, database_url, …`); `LiveServer`, `free_port` and
`empty_tables` are plain helpers for tests that start servers of their own.

PostgreSQL: a fresh database `vitcube_test_<random>` is created through the admin URL
VITCUBE_TEST_POSTGRES_URL (default postgresql+psycopg://postgres@127.0.0.1:5432/postgres) once
per test session and dropped afterwards; tables are emptied between tests. When the server is
unreachable the PostgreSQL half is skipped locally and FAILS when the CI variable is set. Its
tests carry the `postgres` marker (`-m "not postgres"` leaves them out).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import uvicorn
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from tests.factories import make_settings, scratch_database
from vitcube.service import db as service_db
from vitcube.service.app import create_app
from vitcube.service.settings import Settings

DEFAULT_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
TABLES = (
    "search_analyses",
    "artifacts",
    "trial_metrics",
    "trials",
    "searches",
    "api_tokens",
    "workers",
)


def _admin_url() -> str:
    return os.environ.get("VITCUBE_TEST_POSTGRES_URL", DEFAULT_ADMIN_URL)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this test session."""
    admin_url = _admin_url()
    with ExitStack() as stack:
        try:
            url = stack.enter_context(scratch_database(admin_url, "vitcube_test"))
        except OperationalError as exc:
            message = f"PostgreSQL at {admin_url} is unreachable: {str(exc).splitlines()[0]}"
            if os.environ.get("CI"):
                pytest.fail(message + " (CI is set: PostgreSQL tests must run)")
            pytest.skip(message)
        service_db.upgrade(url)
        yield url


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    path: Path = tmp_path_factory.mktemp("sqlite") / "vitcube.db"
    url = f"sqlite:///{path}"
    service_db.upgrade(url)
    return url


@pytest.fixture(
    scope="session", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database_url(backend: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """The backend's database, emptied before each test."""
    url = str(request.getfixturevalue(f"{backend}_url"))
    empty_tables(url)
    yield url


def empty_tables(url: str) -> None:
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            if engine.dialect.name == "postgresql":
                connection.execute(text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))
            else:
                for table in TABLES:
                    connection.execute(text(f"DELETE FROM {table}"))
    finally:
        engine.dispose()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LiveServer:
    """A real uvicorn server in a thread, speaking HTTP on 127.0.0.1."""

    def __init__(self, settings: Settings) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            create_app(settings), host="127.0.0.1", port=self.port, log_level="warning"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *_: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)


@pytest.fixture
def live_server(database_url: str) -> Iterator[LiveServer]:
    """A live server (make_settings: the test tokens, a quick planner) on the backend under
    test."""
    with LiveServer(make_settings(database_url)) as server:
        yield server
