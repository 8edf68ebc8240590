"""Domain operations on searches and trials: create, stop, lease, heartbeat, complete, fail, sweep.

Every function takes an open Session and never commits: the caller's `Database.session()` scope
is the one transaction. Losing a race or presenting a stale lease raises Conflict *before*
anything is written, so the rolled-back transaction changes nothing. Times that judge staleness
(lease expiry) come from the database clock (`now()` on PostgreSQL; SQLite is embedded in this
process, so its clock is this process's clock).

Leasing on PostgreSQL locks the chosen row with `FOR UPDATE SKIP LOCKED`, so concurrent workers
(in any number of server processes) never get the same trial; on SQLite the caller holds the
process's writer lock. Imports models/ and search/ lazily (only where a search is created or
its results computed), service.tables, service.schemas and service.errors.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
import uuid
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Interval,
    case,
    delete,
    func,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from vitcube.service.errors import Conflict, InvalidInput, InvalidTransition, NotFound
from vitcube.service.schemas import (
    Counts,
    SearchCreate,
    SearchPublic,
    TrialAck,
    TrialFailure,
    TrialHeartbeat,
    TrialPublic,
    TrialReport,
)
from vitcube.service.tables import TRIAL_STATES, Search, Trial, TrialMetric, UTCDateTime, utcnow

DEFAULT_SPACE: dict[str, tuple[float, float]] = {
    "r": (0.8, 1.7),
    "d_i": (1.3, 2.3),
    "d_m": (0.8, 1.6),
    "w": (0.4, 1.2),
}
CURVE_COLUMNS = ("val_top1", "val_top5", "train_loss")


# -- the database clock -----------------------------------------------------------------------


def _is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def db_now(session: Session) -> ColumnElement[datetime]:
    """The database's notion of now, as a SQL expression."""
    if _is_postgres(session):
        return func.now()
    return literal(utcnow(), UTCDateTime())


def db_later(session: Session, seconds: float) -> ColumnElement[datetime]:
    """now() + seconds on the database clock."""
    if _is_postgres(session):
        return func.now() + literal(timedelta(seconds=seconds), Interval())
    return literal(utcnow() + timedelta(seconds=seconds), UTCDateTime())


# -- searches ---------------------------------------------------------------------------------


def resolve_search(body: SearchCreate) -> tuple[dict[str, Any], Any]:
    """Validate a create body against models/ and search/: the new search's columns and strategy.

    Raises InvalidInput naming what to change (unknown family, unmeetable budget, …).
    """
    from vitcube.models import ArchConfig, count_macs
    from vitcube.search import InfeasibleBudgetError, make_strategy

    num_classes = body.dataset.num_classes
    base_in = dict(body.base)
    if base_in.get("num_classes") not in (None, num_classes):
        raise InvalidInput(
            f"base.num_classes={base_in['num_classes']} disagrees with dataset "
            f"{body.dataset.name} ({num_classes} classes); drop base.num_classes"
        )
    base_in["num_classes"] = num_classes
    try:
        base = ArchConfig.from_dict(base_in)
    except (ValueError, TypeError, KeyError) as exc:
        raise InvalidInput(f"base: {exc}") from exc
    m0 = int(count_macs(base))
    if body.budget.max_macs is not None:
        max_macs = int(body.budget.max_macs)
    else:
        assert body.budget.c is not None  # the schema guarantees one of them
        max_macs = int(body.budget.c * m0)
    if max_macs < 1:
        raise InvalidInput(f"budget.c={body.budget.c} leaves less than one MAC; raise it")
    min_macs = body.budget.min_macs
    space = {k: (float(lo), float(hi)) for k, (lo, hi) in DEFAULT_SPACE.items()}
    space.update({k: (float(lo), float(hi)) for k, (lo, hi) in (body.space or {}).items()})
    try:
        strategy = make_strategy(
            body.strategy,
            base=base,
            max_macs=max_macs,
            objective=body.objective,
            space=space,
            seed=body.seed,
            min_macs=min_macs,
        )
    except InfeasibleBudgetError as exc:
        raise InvalidInput(f"budget: {exc}") from exc
    except ValueError as exc:
        raise InvalidInput(str(exc)) from exc
    if min_macs is not None and min_macs > max_macs:
        raise InvalidInput(f"budget.min_macs={min_macs:,} exceeds max_macs={max_macs:,}")
    budget = body.budget.model_dump(exclude_none=True)
    known = set(SearchCreate.model_fields)
    extra = {k: v for k, v in (body.model_extra or {}).items() if k not in known}
    try:
        extra = json.loads(json.dumps(extra, allow_nan=False, default=str))
    except ValueError as exc:
        raise InvalidInput(f"extra fields must be plain JSON without NaN: {exc}") from exc
    return {
        "name": body.name,
        "state": "running",
        "base": base.to_dict(),
        "dataset": body.dataset.model_dump(),
        "budget": budget,
        "m0": m0,
        "max_macs": max_macs,
        "min_macs": min_macs,
        "space": {k: list(v) for k, v in space.items()},
        "objective": body.objective,
        "strategy": body.strategy,
        "max_trials": body.max_trials,
        "parallelism": body.parallelism,
        "training": body.training.model_dump(),
        "seed": body.seed,
        "extra": extra,
    }, strategy


def get_search(session: Session, search_id: int, *, for_update: bool = False) -> Search:
    query = select(Search).where(Search.id == search_id)
    if for_update:
        query = query.with_for_update()
    found = session.scalar(query)
    if found is None:
        raise NotFound(f"search {search_id} does not exist")
    return found


def get_trial(session: Session, trial_id: int) -> Trial:
    found = session.get(Trial, trial_id)
    if found is None:
        raise NotFound(f"trial {trial_id} does not exist")
    return found


def counts_by_search(session: Session, search_ids: list[int]) -> dict[int, Counts]:
    rows = session.execute(
        select(Trial.search_id, Trial.state, func.count())
        .where(Trial.search_id.in_(search_ids))
        .group_by(Trial.search_id, Trial.state)
    )
    raw: dict[int, dict[str, int]] = defaultdict(dict)
    for search_id, state, n in rows:
        raw[search_id][state] = n
    return {sid: Counts(**raw.get(sid, {})) for sid in search_ids}


def best_trials(session: Session, searches: list[Search]) -> dict[int, Trial]:
    """The completed trial with the highest top-1 within each search's budget."""
    best: dict[int, Trial] = {}
    for search in searches:
        query = (
            select(Trial)
            .where(
                Trial.search_id == search.id,
                Trial.state == "completed",
                Trial.macs <= search.max_macs,
            )
            .order_by(Trial.top1.desc(), Trial.macs, Trial.id)
            .limit(1)
        )
        if search.min_macs is not None:
            query = query.where(Trial.macs >= search.min_macs)
        trial = session.scalar(query)
        if trial is not None:
            best[search.id] = trial
    return best


def curves(session: Session, trial_ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = defaultdict(list)
    if not trial_ids:
        return out
    rows = session.scalars(
        select(TrialMetric)
        .where(TrialMetric.trial_id.in_(trial_ids))
        .order_by(TrialMetric.trial_id, TrialMetric.epoch)
    )
    for row in rows:
        point: dict[str, Any] = {"epoch": row.epoch}
        for name in CURVE_COLUMNS:
            point[name] = getattr(row, name)
        point.update(row.extra or {})
        out[row.trial_id].append(point)
    return out


def trial_public(trial: Trial, curve: list[dict[str, Any]]) -> TrialPublic:
    return TrialPublic(
        id=trial.id,
        search_id=trial.search_id,
        state=trial.state,  # type: ignore[arg-type]
        kind=trial.kind,  # type: ignore[arg-type]
        factors=trial.factors,
        effective_factors=trial.effective_factors,
        arch=trial.arch,
        resolution=trial.resolution,
        macs=trial.macs,
        params=trial.params,
        top1=trial.top1,
        top5=trial.top5,
        latency_ms=trial.latency_ms,
        images_per_s=trial.images_per_s,
        worker=trial.worker,
        attempts=trial.attempts,
        error=trial.error,
        surrogate=trial.surrogate,
        curve=curve,
        created_at=trial.created_at,
        started_at=trial.started_at,
        finished_at=trial.finished_at,
        lease_expires_at=trial.lease_expires_at if trial.state == "running" else None,
    )


def list_trials(session: Session, search_id: int) -> list[TrialPublic]:
    trials = list(
        session.scalars(select(Trial).where(Trial.search_id == search_id).order_by(Trial.id))
    )
    by_trial = curves(session, [t.id for t in trials])
    return [trial_public(t, by_trial.get(t.id, [])) for t in trials]


def search_public(session: Session, searches: list[Search]) -> list[SearchPublic]:
    ids = [s.id for s in searches]
    counts = counts_by_search(session, ids)
    best = best_trials(session, searches)
    best_curves = curves(session, [t.id for t in best.values()])
    out = []
    for s in searches:
        b = best.get(s.id)
        out.append(
            SearchPublic(
                id=s.id,
                name=s.name,
                state=s.state,  # type: ignore[arg-type]
                base=s.base,
                dataset=s.dataset,
                budget=s.budget,
                m0=s.m0,
                max_macs=s.max_macs,
                min_macs=s.min_macs,
                c=s.max_macs / s.m0,
                space={k: (v[0], v[1]) for k, v in s.space.items()},
                objective=s.objective,
                strategy=s.strategy,
                max_trials=s.max_trials,
                parallelism=s.parallelism,
                training=s.training,
                seed=s.seed,
                extra=s.extra,
                counts=counts[s.id],
                best=None if b is None else trial_public(b, best_curves.get(b.id, [])),
                error=s.error,
                created_at=s.created_at,
                finished_at=s.finished_at,
            )
        )
    return out


def stop_search(session: Session, search_id: int) -> Search:
    """running or paused → stopped; queued trials → stopped; running ones hear `stop`."""
    search = get_search(session, search_id, for_update=True)
    if search.state in ("completed", "failed"):
        raise InvalidTransition(f"search {search_id} is already {search.state}")
    if search.state in ("running", "paused"):
        search.state = "stopped"
        search.finished_at = utcnow()
        session.execute(
            update(Trial)
            .where(Trial.search_id == search_id, Trial.state == "queued")
            .values(state="stopped", finished_at=db_now(session), error="search stopped")
        )
    return search


# -- leasing ----------------------------------------------------------------------------------


def lease(session: Session, *, worker: str, lease_seconds: float) -> dict[str, Any] | None:
    """Hand the oldest queued trial of the least-served running search to `worker`.

    Fair across searches: searches with the fewest running trials go first, ties to the older
    search. Returns the lease (see TrialLease) or None if nothing is queued.
    """
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
        select(Search.id).where(Search.state == "running", has_queued).order_by(running, Search.id)
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
            )
        ).one_or_none()
        if row is None:
            continue
        search = session.execute(
            select(Search.dataset, Search.training, Search.seed).where(Search.id == search_id)
        ).one()
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
            "attempts": row.attempts,
            "lease_expires_at": row.lease_expires_at,
            "lease_seconds": lease_seconds,
        }
    return None


# -- the worker hot path on PostgreSQL: one statement per operation, no ORM ---------------------
#
# lease / heartbeat / complete are what every worker does all the time. On PostgreSQL they run as
# fixed SQL strings on a psycopg async cursor of `Database.hot()` (psycopg prepares them
# server-side after a few uses; the ORM's statement building and result processing cost more CPU
# than the database work): each is one statement, its own transaction, doing exactly what the
# SQLAlchemy versions do. Where the original needs several statements in one transaction (a
# heartbeat to which the median rule may apply; a complete with a curve) the caller asks `hot(...,
# atomic=True)`. Whenever the fast statement matches no row (a stale lease, a repeated complete)
# nothing was written, and the caller answers with the general function, which words the exact
# reply (409, the idempotent 200, `stop` of a stopped trial). SQLite uses the general functions
# only.

_PG_LEASE = """
WITH candidate AS (
    SELECT s.id, s.dataset, s.training, s.seed,
           (SELECT count(*) FROM trials r WHERE r.search_id = s.id AND r.state = 'running')
               AS running
    FROM searches s
    WHERE s.state = 'running'
      AND EXISTS (SELECT 1 FROM trials q WHERE q.search_id = s.id AND q.state = 'queued')
    ORDER BY running, s.id
), pick AS (
    SELECT t.id, c.dataset, c.training, c.seed
    FROM candidate c
    CROSS JOIN LATERAL (
        SELECT q.id FROM trials q
        WHERE q.search_id = c.id AND q.state = 'queued'
        ORDER BY q.id
        LIMIT 1
        FOR UPDATE SKIP LOCKED
    ) t
    LIMIT 1
)
UPDATE trials
SET state = 'running', lease_id = %(lease_id)s,
    lease_expires_at = now() + make_interval(secs => %(lease_seconds)s),
    worker = %(worker)s, started_at = coalesce(trials.started_at, now()),
    heartbeat_at = now(), updated_at = now(), error = NULL
FROM pick
WHERE trials.id = pick.id AND trials.state = 'queued'
RETURNING trials.id, trials.search_id, trials.kind, trials.r, trials.d_i, trials.d_m, trials.w,
    trials.eff_r, trials.eff_d_i, trials.eff_d_m, trials.eff_w, trials.arch, trials.macs,
    trials.params, trials.attempts, trials.lease_expires_at, pick.dataset, pick.training,
    pick.seed
"""


async def lease_pg(cursor: Any, *, worker: str, lease_seconds: float) -> dict[str, Any] | None:
    """`lease` in one statement: the same choice (least-served running search first, its oldest
    queued trial not locked by another leaser), the same columns written and returned."""
    lease_id = str(uuid.uuid4())
    await cursor.execute(
        _PG_LEASE, {"lease_id": lease_id, "lease_seconds": lease_seconds, "worker": worker}
    )
    row = await cursor.fetchone()
    if row is None:
        return None
    (trial_id, search_id, kind, r, d_i, d_m, w, eff_r, eff_d_i, eff_d_m, eff_w, arch, macs,
     params, attempts, expires_at, dataset, training, seed) = row  # fmt: skip
    return {
        "id": trial_id,
        "lease_id": lease_id,
        "search_id": search_id,
        "kind": kind,
        "factors": {"r": r, "d_i": d_i, "d_m": d_m, "w": w},
        "effective_factors": {"r": eff_r, "d_i": eff_d_i, "d_m": eff_d_m, "w": eff_w},
        "arch": arch,
        "macs": macs,
        "params": params,
        "dataset": dataset,
        "training": training,
        "seed": seed,
        "attempts": attempts,
        "lease_expires_at": expires_at,
        "lease_seconds": lease_seconds,
    }


_PG_HEARTBEAT = """
WITH beat AS (
    UPDATE trials
    SET lease_expires_at = now() + make_interval(secs => %(lease_seconds)s),
        heartbeat_at = now(), updated_at = now()
    WHERE id = %(trial_id)s AND lease_id = %(lease_id)s AND state = 'running'
    RETURNING search_id, kind, lease_expires_at,
        (SELECT s.state FROM searches s WHERE s.id = trials.search_id) AS search_state
), point AS (
    INSERT INTO trial_metrics (trial_id, epoch, val_top1, val_top5, train_loss, extra, created_at)
    SELECT CAST(%(trial_id)s AS integer), CAST(%(epoch)s AS integer),
           CAST(%(val_top1)s AS double precision), CAST(%(val_top5)s AS double precision),
           CAST(%(train_loss)s AS double precision), CAST(%(extra)s AS json), now()
    FROM beat
    WHERE %(has_metrics)s
    ON CONFLICT (trial_id, epoch) DO UPDATE
    SET val_top1 = excluded.val_top1, val_top5 = excluded.val_top5,
        train_loss = excluded.train_loss, extra = excluded.extra
)
SELECT search_id, kind, lease_expires_at, search_state FROM beat
"""
_PG_MEDIAN_OTHERS = """
SELECT m.val_top1 FROM trial_metrics m JOIN trials t ON t.id = m.trial_id
WHERE t.search_id = %(search_id)s AND t.state = 'completed' AND m.epoch = %(epoch)s
  AND m.val_top1 IS NOT NULL
"""
_PG_BEST_SO_FAR = """
SELECT max(val_top1) FROM trial_metrics WHERE trial_id = %(trial_id)s AND epoch <= %(epoch)s
"""
_PG_STOP = """
UPDATE trials SET state = 'stopped', finished_at = now(), error = %(reason)s, updated_at = now()
WHERE id = %(trial_id)s
"""


def median_rule_may_apply(body: TrialHeartbeat, warmup_epochs: int) -> bool:
    """Whether `heartbeat` may read more and stop the trial (then it needs a transaction)."""
    return "val_top1" in body.metrics and body.epoch >= warmup_epochs


async def heartbeat_pg(
    cursor: Any,
    trial_id: int,
    body: TrialHeartbeat,
    *,
    lease_seconds: float,
    min_trials: int,
    warmup_epochs: int,
) -> dict[str, Any] | None:
    """`heartbeat` for a current lease in one statement (plus the median rule's reads and the
    stop when it applies: run atomically then); None when the lease is not current (nothing
    written: ask `heartbeat`)."""
    metrics = body.metrics
    extra = {k: v for k, v in metrics.items() if k not in CURVE_COLUMNS} or None
    await cursor.execute(
        _PG_HEARTBEAT,
        {
            "trial_id": trial_id,
            "lease_id": body.lease_id,
            "lease_seconds": lease_seconds,
            "epoch": body.epoch,
            "val_top1": metrics.get("val_top1"),
            "val_top5": metrics.get("val_top5"),
            "train_loss": metrics.get("train_loss"),
            "extra": json.dumps(extra),
            "has_metrics": bool(metrics),
        },
    )
    row = await cursor.fetchone()
    if row is None:
        return None
    search_id, kind, expires_at, state = row
    reason: str | None = None
    if state != "running":
        reason = f"search {search_id} is {state}"
    elif kind == "search" and median_rule_may_apply(body, warmup_epochs):
        await cursor.execute(_PG_MEDIAN_OTHERS, {"search_id": search_id, "epoch": body.epoch})
        others = [v for (v,) in await cursor.fetchall()]
        if len(others) >= min_trials:
            await cursor.execute(_PG_BEST_SO_FAR, {"trial_id": trial_id, "epoch": body.epoch})
            (best_so_far,) = await cursor.fetchone()
            reason = _median_verdict(others, best_so_far, body.epoch)
    if reason is None:
        return {"action": "continue", "lease_expires_at": expires_at}
    await cursor.execute(_PG_STOP, {"trial_id": trial_id, "reason": reason})
    return {"action": "stop", "reason": reason}


_PG_COMPLETE = """
UPDATE trials
SET state = 'completed', top1 = %(top1)s, top5 = %(top5)s, latency_ms = %(latency_ms)s,
    images_per_s = %(images_per_s)s, surrogate = %(surrogate)s,
    metrics = CAST(%(metrics)s AS json), report_digest = %(digest)s,
    finished_at = now(), updated_at = now(), error = NULL
WHERE id = %(trial_id)s AND lease_id = %(lease_id)s AND state = 'running'
RETURNING search_id, attempts
"""
_PG_DELETE_CURVE = "DELETE FROM trial_metrics WHERE trial_id = %(trial_id)s"
_PG_INSERT_POINT = """
INSERT INTO trial_metrics (trial_id, epoch, val_top1, val_top5, train_loss, extra, created_at)
VALUES (%(trial_id)s, %(epoch)s, %(val_top1)s, %(val_top5)s, %(train_loss)s,
        CAST(%(extra)s AS json), now())
"""


async def complete_pg(cursor: Any, trial_id: int, body: TrialReport) -> TrialAck | None:
    """`complete` of a running trial under its current lease, in one statement (plus the curve:
    run atomically when there is one); None when it does not apply (nothing written: ask
    `complete` for the exact answer)."""
    extras = {
        k: v
        for k, v in (("reported_macs", body.macs), ("reported_params", body.params))
        if v is not None
    }
    await cursor.execute(
        _PG_COMPLETE,
        {
            "trial_id": trial_id,
            "lease_id": body.lease_id,
            "top1": body.top1,
            "top5": body.top5,
            "latency_ms": body.latency_ms,
            "images_per_s": body.images_per_s,
            "surrogate": body.surrogate,
            "metrics": json.dumps(extras or None),
            "digest": report_digest(body),
        },
    )
    row = await cursor.fetchone()
    if row is None:
        return None
    search_id, attempts = row
    if body.curve:
        await cursor.execute(_PG_DELETE_CURVE, {"trial_id": trial_id})
        await cursor.executemany(
            _PG_INSERT_POINT,
            [
                {
                    "trial_id": trial_id,
                    "epoch": p.epoch,
                    "val_top1": p.val_top1,
                    "val_top5": p.val_top5,
                    "train_loss": p.train_loss,
                    "extra": json.dumps(
                        p.model_dump(exclude_none=True, exclude={"epoch", *CURVE_COLUMNS}) or None
                    ),
                }
                for p in _dedupe_epochs(body)
            ],
        )
    return TrialAck(id=trial_id, search_id=search_id, state="completed", attempts=attempts)


def _stale(session: Session, trial_id: int, lease_id: str, action: str) -> Conflict:
    """Why a report did not match a running lease (NotFound raised directly)."""
    trial = get_trial(session, trial_id)
    if trial.lease_id != lease_id:
        return Conflict(
            f"lease {lease_id} is not the current lease of trial {trial_id} (it expired or the "
            f"trial was re-leased; state {trial.state}): abandon the trial, nothing was changed"
        )
    return InvalidTransition(f"trial {trial_id} is {trial.state}; cannot {action} it")


def _upsert_metric(session: Session, trial_id: int, epoch: int, metrics: dict[str, float]) -> None:
    values = {
        "trial_id": trial_id,
        "epoch": epoch,
        **{name: metrics.get(name) for name in CURVE_COLUMNS},
        "extra": {k: v for k, v in metrics.items() if k not in CURVE_COLUMNS} or None,
    }
    make = pg_insert if _is_postgres(session) else sqlite_insert
    stmt = make(TrialMetric).values(**values)
    stmt = stmt.on_conflict_do_update(
        index_elements=[TrialMetric.trial_id, TrialMetric.epoch],
        set_={k: stmt.excluded[k] for k in (*CURVE_COLUMNS, "extra")},
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
    `search` trial (never a reference trial) at epoch e ≥ `warmup_epochs` whose best val_top1
    so far is below the median of the val_top1 at epoch e of the search's completed trials
    (at least `min_trials` of them with a point at e) is clearly worse than a typical trial;
    it is stopped (state `stopped`), as Optuna's MedianPruner and Vizier's median rule do.
    """
    search_state = select(Search.state).where(Search.id == Trial.search_id).scalar_subquery()
    row = session.execute(
        update(Trial)
        .where(Trial.id == trial_id, Trial.lease_id == body.lease_id, Trial.state == "running")
        .values(
            lease_expires_at=db_later(session, lease_seconds),
            heartbeat_at=db_now(session),
        )
        .returning(Trial.search_id, Trial.kind, Trial.lease_expires_at, search_state)
    ).one_or_none()
    if row is None:
        trial = get_trial(session, trial_id)
        if trial.state == "stopped" and trial.lease_id == body.lease_id:
            return {"action": "stop", "reason": trial.error or "trial stopped"}
        raise _stale(session, trial_id, body.lease_id, "heartbeat")
    search_id, kind, expires_at, state = row
    if body.metrics:
        _upsert_metric(session, trial_id, body.epoch, body.metrics)
    reason: str | None = None
    if state != "running":
        reason = f"search {search_id} is {state}"
    elif kind == "search" and "val_top1" in body.metrics and body.epoch >= warmup_epochs:
        reason = _median_rule(session, trial_id, search_id, body.epoch, min_trials)
    if reason is None:
        return {"action": "continue", "lease_expires_at": expires_at}
    session.execute(
        update(Trial)
        .where(Trial.id == trial_id)
        .values(state="stopped", finished_at=db_now(session), error=reason)
    )
    return {"action": "stop", "reason": reason}


def _median_rule(
    session: Session, trial_id: int, search_id: int, epoch: int, min_trials: int
) -> str | None:
    others = list(
        session.scalars(
            select(TrialMetric.val_top1)
            .join(Trial, Trial.id == TrialMetric.trial_id)
            .where(
                Trial.search_id == search_id,
                Trial.state == "completed",
                TrialMetric.epoch == epoch,
                TrialMetric.val_top1.is_not(None),
            )
        )
    )
    if len(others) < min_trials:
        return None
    best_so_far = session.scalar(
        select(func.max(TrialMetric.val_top1)).where(
            TrialMetric.trial_id == trial_id, TrialMetric.epoch <= epoch
        )
    )
    return _median_verdict(others, best_so_far, epoch)


def _median_verdict(
    others: list[float | None], best_so_far: float | None, epoch: int
) -> str | None:
    median = statistics.median(v for v in others if v is not None)
    if best_so_far is not None and best_so_far < median:
        return (
            f"median stopping rule: best val_top1 {best_so_far:.4f} by epoch {epoch} is below "
            f"the median {median:.4f} of {len(others)} completed trials at that epoch"
        )
    return None


def report_digest(body: TrialReport) -> str:
    payload = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()


def complete(session: Session, trial_id: int, body: TrialReport) -> TrialAck:
    """running → completed with the report; the same report again is an idempotent no-op."""
    digest = report_digest(body)
    extras = {
        k: v
        for k, v in (("reported_macs", body.macs), ("reported_params", body.params))
        if v is not None
    }
    now = db_now(session)
    row = session.execute(
        update(Trial)
        .where(Trial.id == trial_id, Trial.lease_id == body.lease_id, Trial.state == "running")
        .values(
            state="completed",
            top1=body.top1,
            top5=body.top5,
            latency_ms=body.latency_ms,
            images_per_s=body.images_per_s,
            surrogate=body.surrogate,
            metrics=extras or None,
            report_digest=digest,
            finished_at=now,
            updated_at=now,
            error=None,
        )
        .returning(Trial.search_id, Trial.attempts)
    ).one_or_none()
    if row is None:
        trial = get_trial(session, trial_id)
        if (
            trial.state == "completed"
            and trial.lease_id == body.lease_id
            and trial.report_digest == digest
        ):
            return TrialAck(
                id=trial.id, search_id=trial.search_id, state="completed", attempts=trial.attempts
            )
        if trial.state == "completed" and trial.lease_id == body.lease_id:
            raise Conflict(f"trial {trial_id} was already completed with a different report")
        raise _stale(session, trial_id, body.lease_id, "complete")
    if body.curve:
        session.execute(delete(TrialMetric).where(TrialMetric.trial_id == trial_id))
        session.execute(
            insert(TrialMetric),
            [
                {
                    "trial_id": trial_id,
                    "epoch": p.epoch,
                    "val_top1": p.val_top1,
                    "val_top5": p.val_top5,
                    "train_loss": p.train_loss,
                    "extra": p.model_dump(exclude_none=True, exclude={"epoch", *CURVE_COLUMNS})
                    or None,
                }
                for p in _dedupe_epochs(body)
            ],
        )
    return TrialAck(id=trial_id, search_id=row.search_id, state="completed", attempts=row.attempts)


def _dedupe_epochs(body: TrialReport) -> list[Any]:
    by_epoch = {p.epoch: p for p in body.curve}  # the last point of an epoch wins
    return [by_epoch[e] for e in sorted(by_epoch)]


def fail(session: Session, trial_id: int, body: TrialFailure, *, max_attempts: int) -> TrialAck:
    """running → queued (retry, attempts + 1) or failed; stopped if its search was stopped."""
    trial = session.scalar(
        select(Trial)
        .where(Trial.id == trial_id, Trial.lease_id == body.lease_id, Trial.state == "running")
        .with_for_update()
    )
    if trial is None:
        raise _stale(session, trial_id, body.lease_id, "fail")
    search_state = session.scalar(select(Search.state).where(Search.id == trial.search_id))
    attempts = trial.attempts + 1
    if search_state != "running":
        state = "stopped"
    elif body.retry and attempts < max_attempts:
        state = "queued"
    else:
        state = "failed"
    trial.state = state
    trial.attempts = attempts
    trial.error = body.error
    if state == "queued":
        trial.lease_id = None
        trial.lease_expires_at = None
    else:
        trial.finished_at = utcnow()
    session.flush()
    return TrialAck(id=trial.id, search_id=trial.search_id, state=state, attempts=attempts)  # type: ignore[arg-type]


def sweep_expired(session: Session, *, max_attempts: int) -> int:
    """Reclaim running trials whose lease expired by the database clock. Returns how many.

    attempts + 1, then back to queued, or failed once `max_attempts` leases were lost; a trial
    of a stopped search becomes stopped. The old lease_id is cleared, so the old holder's
    reports get 409.
    """
    now = db_now(session)
    expired = (Trial.state == "running", Trial.lease_expires_at < now)
    not_running = select(Search.id).where(Search.state != "running")
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


# -- workers ----------------------------------------------------------------------------------


def list_workers(session: Session) -> list[dict[str, Any]]:
    rows = session.execute(
        select(Trial.worker, Trial.state, Trial.id, Trial.heartbeat_at).where(
            Trial.worker.is_not(None)
        )
    )
    by_worker: dict[str, dict[str, Any]] = {}
    for worker, state, trial_id, seen in rows:
        if worker is None:
            continue
        w = by_worker.setdefault(
            worker,
            {
                "worker": worker,
                "running": 0,
                "completed": 0,
                "failed": 0,
                "last_seen_at": None,
                "running_trials": [],
            },
        )
        if state in ("running", "completed", "failed"):
            w[state] += 1
        if state == "running":
            w["running_trials"].append(trial_id)
        if seen is not None and (w["last_seen_at"] is None or seen > w["last_seen_at"]):
            w["last_seen_at"] = seen
    return sorted(by_worker.values(), key=lambda w: w["worker"])


def finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


assert set(Counts.model_fields) == set(TRIAL_STATES)
