"""The SQLite trial queue: the ORM operations of service.queue.orm, one writer at a time.

SQLite is embedded in this one server process. Every operation runs off the event loop in a
worker thread, in one `Database.session(write=True)` transaction, which holds the process's
SQLite writer lock: writers are serialised in-process (no SQLITE_BUSY on lock upgrades), so a
lease needs no row locks to hand a trial out exactly once. Its clock is this process's clock.
Imports service.db, service.queue and service.queue.orm.
"""

from __future__ import annotations

from vitcube.service.db import Database
from vitcube.service.queue import QueuePolicy
from vitcube.service.queue.orm import OrmTrialQueue


class SqliteTrialQueue(OrmTrialQueue):
    """All five operations as ORM code under the SQLite writer lock (see OrmTrialQueue)."""

    def __init__(self, db: Database, policy: QueuePolicy) -> None:
        if db.is_postgres:
            raise ValueError("SqliteTrialQueue needs a SQLite database; use make_queue(db, …)")
        super().__init__(db, policy)
