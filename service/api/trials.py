"""/api/trials: the worker protocol (lease, heartbeat, complete, fail) and one trial's view.

A stale lease gets 409 and changes nothing; completing twice with the same report is 200.
lease / heartbeat / complete are async: on PostgreSQL they run on the event loop through
`Database.hot` (service.db.HotPool); on SQLite, and for the rare answers the fast statements
leave to the general functions (409, a repeated complete), the ORM path runs in a worker thread.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response, status
from fastapi.concurrency import run_in_threadpool

from vitcube.service import store
from vitcube.service.api.deps import DbDep, PlannerDep, SettingsDep, TrialId, ViewerAuth, WorkerAuth
from vitcube.service.db import Database
from vitcube.service.schemas import (
    HeartbeatReply,
    LeaseRequest,
    TrialAck,
    TrialFailure,
    TrialHeartbeat,
    TrialLease,
    TrialPublic,
    TrialReport,
)
from vitcube.service.settings import Settings

router = APIRouter(prefix="/trials", tags=["trials"])


@router.post(
    "/lease",
    response_model=TrialLease,
    responses={204: {"description": "Nothing is queued; ask again later."}},
)
async def lease(
    body: LeaseRequest, db: DbDep, settings: SettingsDep, _: WorkerAuth
) -> TrialLease | Response:
    """Lease the oldest queued trial of the least-served running search."""
    if db.is_postgres:
        leased = await db.hot(
            lambda cursor: store.lease_pg(
                cursor, worker=body.worker, lease_seconds=settings.lease_seconds
            )
        )
    else:
        leased = await run_in_threadpool(_lease, db, body.worker, settings.lease_seconds)
    if leased is None:
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    return TrialLease(**leased)


def _lease(db: Database, worker: str, lease_seconds: float) -> dict[str, Any] | None:
    with db.session(write=True) as session:
        return store.lease(session, worker=worker, lease_seconds=lease_seconds)


@router.post("/{trial_id}/heartbeat", response_model=HeartbeatReply)
async def heartbeat(
    trial_id: TrialId,
    body: TrialHeartbeat,
    db: DbDep,
    settings: SettingsDep,
    planner: PlannerDep,
    _: WorkerAuth,
) -> HeartbeatReply:
    """Extend the lease and record the epoch; `stop` if the search stopped or the median
    stopping rule judges the trial hopeless (see service.store.heartbeat)."""
    reply = None
    if db.is_postgres:
        reply = await db.hot(
            lambda cursor: store.heartbeat_pg(
                cursor,
                trial_id,
                body,
                lease_seconds=settings.lease_seconds,
                min_trials=settings.median_stop_min_trials,
                warmup_epochs=settings.median_stop_warmup_epochs,
            ),
            atomic=store.median_rule_may_apply(body, settings.median_stop_warmup_epochs),
        )
    if reply is None:  # SQLite, or not a current lease: the general path words the answer
        reply = await run_in_threadpool(_heartbeat, db, settings, trial_id, body)
    if reply["action"] == "stop":
        planner.wake()
    return HeartbeatReply(**reply)


def _heartbeat(
    db: Database, settings: Settings, trial_id: int, body: TrialHeartbeat
) -> dict[str, Any]:
    with db.session(write=True) as session:
        return store.heartbeat(
            session,
            trial_id,
            body,
            lease_seconds=settings.lease_seconds,
            min_trials=settings.median_stop_min_trials,
            warmup_epochs=settings.median_stop_warmup_epochs,
        )


@router.post("/{trial_id}/complete", response_model=TrialAck)
async def complete(
    trial_id: TrialId, body: TrialReport, db: DbDep, planner: PlannerDep, _: WorkerAuth
) -> TrialAck:
    ack = None
    if db.is_postgres:
        ack = await db.hot(
            lambda cursor: store.complete_pg(cursor, trial_id, body), atomic=bool(body.curve)
        )
    if ack is None:  # SQLite, a repeated or stale report: the general path words the answer
        ack = await run_in_threadpool(_complete, db, trial_id, body)
    planner.wake()
    return ack


def _complete(db: Database, trial_id: int, body: TrialReport) -> TrialAck:
    with db.session(write=True) as session:
        return store.complete(session, trial_id, body)


@router.post("/{trial_id}/fail", response_model=TrialAck)
def fail(
    trial_id: TrialId,
    body: TrialFailure,
    db: DbDep,
    settings: SettingsDep,
    planner: PlannerDep,
    _: WorkerAuth,
) -> TrialAck:
    """`retry: true` queues the trial again (attempts + 1) until max attempts, then failed."""
    with db.session(write=True) as session:
        ack = store.fail(session, trial_id, body, max_attempts=settings.max_attempts)
    planner.wake()
    return ack


@router.get("/{trial_id}", response_model=TrialPublic)
def read_trial(trial_id: TrialId, db: DbDep, _: ViewerAuth) -> TrialPublic:
    with db.session() as session:
        trial = store.get_trial(session, trial_id)
        return store.trial_public(trial, store.curves(session, [trial_id]).get(trial_id, []))
