"""Database access: the engine, one session scope per operation, Alembic upgrades.

`Database.session()` is the one place a transaction is opened and committed (rolled back on any
error). Domain functions take the session and never commit. The worker hot path on PostgreSQL
(lease, heartbeat, complete) runs through `Database.hot()` instead: fixed SQL on a DBAPI cursor
of a second, autocommit pool, where one statement is one transaction. Imports service.settings
and service.tables only.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from service.settings import Settings

T = TypeVar("T")


def make_engine(
    url: str, *, pool_size: int = 10, max_overflow: int = 20, hot: bool = False
) -> Engine:
    """An engine that survives a database restart: stale connections are pinged and replaced.

    `hot=True` (PostgreSQL only) is the worker hot path's pool: see `Database.hot`.
    """
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
    if hot:
        # The worker hot path (Database.hot): autocommit, so a one-statement operation is one
        # round trip; no pre-ping round trip either: Database.hot retries on a fresh connection
        # when a pooled one turns out to be dead, which is what the ping would have found.
        return create_engine(
            url,
            isolation_level="AUTOCOMMIT",
            pool_size=pool_size,
            max_overflow=max_overflow,
            pool_recycle=1800,
            pool_timeout=10,
            connect_args={"connect_timeout": 5},
        )
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
        self._hot_engine = (
            make_engine(url, pool_size=pool_size, max_overflow=max_overflow, hot=True)
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

    def hot(self, work: Callable[[Any], T], *, atomic: bool = False) -> T:
        """Run `work(cursor)` for the worker hot path (PostgreSQL only; fixed SQL strings).

        The cursor is on a pooled psycopg connection in autocommit mode: each statement is its
        own transaction, one round trip, committed when it returns. `atomic=True` wraps the work
        in BEGIN … COMMIT instead (rolled back if it raises). A pooled connection the database
        dropped (a restart, an outage) is found by the first statement instead of by a pre-ping:
        the pool's older connections are discarded and the work runs once more on a fresh
        connection. That is safe because every hot-path operation may be repeated: nothing is
        written unless the lease matches, and a repeat is answered as a repeat (a repeated
        complete is the idempotent 200); a crash after a lease committed is what a worker's own
        retry after a 503 would also give. Errors come out as SQLAlchemy's DBAPIError subclasses
        with `connection_invalidated` set for a lost connection, so the app answers 503 for an
        outage exactly as for ORM sessions.
        """
        engine = self._hot_engine
        if engine is None:
            raise RuntimeError("Database.hot is for PostgreSQL; SQLite uses session()")
        dialect = engine.dialect
        dbapi_error = dialect.loaded_dbapi.Error
        for attempt in (1, 2):
            try:
                connection = engine.raw_connection()
            except dbapi_error as exc:  # cannot connect: the database is down
                raise DBAPIError.instance(
                    None, None, exc, dbapi_error, connection_invalidated=True, dialect=dialect
                ) from exc
            raw: Any = connection.dbapi_connection  # psycopg.Connection
            cursor = None
            try:
                cursor = raw.cursor()
                if atomic:
                    with raw.transaction():
                        result = work(cursor)
                else:
                    result = work(cursor)
                cursor.close()
                return result
            except dbapi_error as exc:
                lost = dialect.is_disconnect(exc, raw, cursor)
                if lost:
                    # Every connection made before now is suspect: replaced on checkout.
                    engine.pool._invalidate(connection, exc)
                    if attempt == 1:
                        continue
                raise DBAPIError.instance(
                    None, None, exc, dbapi_error, connection_invalidated=lost, dialect=dialect
                ) from exc
            finally:
                connection.close()  # back to the pool (a no-op for an invalidated one)
        raise AssertionError("unreachable")  # pragma: no cover

    def dispose(self) -> None:
        self.engine.dispose()
        if self._hot_engine is not None:
            self._hot_engine.dispose()


# -- migrations -------------------------------------------------------------------------------


def alembic_config(url: str) -> Any:
    """An Alembic Config that finds migrations/ inside the installed package (wheel or checkout)."""
    from alembic.config import Config

    script_location = resources.files("migrations")
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
