"""The trial queue: the worker protocol's five operations behind one interface, two backends.

`TrialQueue` is what the routes and the planner's lease sweep call: lease, heartbeat, complete,
fail and sweep_expired, all async, with the same answers on every backend. `make_queue(db,
settings)` picks the backend from the Database (imported lazily): `sqlite.SqliteTrialQueue` runs
the ORM operations of `orm` in a worker thread under the process's SQLite writer lock;
`postgres.PostgresTrialQueue` runs lease / heartbeat / complete as fixed SQL on the async
autocommit pool `Database.hot` and falls back to the same ORM operations for the rare answers,
for fail and for the sweep. One conformance suite (tests/service/queue) runs against both.

Losing a race is a normal return value (None from lease); a stale lease raises Conflict (409 at
the edge) before anything is written. Imports vitcube.contract, service.artifacts (the store a
completed trial's checkpoint is deleted from), service.db, service.schemas and service.settings;
never fastapi.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import anyio.to_thread

from vitcube.contract import BUILTIN_TRAINER
from vitcube.service.artifacts import ArtifactStore
from vitcube.service.db import Database
from vitcube.service.schemas import TrialAck, TrialFailure, TrialHeartbeat, TrialReport
from vitcube.service.settings import Settings


@dataclass(frozen=True)
class QueuePolicy:
    """The settings the worker protocol obeys (see service.settings for their meaning)."""

    lease_seconds: float
    max_attempts: int
    median_stop_min_trials: int
    median_stop_warmup_epochs: int
    fail_fast_after: int = 0
    max_worker_faults: int = 3

    @classmethod
    def from_settings(cls, settings: Settings) -> QueuePolicy:
        return cls(
            lease_seconds=settings.lease_seconds,
            max_attempts=settings.max_attempts,
            median_stop_min_trials=settings.median_stop_min_trials,
            median_stop_warmup_epochs=settings.median_stop_warmup_epochs,
            fail_fast_after=settings.fail_fast_after,
            max_worker_faults=settings.max_worker_faults,
        )


class TrialQueue(ABC):
    """Leases trials to workers and takes their reports; one per app, shared by every request."""

    def __init__(
        self, db: Database, policy: QueuePolicy, store: ArtifactStore | None = None
    ) -> None:
        self.db = db
        self.policy = policy
        self.store = store  # where a completed trial's checkpoint is deleted from

    async def forget(self, keys: list[str]) -> None:
        """Delete objects whose rows a committed operation dropped (best effort, off the loop)."""
        if keys and self.store is not None:
            await anyio.to_thread.run_sync(self.store.delete, keys)

    @abstractmethod
    async def lease(
        self, *, worker: str, trainers: Sequence[str] = (BUILTIN_TRAINER,)
    ) -> dict[str, Any] | None:
        """Hand the oldest queued trial of the least-served running search to `worker`, among
        the searches whose trainer label is in `trainers` (a worker that names none runs the
        builtin trainer only); record the worker and its trainers in `workers` as seen now (by
        the database clock), in the same transaction.

        Fair across searches: searches with the fewest running trials go first, ties to the
        older search. Returns the lease (the fields of TrialLease, with the search's `trainer`
        and `metric`) or None if nothing it can run is queued (or every such trial is being
        leased by someone else right now). No trial is ever leased twice at once, whatever the
        number of concurrent callers and server processes.
        """

    @abstractmethod
    async def heartbeat(self, trial_id: int, body: TrialHeartbeat) -> dict[str, Any]:
        """Extend the lease, record the epoch's metrics, and say whether to go on.

        `{"action": "continue", "lease_expires_at": …}` or `{"action": "stop", "reason": …}`:
        stop when the search was stopped, or by the median stopping rule (orm.heartbeat), or
        when the trial is already stopped under this lease. A stale lease raises Conflict.
        """

    @abstractmethod
    async def complete(self, trial_id: int, body: TrialReport) -> TrialAck:
        """running → completed with the report, or → paused when the lease's segment ended
        before training.epochs (a rung of an ASHA schedule: the checkpoint stays for the
        promotion); the same report again is an idempotent no-op, a different one (or a stale
        lease) raises Conflict."""

    @abstractmethod
    async def fail(self, trial_id: int, body: TrialFailure) -> TrialAck:
        """running → queued (retry, attempts + 1) or failed; stopped if its search has ended.

        A `worker_fault` failure is queued again without attempts + 1, up to
        `max_worker_faults` per trial (counted in the trial's metrics); beyond, it is charged
        like any retryable failure. After a non-retryable failure the search may be paused
        (fail fast, service.failfast); a worker fault never counts there.
        """

    @abstractmethod
    async def sweep_expired(self) -> int:
        """Reclaim running trials whose lease expired by the database clock; how many.

        attempts + 1, then queued again, or failed once `max_attempts` leases were lost; a trial
        of a search that has ended becomes stopped (a paused one's is queued again). The old
        holder's reports then get Conflict.
        """


def make_queue(db: Database, settings: Settings, store: ArtifactStore | None = None) -> TrialQueue:
    """The backend for `db`: PostgreSQL's hot path or SQLite's ORM path. `store`: where
    completed trials' checkpoints are deleted (default: the settings' artifact store)."""
    policy = QueuePolicy.from_settings(settings)
    if store is None:
        store = ArtifactStore.from_settings(settings)
    if db.is_postgres:
        from vitcube.service.queue.postgres import PostgresTrialQueue

        queue: TrialQueue = PostgresTrialQueue(db, policy)
    else:
        from vitcube.service.queue.sqlite import SqliteTrialQueue

        queue = SqliteTrialQueue(db, policy)
    queue.store = store
    return queue


__all__ = ["QueuePolicy", "TrialQueue", "make_queue"]
