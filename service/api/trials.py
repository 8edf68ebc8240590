"""/api/trials: the worker protocol (lease, heartbeat, complete, fail) and one trial's view.

A stale lease gets 409 and changes nothing; completing twice with the same report is 200.
The routes call the app's TrialQueue (service.queue) and never look at the backend: how an
operation runs (fixed SQL on the event loop, ORM code in a worker thread) is the queue's
business.
"""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from vitcube.service import store
from vitcube.service.api.deps import DbDep, PlannerDep, QueueDep, TrialId, ViewerAuth, WorkerAuth
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

router = APIRouter(prefix="/trials", tags=["trials"])


@router.post(
    "/lease",
    response_model=TrialLease,
    responses={204: {"description": "Nothing is queued; ask again later."}},
)
async def lease(body: LeaseRequest, queue: QueueDep, _: WorkerAuth) -> TrialLease | Response:
    """Lease the oldest queued trial of the least-served running search."""
    leased = await queue.lease(worker=body.worker)
    if leased is None:
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    return TrialLease(**leased)


@router.post("/{trial_id}/heartbeat", response_model=HeartbeatReply)
async def heartbeat(
    trial_id: TrialId,
    body: TrialHeartbeat,
    queue: QueueDep,
    planner: PlannerDep,
    _: WorkerAuth,
) -> HeartbeatReply:
    """Extend the lease and record the epoch; `stop` if the search stopped or the median
    stopping rule judges the trial hopeless (see service.queue.orm.heartbeat)."""
    reply = await queue.heartbeat(trial_id, body)
    if reply["action"] == "stop":
        planner.wake()
    return HeartbeatReply(**reply)


@router.post("/{trial_id}/complete", response_model=TrialAck)
async def complete(
    trial_id: TrialId, body: TrialReport, queue: QueueDep, planner: PlannerDep, _: WorkerAuth
) -> TrialAck:
    ack = await queue.complete(trial_id, body)
    planner.wake()
    return ack


@router.post("/{trial_id}/fail", response_model=TrialAck)
async def fail(
    trial_id: TrialId, body: TrialFailure, queue: QueueDep, planner: PlannerDep, _: WorkerAuth
) -> TrialAck:
    """`retry: true` queues the trial again (attempts + 1) until max attempts, then failed;
    `worker_fault: true` (the worker's GPU or host broke) queues it without attempts + 1, up to
    VITCUBE_MAX_WORKER_FAULTS times per trial."""
    ack = await queue.fail(trial_id, body)
    planner.wake()
    return ack


@router.get("/{trial_id}", response_model=TrialPublic)
def read_trial(trial_id: TrialId, db: DbDep, _: ViewerAuth) -> TrialPublic:
    with db.session() as session:
        trial = store.get_trial(session, trial_id)
        return store.trial_public(trial, store.curves(session, [trial_id]).get(trial_id, []))
