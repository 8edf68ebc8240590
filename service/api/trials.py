"""/api/trials: the worker protocol (lease, heartbeat, complete, fail), a trial's artifacts
(checkpoint, final weights) and one trial's view.

A stale lease gets 409 and changes nothing; completing twice with the same report is 200.
Artifact bodies stream both ways (never whole in memory): an upload goes block by block into
the artifact store (service.artifacts), then one transaction re-checks the lease and makes it the
trial's latest; a download streams from the store.
The routes call the app's TrialQueue (service.queue) and never look at the backend: how an
operation runs (fixed SQL on the event loop, ORM code in a worker thread) is the queue's
business.
"""

from __future__ import annotations

from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Query, Request, Response, status
from fastapi.responses import StreamingResponse

from vitcube.contract import ArtifactKind, preprocessing
from vitcube.service import artifacts, store
from vitcube.service.api.deps import (
    AnalystDep,
    ArtifactsDep,
    DbDep,
    PlannerDep,
    QueueDep,
    SettingsDep,
    TrialId,
    ViewerAuth,
    WorkerAuth,
)
from vitcube.service.artifacts import ArtifactStore, ArtifactTooLarge, Written
from vitcube.service.db import Database
from vitcube.service.errors import NotFound
from vitcube.service.metric import as_top1, metric_of
from vitcube.service.schemas import (
    ArchitecturePublic,
    ArtifactPublic,
    ArtifactsDeleted,
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
    """Lease the oldest queued trial of the least-served running search whose trainer this
    worker can run (`trainers`; none named: builtin only). Every request records the worker."""
    leased = await queue.lease(worker=body.worker, trainers=body.trainers)
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
    trial_id: TrialId,
    body: TrialReport,
    queue: QueueDep,
    planner: PlannerDep,
    analyst: AnalystDep,
    _: WorkerAuth,
) -> TrialAck:
    ack = await queue.complete(trial_id, body)
    planner.wake()
    analyst.wake()  # the search's GP views are refitted in the background, off this request
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
        return store.trials_public(session, [store.get_trial(session, trial_id)])[0]


# -- artifacts ----------------------------------------------------------------------------------

LeaseQuery = Annotated[
    str, Query(min_length=1, max_length=64, description="The trial's current lease id")
]
_BINARY = {"schema": {"type": "string", "format": "binary"}}
_UPLOAD = {
    "requestBody": {
        "required": True,
        "description": "The raw file (a torch.save), streamed; at most VITCUBE_MAX_ARTIFACT_BYTES "
        "(413 beyond, nothing stored).",
        "content": {"application/octet-stream": _BINARY},
    }
}
_SHA256_HEADER = {"description": "SHA-256 of the file, hex", "schema": {"type": "string"}}


async def _upload(
    request: Request,
    db: Database,
    artifact_store: ArtifactStore,
    max_bytes: int,
    *,
    trial_id: int,
    lease_id: str,
    kind: ArtifactKind,
    epoch: int | None = None,
    step: int = 0,
) -> ArtifactPublic:
    """Stream the body into a new object, then record it as the trial's `kind` under a lease
    checked before the body is read and again, in the recording transaction, after."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise ArtifactTooLarge(
            f"Content-Length {declared} is over {max_bytes} bytes (VITCUBE_MAX_ARTIFACT_BYTES); "
            "nothing was stored: raise the limit or upload less"
        )

    def check() -> tuple[int, int]:
        with db.session() as session:
            return artifacts.check_lease(session, trial_id, lease_id)

    search_id, attempt = await anyio.to_thread.run_sync(check)
    key = artifact_store.new_key(search_id=search_id, trial_id=trial_id, attempt=attempt, kind=kind)
    written = await artifact_store.write_stream(key, request.stream(), max_bytes=max_bytes)

    def record(written: Written) -> tuple[ArtifactPublic, str | None]:
        with db.session(write=True) as session:
            return artifacts.record(
                session,
                trial_id=trial_id,
                lease_id=lease_id,
                kind=kind,
                key=key,
                written=written,
                epoch=epoch,
                step=step,
            )

    try:
        public, replaced = await anyio.to_thread.run_sync(record, written)
    except BaseException:
        # Lost the lease meanwhile (or the database failed): the upload must not linger.
        await anyio.to_thread.run_sync(artifact_store.delete, [key])
        raise
    if replaced is not None:  # only now that the new one is the trial's
        await anyio.to_thread.run_sync(artifact_store.delete, [replaced])
    return public


def _download(
    artifact_store: ArtifactStore, row: Any, headers: dict[str, str]
) -> StreamingResponse:
    return StreamingResponse(
        artifact_store.read(row.key),
        media_type="application/octet-stream",
        headers={
            "Content-Length": str(row.bytes),
            "X-Vitcube-Sha256": row.sha256,
            **headers,
        },
    )


@router.put("/{trial_id}/checkpoint", response_model=ArtifactPublic, openapi_extra=_UPLOAD)
async def put_checkpoint(
    trial_id: TrialId,
    request: Request,
    db: DbDep,
    artifact_store: ArtifactsDep,
    settings: SettingsDep,
    _: WorkerAuth,
    lease_id: LeaseQuery,
    epoch: Annotated[int, Query(ge=0, le=1_000_000, description="Completed epochs it holds")],
    step: Annotated[
        int, Query(ge=0, le=1_000_000_000, description="Steps of the next epoch already done")
    ] = 0,
) -> ArtifactPublic:
    """Upload the trial's latest checkpoint (replacing the previous one); 409 unless `lease_id`
    is the current lease of the running trial, 413 over the size limit."""
    return await _upload(
        request,
        db,
        artifact_store,
        settings.max_artifact_bytes,
        trial_id=trial_id,
        lease_id=lease_id,
        kind="checkpoint",
        epoch=epoch,
        step=step,
    )


@router.get(
    "/{trial_id}/checkpoint",
    response_class=Response,
    responses={
        200: {
            "description": "The checkpoint file, streamed",
            "content": {"application/octet-stream": _BINARY},
            "headers": {
                "X-Vitcube-Epoch": {
                    "description": "Completed epochs",
                    "schema": {"type": "integer"},
                },
                "X-Vitcube-Step": {
                    "description": "Steps into the next epoch",
                    "schema": {"type": "integer"},
                },
                "X-Vitcube-Sha256": _SHA256_HEADER,
            },
        }
    },
)
def get_checkpoint(
    trial_id: TrialId, db: DbDep, artifact_store: ArtifactsDep, _: WorkerAuth
) -> StreamingResponse:
    """The trial's latest checkpoint (what its lease names); 404 when it has none."""
    with db.session() as session:
        store.get_trial(session, trial_id)
        row = artifacts.latest(session, trial_id, "checkpoint")
        if row is None:
            raise NotFound(f"trial {trial_id} has no checkpoint: train it from epoch 0")
    headers = {"X-Vitcube-Epoch": str(row.epoch or 0), "X-Vitcube-Step": str(row.step)}
    return _download(artifact_store, row, headers)


@router.delete("/{trial_id}/checkpoint", response_model=ArtifactsDeleted)
def discard_checkpoint(
    trial_id: TrialId,
    db: DbDep,
    artifact_store: ArtifactsDep,
    _: WorkerAuth,
    lease_id: LeaseQuery,
    reason: Annotated[
        str, Query(description="Why it could not be loaded (kept, first 2000 characters)")
    ] = "the worker could not load it",
) -> ArtifactsDeleted:
    """The checkpoint could not be loaded (corrupt, another architecture): delete it and record
    why in the trial's metrics (`checkpoint_discarded`); the trial trains from epoch 0."""
    with db.session(write=True) as session:
        keys = artifacts.discard_checkpoint(session, trial_id, lease_id, reason)
    artifact_store.delete(keys)
    return ArtifactsDeleted(deleted=len(keys))


@router.put("/{trial_id}/weights", response_model=ArtifactPublic, openapi_extra=_UPLOAD)
async def put_weights(
    trial_id: TrialId,
    request: Request,
    db: DbDep,
    artifact_store: ArtifactsDep,
    settings: SettingsDep,
    _: WorkerAuth,
    lease_id: LeaseQuery,
) -> ArtifactPublic:
    """Upload the final EMA weights of a trial about to be completed (sent again, it replaces);
    the same rules as the checkpoint upload."""
    return await _upload(
        request,
        db,
        artifact_store,
        settings.max_artifact_bytes,
        trial_id=trial_id,
        lease_id=lease_id,
        kind="weights",
    )


@router.get(
    "/{trial_id}/weights",
    response_class=Response,
    responses={
        200: {
            "description": "The weights file (torch.save of {format, arch, state_dict, "
            "preprocessing, top1, trial_id, search_id}), streamed",
            "content": {"application/octet-stream": _BINARY},
            "headers": {"X-Vitcube-Sha256": _SHA256_HEADER},
        }
    },
)
def get_weights(
    trial_id: TrialId, db: DbDep, artifact_store: ArtifactsDep, _: ViewerAuth
) -> StreamingResponse:
    """The trial's final weights; 404 when there are none (never uploaded, or removed by
    retention when the search ended)."""
    with db.session() as session:
        store.get_trial(session, trial_id)
        row = artifacts.latest(session, trial_id, "weights")
        if row is None:
            raise NotFound(
                f"trial {trial_id} has no weights: it did not complete with them, or retention "
                "removed them when its search ended (VITCUBE_KEEP_WEIGHTS)"
            )
    filename = f"vitcube-trial-{trial_id}-weights.pt"
    return _download(
        artifact_store, row, {"Content-Disposition": f'attachment; filename="{filename}"'}
    )


@router.get("/{trial_id}/architecture", response_model=ArchitecturePublic)
def architecture(trial_id: TrialId, db: DbDep, _: ViewerAuth) -> ArchitecturePublic:
    """What rebuilds the trial's network (`arch`, for vitcube.models) and how to feed it."""
    with db.session() as session:
        trial = store.get_trial(session, trial_id)
        search = store.get_search(session, trial.search_id)
        dataset = str(search.dataset.get("name"))
        return ArchitecturePublic(
            trial_id=trial.id,
            search_id=trial.search_id,
            arch=trial.arch,
            resolution=trial.resolution,
            macs=trial.macs,
            params=trial.params,
            num_classes=search.dataset.get("num_classes", trial.arch.get("num_classes")),
            dataset=dataset,
            preprocessing=preprocessing(dataset, trial.resolution),
            top1=as_top1(metric_of(search.metric), trial.value),
        )
