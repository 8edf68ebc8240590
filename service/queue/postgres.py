"""The PostgreSQL trial queue: the worker hot path as fixed SQL, one statement per operation.

lease / heartbeat / complete are what every worker does all the time. Here they run as fixed
SQL strings on a psycopg async cursor of `Database.hot()` (service.db.HotPool: autocommit
connections on the event loop itself; psycopg prepares the statements server-side after a few
uses; the ORM's statement building and result processing cost more CPU than the database work):
each is one statement, its own transaction, doing exactly what the ORM versions in
service.queue.orm do. Where those need several statements in one transaction (a heartbeat to
which the median rule may apply; a complete with a curve) the work runs `atomic=True`. Whenever
the fast statement matches no row (a stale lease, a repeated complete) nothing was written, and
the queue answers with the ORM operation, which words the exact reply (409, the idempotent
answer, `stop` of a stopped trial). fail and the lease sweep are rare: the ORM operations, as
inherited from OrmTrialQueue. Leasing locks with `FOR UPDATE SKIP LOCKED`, so concurrent workers
in any number of server processes never get the same trial.

The lease goes only to a worker that can run the search's trainer (its label among the request's
trainers) and records the worker as seen (a data-modifying CTE upserting `workers`), still one
statement and one round trip. It names the trial's latest checkpoint (a LEFT JOIN on artifacts in
the same statement); completing deletes the checkpoint row in the same statement (a
data-modifying CTE) and its object after. Imports vitcube.contract, service.db, service.queue,
service.queue.orm and service.schemas.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any

from vitcube.contract import BUILTIN_TRAINER
from vitcube.service.db import Database
from vitcube.service.metric import TOP1, metric_of, report_value
from vitcube.service.queue import QueuePolicy
from vitcube.service.queue.orm import (
    CHECKPOINT_COLUMNS,
    OrmTrialQueue,
    curve_rows,
    median_rule_applies,
    median_rule_may_apply,
    median_verdict,
    report_digest,
    report_extras,
    schedule_kind,
    search_stop_reason,
    segment,
    worker_trainers,
)
from vitcube.service.schemas import TrialAck, TrialHeartbeat, TrialReport
from vitcube.service.store import CURVE_COLUMNS

_PG_LEASE = """
WITH seen AS (
    -- The worker asked now, saying which trainers it can run (whether or not it gets a trial).
    INSERT INTO workers (name, trainers, first_seen_at, last_seen_at)
    VALUES (%(worker)s, CAST(%(trainers_json)s AS json), now(), now())
    ON CONFLICT (name) DO UPDATE
    SET trainers = excluded.trainers, last_seen_at = excluded.last_seen_at
), candidate AS (
    SELECT s.id, s.dataset, s.training, s.seed, s.trainer, s.metric,
           (SELECT count(*) FROM trials r WHERE r.search_id = s.id AND r.state = 'running')
               AS running
    FROM searches s
    WHERE s.state = 'running' AND s.trainer_label = ANY(%(trainers)s)
      AND EXISTS (SELECT 1 FROM trials q WHERE q.search_id = s.id AND q.state = 'queued')
    ORDER BY running, s.id
), pick AS (
    SELECT t.id, c.dataset, c.training, c.seed, c.trainer, c.metric
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
-- The trial's latest checkpoint, if any (at most one row: unique (trial_id, kind)).
LEFT JOIN artifacts ck ON ck.trial_id = pick.id AND ck.kind = 'checkpoint'
WHERE trials.id = pick.id AND trials.state = 'queued'
RETURNING trials.id, trials.search_id, trials.kind, trials.r, trials.d_i, trials.d_m, trials.w,
    trials.eff_r, trials.eff_d_i, trials.eff_d_m, trials.eff_w, trials.arch, trials.macs,
    trials.params, trials.attempts, trials.lease_expires_at, pick.dataset, pick.training,
    pick.seed, pick.trainer, pick.metric, trials.to_epoch, ck.epoch, ck.step, ck.bytes, ck.sha256,
    ck.attempt, ck.created_at
"""


async def _lease(
    cursor: Any, *, worker: str, trainers: Sequence[str], lease_seconds: float
) -> dict[str, Any] | None:
    """`orm.lease` in one statement: the same choice (least-served running search whose
    trainer the worker can run first, its oldest queued trial not locked by another leaser), the
    same columns written and returned, and the worker recorded as seen (a data-modifying CTE)."""
    lease_id = str(uuid.uuid4())
    labels = worker_trainers(trainers)
    await cursor.execute(
        _PG_LEASE,
        {
            "lease_id": lease_id,
            "lease_seconds": lease_seconds,
            "worker": worker,
            "trainers": labels,
            "trainers_json": json.dumps(labels),
        },
    )
    row = await cursor.fetchone()
    if row is None:
        return None
    (trial_id, search_id, kind, r, d_i, d_m, w, eff_r, eff_d_i, eff_d_m, eff_w, arch, macs,
     params, attempts, expires_at, dataset, training, seed, trainer, metric,
     to_epoch) = row[:22]  # fmt: skip
    checkpoint = dict(zip(CHECKPOINT_COLUMNS, row[22:], strict=True))
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
        "trainer": trainer,
        "metric": metric,
        "attempts": attempts,
        "lease_expires_at": expires_at,
        "lease_seconds": lease_seconds,
        **segment(
            trial_id,
            training,
            to_epoch,
            checkpoint if checkpoint["bytes"] is not None else None,
        ),
    }


# The search's metric is read in the statement: its value goes into `value` (taken from the
# heartbeat's metrics by the metric's name), the rest beyond the curve columns into `extra`.
_PG_HEARTBEAT = """
WITH beat AS (
    UPDATE trials
    SET lease_expires_at = now() + make_interval(secs => %(lease_seconds)s),
        heartbeat_at = now(), updated_at = now()
    WHERE id = %(trial_id)s AND lease_id = %(lease_id)s AND state = 'running'
    RETURNING search_id, kind, lease_expires_at,
        (SELECT s.state FROM searches s WHERE s.id = trials.search_id) AS search_state,
        (SELECT s.schedule->>'kind' FROM searches s WHERE s.id = trials.search_id) AS schedule,
        (SELECT s.metric FROM searches s WHERE s.id = trials.search_id) AS metric
), named AS (
    SELECT coalesce(metric->>'name', %(top1_name)s) AS name FROM beat
), point AS (
    INSERT INTO trial_metrics (trial_id, epoch, value, val_top5, train_loss, extra, created_at)
    SELECT CAST(%(trial_id)s AS integer), CAST(%(epoch)s AS integer),
           CAST(CAST(%(metrics)s AS jsonb) ->> named.name AS double precision),
           CAST(%(val_top5)s AS double precision), CAST(%(train_loss)s AS double precision),
           NULLIF(CAST(%(extra)s AS jsonb) - named.name, '{}'::jsonb)::json, now()
    FROM named
    WHERE %(has_metrics)s
    ON CONFLICT (trial_id, epoch) DO UPDATE
    SET value = excluded.value, val_top5 = excluded.val_top5,
        train_loss = excluded.train_loss, extra = excluded.extra
)
SELECT search_id, kind, lease_expires_at, search_state, schedule, metric FROM beat
"""
_PG_MEDIAN_OTHERS = """
SELECT m.value FROM trial_metrics m JOIN trials t ON t.id = m.trial_id
WHERE t.search_id = %(search_id)s AND t.state = 'completed' AND m.epoch = %(epoch)s
  AND m.value IS NOT NULL
"""
_PG_BEST_SO_FAR = """
SELECT max(value), min(value) FROM trial_metrics
WHERE trial_id = %(trial_id)s AND epoch <= %(epoch)s
"""
_PG_STOP = """
UPDATE trials SET state = 'stopped', finished_at = now(), error = %(reason)s, updated_at = now(),
    epochs_trained = greatest(epochs_trained, %(epoch)s)
WHERE id = %(trial_id)s
"""


async def _heartbeat(
    cursor: Any,
    trial_id: int,
    body: TrialHeartbeat,
    *,
    lease_seconds: float,
    min_trials: int,
    warmup_epochs: int,
) -> dict[str, Any] | None:
    """`orm.heartbeat` for a current lease in one statement (plus the median rule's reads and
    the stop when it applies: run atomically then); None when the lease is not current (nothing
    written: ask `orm.heartbeat`)."""
    metrics = body.metrics
    await cursor.execute(
        _PG_HEARTBEAT,
        {
            "trial_id": trial_id,
            "epoch": body.epoch,
            "metrics": json.dumps(metrics),
            **{name: metrics.get(name) for name in CURVE_COLUMNS},
            "extra": json.dumps({k: v for k, v in metrics.items() if k not in CURVE_COLUMNS}),
            "lease_id": body.lease_id,
            "lease_seconds": lease_seconds,
            "top1_name": TOP1,
            "has_metrics": bool(body.metrics),
        },
    )
    row = await cursor.fetchone()
    if row is None:
        return None
    search_id, kind, expires_at, state, schedule, stored = row
    metric = metric_of(stored)
    reason = search_stop_reason(search_id, state)
    if reason is None and median_rule_applies(
        kind, schedule_kind(schedule), body, warmup_epochs, metric
    ):
        await cursor.execute(_PG_MEDIAN_OTHERS, {"search_id": search_id, "epoch": body.epoch})
        others = [v for (v,) in await cursor.fetchall()]
        if len(others) >= min_trials:
            await cursor.execute(_PG_BEST_SO_FAR, {"trial_id": trial_id, "epoch": body.epoch})
            highest, lowest = await cursor.fetchone()
            reason = median_verdict(others, (highest, lowest), body.epoch, metric)
    if reason is None:
        return {"action": "continue", "lease_expires_at": expires_at}
    await cursor.execute(_PG_STOP, {"trial_id": trial_id, "reason": reason, "epoch": body.epoch})
    return {"action": "stop", "reason": reason}


# The report's value of the search's metric: `value`, or `top1` for a val_top1 search. A report
# with neither matches no row (nothing written): orm.complete then refuses it, naming the metric.
_PG_COMPLETE = """
WITH segment AS (
    -- The segment's end: the trial's to_epoch, or all of training.epochs.
    SELECT t.id, coalesce(t.to_epoch, (s.training->>'epochs')::integer) AS end_epoch,
           coalesce(t.to_epoch, (s.training->>'epochs')::integer)
               >= (s.training->>'epochs')::integer AS last,
           s.metric,
           coalesce(CAST(%(value)s AS double precision),
                    CASE WHEN coalesce(s.metric->>'name', %(top1_name)s) = %(top1_name)s
                         THEN CAST(%(top1)s AS double precision) END) AS value
    FROM trials t JOIN searches s ON s.id = t.search_id
    WHERE t.id = %(trial_id)s
), done AS (
UPDATE trials
SET state = CASE WHEN segment.last THEN 'completed' ELSE 'paused' END,
    value = segment.value, top5 = %(top5)s, latency_ms = %(latency_ms)s,
    images_per_s = %(images_per_s)s, surrogate = %(surrogate)s,
    metrics = NULLIF(
        CASE WHEN json_typeof(metrics) = 'object' THEN metrics::jsonb ELSE '{}' END
            || COALESCE(CAST(%(metrics)s AS jsonb), '{}'),
        '{}')::json,
    report_digest = %(digest)s,
    rung_values = (coalesce(rung_values::jsonb, '{}') || jsonb_build_object(
        segment.end_epoch::text, segment.value))::json,
    epochs_trained = segment.end_epoch,
    finished_at = CASE WHEN segment.last THEN now() END, updated_at = now(), error = NULL
FROM segment
WHERE trials.id = segment.id AND trials.lease_id = %(lease_id)s AND trials.state = 'running'
  AND segment.value IS NOT NULL
RETURNING trials.search_id, trials.attempts, trials.state, segment.metric
), images AS (
    UPDATE searches SET train_images = CAST(%(train_images)s AS bigint)
    WHERE id = (SELECT search_id FROM done) AND CAST(%(train_images)s AS bigint) IS NOT NULL
      AND train_images IS DISTINCT FROM CAST(%(train_images)s AS bigint)
), cleared AS (
    -- A completed trial needs no checkpoint (a paused one resumes from it): its row goes in
    -- this statement, the object after.
    DELETE FROM artifacts
    WHERE trial_id = %(trial_id)s AND kind = 'checkpoint'
      AND EXISTS (SELECT 1 FROM done WHERE done.state = 'completed')
    RETURNING key
)
SELECT search_id, attempts, state, ARRAY(SELECT key FROM cleared), metric FROM done
"""
_PG_DELETE_CURVE = "DELETE FROM trial_metrics WHERE trial_id = %(trial_id)s"
_PG_INSERT_POINT = """
INSERT INTO trial_metrics (trial_id, epoch, value, val_top5, train_loss, extra, created_at)
VALUES (%(trial_id)s, %(epoch)s, %(value)s, %(val_top5)s, %(train_loss)s,
        CAST(%(extra)s AS json), now())
"""


async def _complete(
    cursor: Any, trial_id: int, body: TrialReport
) -> tuple[TrialAck, list[str]] | None:
    """`orm.complete_clearing` of a running trial under its current lease, in one statement
    (plus the curve: run atomically when there is one, and checked against the search's metric
    the statement read: InvalidInput rolls it all back): the answer and the checkpoint keys to
    delete after commit; None when it does not apply (nothing written: ask `orm.complete` for
    the exact answer)."""
    extras = report_extras(body)
    await cursor.execute(
        _PG_COMPLETE,
        {
            "trial_id": trial_id,
            "lease_id": body.lease_id,
            "value": body.value,
            "top1": body.top1,
            "top1_name": TOP1,
            "top5": body.top5,
            "latency_ms": body.latency_ms,
            "images_per_s": body.images_per_s,
            "surrogate": body.surrogate,
            # SQL NULL when there are none: JSON null would make `metrics || null` an array.
            "metrics": None if extras is None else json.dumps(extras),
            "digest": report_digest(body),
            "train_images": body.train_images,
        },
    )
    row = await cursor.fetchone()
    if row is None:
        return None
    search_id, attempts, state, keys, stored = row
    if body.curve:
        metric = metric_of(stored)
        report_value(metric, body)  # a curve point without the metric: InvalidInput, rolled back
        await cursor.execute(_PG_DELETE_CURVE, {"trial_id": trial_id})
        await cursor.executemany(
            _PG_INSERT_POINT,
            [
                {**row, "extra": json.dumps(row["extra"])}
                for row in curve_rows(trial_id, body, metric)
            ],
        )
    ack = TrialAck(id=trial_id, search_id=search_id, state=state, attempts=attempts)
    return ack, list(keys or [])


class PostgresTrialQueue(OrmTrialQueue):
    """lease / heartbeat / complete on `Database.hot`; the ORM operations for everything else."""

    def __init__(self, db: Database, policy: QueuePolicy) -> None:
        if not db.is_postgres:
            raise ValueError("PostgresTrialQueue needs PostgreSQL; use make_queue(db, …)")
        super().__init__(db, policy)

    async def lease(
        self, *, worker: str, trainers: Sequence[str] = (BUILTIN_TRAINER,)
    ) -> dict[str, Any] | None:
        lease_seconds = self.policy.lease_seconds
        return await self.db.hot(
            lambda cursor: _lease(
                cursor, worker=worker, trainers=trainers, lease_seconds=lease_seconds
            )
        )

    async def heartbeat(self, trial_id: int, body: TrialHeartbeat) -> dict[str, Any]:
        policy = self.policy
        reply = await self.db.hot(
            lambda cursor: _heartbeat(
                cursor,
                trial_id,
                body,
                lease_seconds=policy.lease_seconds,
                min_trials=policy.median_stop_min_trials,
                warmup_epochs=policy.median_stop_warmup_epochs,
            ),
            atomic=median_rule_may_apply(body, policy.median_stop_warmup_epochs),
        )
        if reply is None:  # not a current lease: the ORM operation words the answer
            return await super().heartbeat(trial_id, body)
        return reply

    async def complete(self, trial_id: int, body: TrialReport) -> TrialAck:
        done = await self.db.hot(
            lambda cursor: _complete(cursor, trial_id, body), atomic=bool(body.curve)
        )
        if done is None:  # a repeated or stale report: the ORM operation words the answer
            return await super().complete(trial_id, body)
        ack, keys = done
        await self.forget(keys)
        return ack
