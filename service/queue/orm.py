"""The trial queue's operations as ORM code on one Session, shared by both backends.

`lease`, `heartbeat`, `complete`, `fail` and `sweep_expired` take an open Session and never
commit: the caller's `Database.session(write=True)` scope is the one transaction (on SQLite it
also holds the process's writer lock). A stale lease raises Conflict *before* anything is
written, so the rolled-back transaction changes nothing. These are SQLite's whole implementation
and PostgreSQL's for fail, the sweep and the rare answers of its hot path (409, a repeated
complete, `stop` of a stopped trial); what both backends compute from a report or a heartbeat
(the median rule's verdict, the report digest, the curve rows) lives here once.

`OrmTrialQueue` runs each operation off the event loop in a worker thread (anyio's, as FastAPI's
sync routes use). Leasing locks the chosen row with `FOR UPDATE SKIP LOCKED` on PostgreSQL.
Completing a trial drops its checkpoint row in the same transaction; the object goes from the
artifact store after commit (`TrialQueue.forget`). Imports service.queue (the interface),
service.store (the database clock, get_trial), service.artifacts, service.tables,
service.schemas and service.errors.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import uuid
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import anyio.to_thread
from sqlalchemy import case, delete, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from vitcube.contract import BUILTIN_TRAINER, MetricSpec
from vitcube.service import artifacts, failfast
from vitcube.service.errors import Conflict, InvalidTransition
from vitcube.service.metric import best_of, metric_of, report_value
from vitcube.service.queue import TrialQueue
from vitcube.service.schemas import TrialAck, TrialFailure, TrialHeartbeat, TrialReport
from vitcube.service.store import CURVE_COLUMNS, db_later, db_now, get_trial, is_postgres
from vitcube.service.tables import Search, Trial, TrialMetric, Worker, utcnow

T = TypeVar("T")

# A trial of a search in one of these states is told to stop (heartbeat), ends stopped when it
# fails or its lease expires. A paused search (fail fast) is not among them: its running trials
# carry on, and a retryable failure or an expired lease queues the trial again for its resume.
SEARCH_ENDED = ("completed", "stopped", "failed")


def search_stop_reason(search_id: int, search_state: str) -> str | None:
    """Why a trial of this search must stop now, or None (heartbeat on both backends)."""
    if search_state in SEARCH_ENDED:
        return f"search {search_id} is {search_state}"
    return None


# -- the operations on one session --------------------------------------------------------------


def lease(
    session: Session,
    *,
    worker: str,
    lease_seconds: float,
    trainers: Sequence[str] = (BUILTIN_TRAINER,),
) -> dict[str, Any] | None:
    """Hand the oldest queued trial of the least-served running search whose trainer is among
    `trainers` (labels) to `worker`, and record the worker and its trainers as seen now.

    Fair across searches: searches with the fewest running trials go first, ties to the older
    search. Returns the lease (see TrialLease) or None if nothing it can run is queued.
    """
    record_worker(session, worker=worker, trainers=trainers)
    running = (
        select(func.count())
        .where(Trial.search_id == Search.id, Trial.state == "running")
        .correlate(Search)
        .scalar_subquery()
    )
    has_queued = (
        select(Trial.id).where(Trial.search_id == Search.id, Trial.state == "queued").exists()
    )
    # A handful of running searches; both subqueries are index scans on (state, search_id, id).
    candidates = session.scalars(
        select(Search.id)
        .where(Search.state == "running", Search.trainer_label.in_(list(trainers)), has_queued)
        .order_by(running, Search.id)
    )
    for search_id in list(candidates):
        trial_id = session.scalar(
            select(Trial.id)
            .where(Trial.search_id == search_id, Trial.state == "queued")
            .order_by(Trial.id)
            .limit(1)
            .with_for_update(skip_locked=True)
        )
        if trial_id is None:
            continue  # every queued trial of this search is being leased by someone else
        lease_id = str(uuid.uuid4())
        now = db_now(session)
        row = session.execute(
            update(Trial)
            .where(Trial.id == trial_id, Trial.state == "queued")
            .values(
                state="running",
                lease_id=lease_id,
                lease_expires_at=db_later(session, lease_seconds),
                worker=worker,
                started_at=func.coalesce(Trial.started_at, now),
                heartbeat_at=now,
                updated_at=now,
                error=None,
            )
            .returning(
                Trial.id,
                Trial.search_id,
                Trial.kind,
                Trial.r,
                Trial.d_i,
                Trial.d_m,
                Trial.w,
                Trial.eff_r,
                Trial.eff_d_i,
                Trial.eff_d_m,
                Trial.eff_w,
                Trial.arch,
                Trial.macs,
                Trial.params,
                Trial.attempts,
                Trial.lease_expires_at,
                Trial.to_epoch,
            )
        ).one_or_none()
        if row is None:
            continue
        search = session.execute(
            select(
                Search.dataset, Search.training, Search.seed, Search.trainer, Search.metric
            ).where(Search.id == search_id)
        ).one()
        checkpoint = artifacts.latest(session, trial_id, "checkpoint")
        return {
            "id": row.id,
            "lease_id": lease_id,
            "search_id": row.search_id,
            "kind": row.kind,
            "factors": {"r": row.r, "d_i": row.d_i, "d_m": row.d_m, "w": row.w},
            "effective_factors": {
                "r": row.eff_r,
                "d_i": row.eff_d_i,
                "d_m": row.eff_d_m,
                "w": row.eff_w,
            },
            "arch": row.arch,
            "macs": row.macs,
            "params": row.params,
            "dataset": search.dataset,
            "training": search.training,
            "seed": search.seed,
            "trainer": search.trainer,
            "metric": search.metric,
            "attempts": row.attempts,
            "lease_expires_at": row.lease_expires_at,
            "lease_seconds": lease_seconds,
            **segment(
                trial_id,
                search.training,
                row.to_epoch,
                None
                if checkpoint is None
                else {c: getattr(checkpoint, c) for c in CHECKPOINT_COLUMNS},
            ),
        }
    return None


def worker_trainers(trainers: Sequence[str]) -> list[str]:
    """The labels a worker sent, each once, in its order (what the workers table keeps)."""
    return list(dict.fromkeys(trainers))


def record_worker(session: Session, *, worker: str, trainers: Sequence[str]) -> None:
    """The worker asked for a lease now (database clock), saying it can run `trainers`."""
    make = pg_insert if is_postgres(session) else sqlite_insert
    now = db_now(session)
    stmt = make(Worker).values(
        name=worker,
        trainers=worker_trainers(trainers),
        first_seen_at=now,
        last_seen_at=now,
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[Worker.name],
        set_={"trainers": stmt.excluded.trainers, "last_seen_at": stmt.excluded.last_seen_at},
    )
    session.execute(stmt)


# What a lease tells of the trial's checkpoint (the artifacts row's columns).
CHECKPOINT_COLUMNS = ("epoch", "step", "bytes", "sha256", "attempt", "created_at")


def segment(
    trial_id: int,
    training: dict[str, Any],
    to_epoch: int | None,
    checkpoint: dict[str, Any] | None,
) -> dict[str, Any]:
    """The lease's `from_epoch`, `to_epoch` and `checkpoint` (CHECKPOINT_COLUMNS of the trial's
    checkpoint row, or None): a re-leased or promoted trial resumes where its latest checkpoint
    ends and trains to the trial's `to_epoch` (null: all of training.epochs). A checkpoint at or
    beyond to_epoch (it cannot be: completing a segment stores its end) is not resumed."""
    end = int(training["epochs"]) if to_epoch is None else to_epoch
    ref = None if checkpoint is None else artifacts.checkpoint_ref(trial_id, **checkpoint)
    if ref is not None and ref.epoch >= end:
        ref = None
    return {"from_epoch": 0 if ref is None else ref.epoch, "to_epoch": end, "checkpoint": ref}


def _stale(session: Session, trial_id: int, lease_id: str, action: str) -> Conflict:
    """Why a report did not match a running lease (NotFound raised directly)."""
    trial = get_trial(session, trial_id)
    if trial.lease_id != lease_id:
        return Conflict(
            f"lease {lease_id} is not the current lease of trial {trial_id} (it expired or the "
            f"trial was re-leased; state {trial.state}): abandon the trial, nothing was changed"
        )
    return InvalidTransition(f"trial {trial_id} is {trial.state}; cannot {action} it")


def metric_row(
    trial_id: int, epoch: int, metrics: dict[str, Any], metric: MetricSpec
) -> dict[str, Any]:
    """A heartbeat's metrics (or a curve point's) as a trial_metrics row: the search's metric in
    `value`, the curve columns, the rest in `extra`."""
    return {
        "trial_id": trial_id,
        "epoch": epoch,
        "value": metrics.get(metric.name),
        **{name: metrics.get(name) for name in CURVE_COLUMNS},
        "extra": {k: v for k, v in metrics.items() if k not in CURVE_COLUMNS and k != metric.name}
        or None,
    }


def _upsert_metric(
    session: Session, trial_id: int, epoch: int, metrics: dict[str, float], metric: MetricSpec
) -> None:
    make = pg_insert if is_postgres(session) else sqlite_insert
    stmt = make(TrialMetric).values(**metric_row(trial_id, epoch, metrics, metric))
    stmt = stmt.on_conflict_do_update(
        index_elements=[TrialMetric.trial_id, TrialMetric.epoch],
        set_={k: stmt.excluded[k] for k in ("value", *CURVE_COLUMNS, "extra")},
    )
    session.execute(stmt)


def heartbeat(
    session: Session,
    trial_id: int,
    body: TrialHeartbeat,
    *,
    lease_seconds: float,
    min_trials: int,
    warmup_epochs: int,
) -> dict[str, Any]:
    """Extend the lease, record the epoch's metrics, and say whether to go on.

    The answer is `stop` when the search was stopped, or by the median stopping rule: a
    `search` trial (never a reference trial) at epoch e ≥ `warmup_epochs` whose best value of
    the search's metric so far scores below the median score at epoch e of the search's
    completed trials (at least `min_trials` of them with a point at e) is clearly worse than a
    typical trial; it is stopped (state `stopped`), as Optuna's MedianPruner and Vizier's
    median rule do.
    """
    search_state = select(Search.state).where(Search.id == Trial.search_id).scalar_subquery()
    schedule = select(Search.schedule).where(Search.id == Trial.search_id).scalar_subquery()
    stored_metric = select(Search.metric).where(Search.id == Trial.search_id).scalar_subquery()
    row = session.execute(
        update(Trial)
        .where(Trial.id == trial_id, Trial.lease_id == body.lease_id, Trial.state == "running")
        .values(
            lease_expires_at=db_later(session, lease_seconds),
            heartbeat_at=db_now(session),
        )
        .returning(
            Trial.search_id,
            Trial.kind,
            Trial.lease_expires_at,
            search_state,
            schedule,
            stored_metric,
        )
    ).one_or_none()
    if row is None:
        trial = get_trial(session, trial_id)
        if trial.state == "stopped" and trial.lease_id == body.lease_id:
            return {"action": "stop", "reason": trial.error or "trial stopped"}
        raise _stale(session, trial_id, body.lease_id, "heartbeat")
    search_id, kind, expires_at, state, schedule, stored = row
    metric = metric_of(stored)
    if body.metrics:
        _upsert_metric(session, trial_id, body.epoch, body.metrics, metric)
    reason = search_stop_reason(search_id, state)
    if reason is None and median_rule_applies(
        kind, schedule_kind(schedule), body, warmup_epochs, metric
    ):
        reason = _median_rule(session, trial_id, search_id, body.epoch, min_trials, metric)
    if reason is None:
        return {"action": "continue", "lease_expires_at": expires_at}
    session.execute(
        update(Trial)
        .where(Trial.id == trial_id)
        .values(
            state="stopped",
            finished_at=db_now(session),
            error=reason,
            epochs_trained=func.max(Trial.epochs_trained, body.epoch)
            if not is_postgres(session)
            else func.greatest(Trial.epochs_trained, body.epoch),
        )
    )
    return {"action": "stop", "reason": reason}


def median_rule_may_apply(body: TrialHeartbeat, warmup_epochs: int) -> bool:
    """Whether `heartbeat` may read more and stop the trial (then it needs a transaction): a
    heartbeat with metrics past the warm-up (whether they hold the search's metric is known
    only once the heartbeat has read its search)."""
    return bool(body.metrics) and body.epoch >= warmup_epochs


def schedule_kind(schedule: dict[str, Any] | str | None) -> str:
    """A stored schedule's kind: from the schedule (the ORM's read) or the kind itself (the
    PostgreSQL hot path selects `schedule->>'kind'`); a missing one is full."""
    if isinstance(schedule, str):
        return schedule
    return str((schedule or {}).get("kind", "full"))


def median_rule_applies(
    kind: str, schedule: str, body: TrialHeartbeat, warmup_epochs: int, metric: MetricSpec
) -> bool:
    """The median rule judges `search` trials (never references) of `full` searches only, on a
    heartbeat that carries the search's metric: under ASHA the rungs decide which trials go
    on, and one rule per search is enough."""
    return (
        kind == "search"
        and schedule == "full"
        and metric.name in body.metrics
        and median_rule_may_apply(body, warmup_epochs)
    )


def _median_rule(
    session: Session, trial_id: int, search_id: int, epoch: int, min_trials: int, metric: MetricSpec
) -> str | None:
    others = list(
        session.scalars(
            select(TrialMetric.value)
            .join(Trial, Trial.id == TrialMetric.trial_id)
            .where(
                Trial.search_id == search_id,
                Trial.state == "completed",
                TrialMetric.epoch == epoch,
                TrialMetric.value.is_not(None),
            )
        )
    )
    if len(others) < min_trials:
        return None
    highest, lowest = session.execute(
        select(func.max(TrialMetric.value), func.min(TrialMetric.value)).where(
            TrialMetric.trial_id == trial_id, TrialMetric.epoch <= epoch
        )
    ).one()
    return median_verdict(others, (highest, lowest), epoch, metric)


def median_verdict(
    others: list[float | None],
    extremes: tuple[float | None, float | None],
    epoch: int,
    metric: MetricSpec,
) -> str | None:
    """The median rule's answer: why to stop, or None. `others`: the completed trials' values
    of the metric at `epoch`; `extremes`: this trial's highest and lowest value up to `epoch`
    (its best is the one that scores higher). Compared as scores, worded in values."""
    median = metric.value(statistics.median(metric.score(v) for v in others if v is not None))
    best = best_of(metric, extremes)
    if best is not None and metric.better(median, best):
        side = "below" if metric.maximize else "above"
        return (
            f"median stopping rule: best {metric.name} {best:.4f} by epoch {epoch} is {side} "
            f"the median {median:.4f} of {len(others)} completed trials at that epoch"
        )
    return None


def report_digest(body: TrialReport) -> str:
    """What makes a repeated complete the same report (stored with the completed trial)."""
    payload = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()


def complete(session: Session, trial_id: int, body: TrialReport) -> TrialAck:
    """running → completed (or paused at a rung) with the report; the same report again is an
    idempotent no-op."""
    return complete_clearing(session, trial_id, body)[0]


def complete_clearing(
    session: Session, trial_id: int, body: TrialReport
) -> tuple[TrialAck, list[str]]:
    """`complete`, and a completed trial's checkpoint row dropped in the same transaction: (the
    answer, the checkpoint keys to delete from the artifact store after commit).

    The report is the segment's that the lease named: when its `to_epoch` is before
    training.epochs the trial becomes `paused` at that rung (its value is the rung's result and
    its checkpoint stays for the promotion); otherwise it is `completed`. Either way the rung's
    value joins `rung_values`, `epochs_trained` becomes the segment's end, and the search learns
    its images per epoch (train_macs) from the report. The value is the report's of the search's
    metric (service.metric.report_value: InvalidInput naming the metric when it is missing).
    """
    digest = report_digest(body)
    now = db_now(session)
    found = session.execute(
        select(Trial.metrics, Trial.to_epoch, Trial.rung_values, Search.training, Search.metric)
        .join(Search, Search.id == Trial.search_id)
        .where(Trial.id == trial_id)
    ).one_or_none()
    if found is None:
        get_trial(session, trial_id)  # NotFound
    kept, to_epoch, rungs_so_far, training, stored = found  # type: ignore[misc]
    metric = metric_of(stored)
    value = report_value(metric, body)
    # The report's extras join what the server already keeps there (e.g. worker_faults).
    kept = kept if isinstance(kept, dict) else {}
    metrics = {**kept, **(report_extras(body) or {})} or None
    epochs = int((training or {}).get("epochs", 0))
    end = epochs if to_epoch is None else int(to_epoch)
    state = "completed" if end >= epochs else "paused"
    row = session.execute(
        update(Trial)
        .where(Trial.id == trial_id, Trial.lease_id == body.lease_id, Trial.state == "running")
        .values(
            state=state,
            value=value,
            top5=body.top5,
            latency_ms=body.latency_ms,
            images_per_s=body.images_per_s,
            surrogate=body.surrogate,
            metrics=metrics,
            report_digest=digest,
            rung_values={**(rungs_so_far or {}), str(end): value},
            epochs_trained=float(end),
            finished_at=now if state == "completed" else None,
            updated_at=now,
            error=None,
        )
        .returning(Trial.search_id, Trial.attempts)
    ).one_or_none()
    if row is None:
        trial = get_trial(session, trial_id)
        if (
            trial.state in ("completed", "paused")
            and trial.lease_id == body.lease_id
            and trial.report_digest == digest
        ):
            ack = TrialAck(
                id=trial.id,
                search_id=trial.search_id,
                state=trial.state,  # type: ignore[arg-type]
                attempts=trial.attempts,
            )
            return ack, []
        if trial.state in ("completed", "paused") and trial.lease_id == body.lease_id:
            raise Conflict(f"trial {trial_id} was already completed with a different report")
        raise _stale(session, trial_id, body.lease_id, "complete")
    if body.curve:
        session.execute(delete(TrialMetric).where(TrialMetric.trial_id == trial_id))
        session.execute(insert(TrialMetric), curve_rows(trial_id, body, metric))
    if body.train_images:
        session.execute(
            update(Search)
            .where(
                Search.id == row.search_id, Search.train_images.is_distinct_from(body.train_images)
            )
            .values(train_images=body.train_images)
        )
    keys = artifacts.delete_checkpoint_rows(session, trial_id) if state == "completed" else []
    ack = TrialAck(id=trial_id, search_id=row.search_id, state=state, attempts=row.attempts)  # type: ignore[arg-type]
    return ack, keys


def report_extras(body: TrialReport) -> dict[str, Any] | None:
    """The report beyond the trial's columns (the worker's own MACs and params count, what
    measured the latency, the ONNX Runtime latency, where a resumed run started and how many
    epochs it trained), or None."""
    extras = {
        k: v
        for k, v in (
            ("reported_macs", body.macs),
            ("reported_params", body.params),
            ("latency_device", body.latency_device),
            ("latency_onnx_ms", body.latency_onnx_ms),
            ("latency_onnx_device", body.latency_onnx_device),
            ("resumed_from_epoch", body.resumed_from_epoch),
            ("epochs_trained", body.epochs_trained),
            ("train_images", body.train_images),
        )
        if v is not None
    }
    return extras or None


def curve_rows(trial_id: int, body: TrialReport, metric: MetricSpec) -> list[dict[str, Any]]:
    """The report's learning curve as trial_metrics rows, one per epoch (the last point of an
    epoch wins), in epoch order: the search's metric in `value`, a point's fields beyond it and
    the curve columns in `extra`."""
    by_epoch = {p.epoch: p for p in body.curve}
    return [
        metric_row(trial_id, p.epoch, p.model_dump(exclude_none=True, exclude={"epoch"}), metric)
        for p in (by_epoch[e] for e in sorted(by_epoch))
    ]


def fail(
    session: Session,
    trial_id: int,
    body: TrialFailure,
    *,
    max_attempts: int,
    fail_fast_after: int = 0,
    max_worker_faults: int = 0,
) -> TrialAck:
    """running → queued (retry, attempts + 1) or failed; stopped if its search has ended.

    A worker fault (`body.worker_fault`: the worker's GPU or host broke, not the trial) is
    queued again without attempts + 1 while the trial's count of such faults, kept in its
    `metrics["worker_faults"]`, is below `max_worker_faults`; beyond that it is charged like
    any retryable failure, so a trial that breaks every worker still ends. The error is
    recorded either way. A non-retryable failure may pause the search (service.failfast) in
    the same transaction; a worker fault is retryable, so fail fast never counts it.
    """
    trial = session.scalar(
        select(Trial)
        .where(Trial.id == trial_id, Trial.lease_id == body.lease_id, Trial.state == "running")
        .with_for_update()
    )
    if trial is None:
        raise _stale(session, trial_id, body.lease_id, "fail")
    search_state = session.scalar(select(Search.state).where(Search.id == trial.search_id))
    attempts = trial.attempts + 1
    if body.worker_fault:
        faults = int((trial.metrics or {}).get("worker_faults", 0)) + 1
        # A new dict: the JSON column notices reassignment, not mutation in place.
        trial.metrics = {**(trial.metrics or {}), "worker_faults": faults}
        if faults <= max_worker_faults:
            attempts = trial.attempts
    if search_state in SEARCH_ENDED:
        state = "stopped"
    elif body.retry and attempts < max_attempts:
        state = "queued"
    else:
        state = "failed"
    trial.state = state
    trial.attempts = attempts
    trial.error = body.error
    trial.error_retryable = body.retry
    if state == "queued":
        trial.lease_id = None
        trial.lease_expires_at = None
    else:
        trial.finished_at = utcnow()
    session.flush()
    if state == "failed" and not body.retry:
        failfast.pause_if_failing(session, trial.search_id, threshold=fail_fast_after)
    return TrialAck(id=trial.id, search_id=trial.search_id, state=state, attempts=attempts)  # type: ignore[arg-type]


def sweep_expired(session: Session, *, max_attempts: int) -> int:
    """Reclaim running trials whose lease expired by the database clock. Returns how many.

    attempts + 1, then back to queued, or failed once `max_attempts` leases were lost; a trial
    of a search that has ended becomes stopped (one that is paused keeps it for its resume). The
    old lease_id is cleared, so the old holder's reports get 409.
    """
    now = db_now(session)
    expired = (Trial.state == "running", Trial.lease_expires_at < now)
    not_running = select(Search.id).where(Search.state.in_(SEARCH_ENDED))
    stopped = _rowcount(
        session.execute(
            update(Trial)
            .where(*expired, Trial.search_id.in_(not_running))
            .values(
                state="stopped", finished_at=now, error="lease expired after the search stopped"
            )
            .execution_options(synchronize_session=False)
        )
    )
    attempts = Trial.attempts + 1
    reclaimed = _rowcount(
        session.execute(
            update(Trial)
            .where(*expired)
            .values(
                attempts=attempts,
                state=case((attempts >= max_attempts, "failed"), else_="queued"),
                finished_at=case((attempts >= max_attempts, now), else_=None),
                lease_id=None,
                lease_expires_at=None,
                error=case(
                    (attempts >= max_attempts, "lease expired; out of attempts"),
                    else_="lease expired; queued again",
                ),
            )
            .execution_options(synchronize_session=False)
        )
    )
    return stopped + reclaimed


def _rowcount(result: Any) -> int:
    return int(result.rowcount or 0)


# -- the ORM queue ------------------------------------------------------------------------------


class OrmTrialQueue(TrialQueue):
    """Every operation as ORM code in one `Database.session(write=True)` transaction, run in a
    worker thread: the SQLite backend whole, the PostgreSQL backend's base."""

    async def lease(
        self, *, worker: str, trainers: Sequence[str] = (BUILTIN_TRAINER,)
    ) -> dict[str, Any] | None:
        return await self._run(
            lease, worker=worker, trainers=trainers, lease_seconds=self.policy.lease_seconds
        )

    async def heartbeat(self, trial_id: int, body: TrialHeartbeat) -> dict[str, Any]:
        return await self._run(
            heartbeat,
            trial_id,
            body,
            lease_seconds=self.policy.lease_seconds,
            min_trials=self.policy.median_stop_min_trials,
            warmup_epochs=self.policy.median_stop_warmup_epochs,
        )

    async def complete(self, trial_id: int, body: TrialReport) -> TrialAck:
        ack, keys = await self._run(complete_clearing, trial_id, body)
        await self.forget(keys)
        return ack

    async def fail(self, trial_id: int, body: TrialFailure) -> TrialAck:
        return await self._run(
            fail,
            trial_id,
            body,
            max_attempts=self.policy.max_attempts,
            fail_fast_after=self.policy.fail_fast_after,
            max_worker_faults=self.policy.max_worker_faults,
        )

    async def sweep_expired(self) -> int:
        return await self._run(sweep_expired, max_attempts=self.policy.max_attempts)

    async def _run(self, operation: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        def in_session() -> T:
            with self.db.session(write=True) as session:
                return operation(session, *args, **kwargs)

        return await anyio.to_thread.run_sync(in_session)
