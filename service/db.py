"""Database access: the engine, one session scope per operation, Alembic upgrades.

`Database.session()` is the one place a transaction is opened and committed (rolled back on any
error). Domain functions take the session and never commit. The PostgreSQL trial queue
(service.queue.postgres) runs the worker hot path (lease, heartbeat, complete) through
`Database.hot()` instead: fixed SQL on psycopg async connections in autocommit mode (HotPool),
where one statement is one transaction. Which of the two a worker-protocol operation uses is
the queue's choice; nothing else branches on the backend for it. Imports service.settings
only.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, nullcontext
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, StatementError
from sqlalchemy.orm import Session, sessionmaker

from vitcube.service.settings import Settings

T = TypeVar("T")


def make_engine(url: str, *, pool_size: int = 10, max_overflow: int = 20) -> Engine:
    """An engine that survives a database restart: stale connections are pinged and replaced."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            pool_pre_ping=True,
            connect_args={"check_same_thread": False, "timeout": 30},
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_recycle=1800,
        # A request never waits long for a connection during an outage: it gets 503 instead.
        pool_timeout=10,
        connect_args={"connect_timeout": 5},
    )


class Database:
    """The engine plus the session scope; one per app (or CLI command)."""

    def __init__(self, url: str, *, pool_size: int = 10, max_overflow: int = 20) -> None:
        self.url = url
        self.engine = make_engine(url, pool_size=pool_size, max_overflow=max_overflow)
        self.is_postgres = self.engine.dialect.name == "postgresql"
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        # SQLite has one writer at a time; serialising writers in-process avoids SQLITE_BUSY
        # on lock upgrades. PostgreSQL needs no such lock: row and advisory locks do the work.
        self._sqlite_writer = threading.RLock()
        # The worker hot path's own connections share the pool_size budget with the ORM pool's
        # steady state, so one process holds at most 2 * pool_size + max_overflow connections.
        self._hot = (
            HotPool(url, self.engine.dialect, size=max(1, pool_size // 2), limit=pool_size)
            if self.is_postgres
            else None
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> Database:
        return cls(
            settings.database_url,
            pool_size=settings.pool_size,
            max_overflow=settings.max_overflow,
        )

    @contextmanager
    def session(self, *, write: bool = False) -> Iterator[Session]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        lock = self._sqlite_writer if write and not self.is_postgres else nullcontext()
        with lock, self._sessions() as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    async def hot(self, work: Callable[[Any], Awaitable[T]], *, atomic: bool = False) -> T:
        """Run `await work(cursor)` for the worker hot path (PostgreSQL only; see HotPool and
        service.queue.postgres)."""
        if self._hot is None:
            raise RuntimeError("Database.hot is for PostgreSQL; SQLite uses session()")
        return await self._hot.run(work, atomic=atomic)

    async def close_hot(self) -> None:
        """Close the hot path's connections of the running event loop (the app's shutdown)."""
        if self._hot is not None:
            await self._hot.close()

    def dispose(self) -> None:
        self.engine.dispose()
        if self._hot is not None:
            self._hot.discard_all()


class HotPool:
    """psycopg async connections (autocommit) for the worker hot path on PostgreSQL.

    lease / heartbeat / complete run on the event loop itself: no worker-thread hop and no GIL
    hand-over per request, which under many concurrent workers cost more CPU than the database
    work. Each connection is in autocommit mode, so a one-statement operation is one round trip
    (its own transaction); `atomic=True` wraps the work in BEGIN … COMMIT (rolled back if it
    raises). At most `limit` connections are in use per event loop, `size` kept idle.

    No pre-ping: a pooled connection the database dropped (a restart, an outage) is found by the
    first statement; then every idle connection is discarded and the work runs once more on a
    fresh connection. Repeating is safe: every hot-path operation writes nothing unless the lease
    matches, a repeat is answered as a repeat (a repeated complete is the idempotent 200), and a
    crash after a lease committed is what a worker's own retry after a 503 would also give.
    Errors come out as SQLAlchemy's DBAPIError subclasses, `connection_invalidated` set for a
    lost connection, so the app answers 503 for an outage exactly as for ORM sessions.
    """

    def __init__(self, url: str, dialect: Any, *, size: int, limit: int) -> None:
        self._conninfo = make_url(url).set(drivername="postgresql").render_as_string(False)
        self._dialect = dialect
        self._size = size
        self._limit = limit
        self._idle: dict[asyncio.AbstractEventLoop, list[Any]] = {}
        self._slots: dict[asyncio.AbstractEventLoop, asyncio.Semaphore] = {}

    async def run(self, work: Callable[[Any], Awaitable[T]], *, atomic: bool) -> T:
        import psycopg

        loop = asyncio.get_running_loop()
        slots = self._slots.get(loop)
        if slots is None:
            self._forget_closed_loops()
            slots = self._slots[loop] = asyncio.Semaphore(self._limit)
        idle = self._idle.setdefault(loop, [])
        async with slots:
            for attempt in (1, 2):
                if idle:
                    connection = idle.pop()
                else:
                    try:
                        connection = await psycopg.AsyncConnection.connect(
                            self._conninfo, autocommit=True, connect_timeout=5
                        )
                    except psycopg.Error as exc:  # cannot connect: the database is down
                        raise self._wrap(exc, lost=True) from exc
                try:
                    async with connection.cursor() as cursor:
                        if atomic:
                            async with connection.transaction():
                                result = await work(cursor)
                        else:
                            result = await work(cursor)
                except psycopg.Error as exc:
                    if connection.broken or connection.closed:
                        self._discard([connection, *idle])  # all made before now are suspect
                        idle.clear()
                        if attempt == 1:
                            continue
                        raise self._wrap(exc, lost=True) from exc
                    self._give_back(idle, connection)
                    raise self._wrap(exc, lost=False) from exc
                except BaseException:
                    self._discard([connection])  # e.g. cancelled mid-statement
                    raise
                self._give_back(idle, connection)
                return result
        raise AssertionError("unreachable")  # pragma: no cover

    def _wrap(self, exc: Exception, *, lost: bool) -> StatementError:
        import psycopg

        return DBAPIError.instance(
            None, None, exc, psycopg.Error, connection_invalidated=lost, dialect=self._dialect
        )

    def _give_back(self, idle: list[Any], connection: Any) -> None:
        if len(idle) < self._size and connection.info.transaction_status == 0:  # IDLE
            idle.append(connection)
        else:
            self._discard([connection])

    @staticmethod
    def _discard(connections: list[Any]) -> None:
        for connection in connections:
            connection.pgconn.finish()  # closes the socket; no round trip, any loop

    def _forget_closed_loops(self) -> None:
        for loop in [loop for loop in self._idle if loop.is_closed()]:
            self._discard(self._idle.pop(loop))
            self._slots.pop(loop, None)

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        for connection in self._idle.pop(loop, []):
            await connection.close()
        self._slots.pop(loop, None)

    def discard_all(self) -> None:
        for connections in self._idle.values():
            self._discard(connections)
        self._idle.clear()
        self._slots.clear()


# -- migrations -------------------------------------------------------------------------------


def alembic_config(url: str) -> Any:
    """An Alembic Config that finds migrations/ inside the installed package (wheel or checkout)."""
    from alembic.config import Config

    script_location = resources.files("vitcube.migrations")
    config = Config()
    config.set_main_option("script_location", str(script_location))
    # `%` is ConfigParser interpolation; URLs may contain %-escapes.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    from alembic import command

    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    from alembic import command

    command.downgrade(alembic_config(url), revision)


def current_revision(url: str) -> str | None:
    from alembic.runtime.migration import MigrationContext

    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()
