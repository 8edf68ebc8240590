"""The trial queue's conformance suite: the same tests, through the interface, on both backends.

Every test calls a TrialQueue directly (no HTTP, no planner or sweeper threads) on SQLite and on
PostgreSQL (the `backend` fixture), and checks what a worker or a user would notice: the answers
and what is stored. SQLite runs the ORM operations; PostgreSQL runs fixed SQL on the hot path and
the ORM operations for the rest, so a behaviour one backend has and the other lacks fails here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select, update

from tests.factories import add_search, command_trainer, curve, make_settings, report_body
from vitcube.service import store
from vitcube.service.db import Database
from vitcube.service.errors import Conflict, InvalidTransition, NotFound
from vitcube.service.queue import TrialQueue, make_queue
from vitcube.service.schemas import (
    TrialAck,
    TrialFailure,
    TrialHeartbeat,
    TrialLease,
    TrialReport,
)
from vitcube.service.tables import Search, Trial, Worker

pytestmark = pytest.mark.anyio

SHORT_LEASE_S = 0.2


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    # pool_size 20: the PostgreSQL hot path may use 20 connections at once, so concurrent leases
    # really race in the database.
    database = Database(database_url, pool_size=20)
    yield database
    database.dispose()


def queue_for(db: Database, **settings: Any) -> TrialQueue:
    return make_queue(db, make_settings(db.url, **settings))


@pytest.fixture
def queue(db: Database) -> TrialQueue:
    return queue_for(db)


def trial_row(db: Database, trial_id: int) -> dict[str, Any]:
    """Every column of the trial, and its curve."""
    with db.session() as session:
        trial = store.get_trial(session, trial_id)
        row = {c.key: getattr(trial, c.key) for c in Trial.__table__.columns}
        row["curve"] = store.curves(session, [trial_id]).get(trial_id, [])
    return row


def search_trial_ids(db: Database, search_id: int) -> list[int]:
    with db.session() as session:
        return list(
            session.scalars(select(Trial.id).where(Trial.search_id == search_id).order_by(Trial.id))
        )


def heartbeat(lease: dict[str, Any], epoch: int, **metrics: float) -> TrialHeartbeat:
    return TrialHeartbeat(lease_id=lease["lease_id"], epoch=epoch, metrics=metrics)


def report(lease: dict[str, Any], **overrides: Any) -> TrialReport:
    return TrialReport(**report_body(lease, **overrides))


def failure(lease: dict[str, Any], error: str = "CUDA OOM", *, retry: bool) -> TrialFailure:
    return TrialFailure(lease_id=lease["lease_id"], error=error, retry=retry)


def set_search_state(db: Database, search_id: int, state: str) -> None:
    with db.session(write=True) as session:
        session.execute(update(Search).where(Search.id == search_id).values(state=state))


# -- lease ------------------------------------------------------------------------------------


async def test_concurrent_leases_hand_out_every_queued_trial_exactly_once(
    db: Database, queue: TrialQueue
) -> None:
    search_id = add_search(db, queued=20)
    leases = await asyncio.gather(*(queue.lease(worker=f"w{n}") for n in range(50)))
    granted = [lease for lease in leases if lease is not None]
    assert len(granted) == 20
    assert sorted(lease["id"] for lease in granted) == search_trial_ids(db, search_id)
    assert len({lease["lease_id"] for lease in granted}) == 20
    for lease in granted:  # each trial is held by the one worker that was told it has it
        row = trial_row(db, lease["id"])
        assert row["state"] == "running"
        assert (row["lease_id"], row["worker"]) == (lease["lease_id"], f"w{leases.index(lease)}")
    assert await queue.lease(worker="late") is None


async def test_concurrent_leases_by_trainer_go_once_each_to_a_worker_that_can_run_them(
    db: Database, queue: TrialQueue
) -> None:
    builtin = add_search(db, queued=10)
    a = add_search(db, queued=10, **command_trainer("a"))
    b = add_search(db, queued=4, **command_trainer("b"))  # nobody here can run it
    can_run = [["builtin"], ["command:a"], ["builtin", "command:a"]]
    trainers = {f"w{n}": can_run[n % 3] for n in range(60)}
    leases = await asyncio.gather(
        *(queue.lease(worker=name, trainers=labels) for name, labels in trainers.items())
    )
    granted = [(name, lease) for name, lease in zip(trainers, leases, strict=True) if lease]
    ids = [lease["id"] for _, lease in granted]
    assert len(ids) == len(set(ids))  # no trial leased twice
    label = {builtin: "builtin", a: "command:a", b: "command:b"}
    for name, lease in granted:  # each to a worker that can run it, as the database says
        assert label[lease["search_id"]] in trainers[name]
        row = trial_row(db, lease["id"])
        assert (row["state"], row["worker"], row["lease_id"]) == (
            "running",
            name,
            lease["lease_id"],
        )
    # Whatever a racing worker skipped is still there for the next one; command:b never goes.
    ids += [lease["id"] for lease in await lease_all(queue, "late", ["builtin", "command:a"])]
    assert sorted(ids) == sorted(search_trial_ids(db, builtin) + search_trial_ids(db, a))
    assert {trial_row(db, t)["state"] for t in search_trial_ids(db, b)} == {"queued"}
    assert set(workers_table(db)) == {*trainers, "late"}


async def test_a_lease_carries_everything_a_worker_needs(db: Database, queue: TrialQueue) -> None:
    search_id = add_search(db, queued=2)
    first = search_trial_ids(db, search_id)[0]
    lease = await queue.lease(worker="box-1:cuda0")
    assert lease is not None
    assert set(lease) == {
        "id", "lease_id", "search_id", "kind", "factors", "effective_factors", "arch", "macs",
        "params", "dataset", "training", "seed", "attempts", "lease_expires_at", "lease_seconds",
        "from_epoch", "to_epoch", "checkpoint", "trainer", "metric",
    }  # fmt: skip
    assert lease["trainer"] == {"kind": "builtin"}
    assert lease["metric"] == {"name": "val_top1", "goal": "maximize"}
    assert (lease["from_epoch"], lease["checkpoint"]) == (0, None)  # nothing to resume from
    assert lease["to_epoch"] == lease["training"]["epochs"]
    TrialLease(**lease)  # what the route answers with
    row = trial_row(db, first)
    assert lease["id"] == first and lease["search_id"] == search_id
    assert lease["kind"] == "reference:width_only"  # the oldest queued trial
    assert lease["factors"] == {f: row[f] for f in ("r", "d_i", "d_m", "w")}
    assert lease["effective_factors"] == {f: row[f"eff_{f}"] for f in ("r", "d_i", "d_m", "w")}
    assert (lease["arch"], lease["macs"], lease["params"]) == (
        row["arch"],
        row["macs"],
        row["params"],
    )
    assert lease["dataset"] == {"name": "digits", "num_classes": 10}
    assert lease["training"]["epochs"] == 3 and lease["seed"] == 1
    assert lease["attempts"] == 0 and lease["lease_seconds"] == 60.0
    assert row["state"] == "running" and row["worker"] == "box-1:cuda0"
    assert row["lease_id"] == lease["lease_id"] and row["error"] is None
    assert row["lease_expires_at"] == lease["lease_expires_at"]
    assert row["started_at"] is not None and row["heartbeat_at"] is not None
    held_s = (lease["lease_expires_at"] - row["heartbeat_at"]).total_seconds()
    assert held_s == pytest.approx(60.0, abs=1.0)  # by the database clock


# -- leasing by trainer -------------------------------------------------------------------------


async def lease_all(
    queue: TrialQueue, worker: str, trainers: list[str] | None = None
) -> list[dict[str, Any]]:
    """Lease until nothing is left for this worker; the leases in order."""
    options = {} if trainers is None else {"trainers": trainers}
    leases = []
    while (lease := await queue.lease(worker=worker, **options)) is not None:
        leases.append(lease)
        assert len(leases) <= 50, "leased more trials than were queued"
    return leases


def workers_table(db: Database) -> dict[str, dict[str, Any]]:
    with db.session() as session:
        return {
            w.name: {"trainers": w.trainers, "first": w.first_seen_at, "last": w.last_seen_at}
            for w in session.scalars(select(Worker))
        }


async def test_a_builtin_only_worker_never_leases_a_command_trial(
    db: Database, queue: TrialQueue
) -> None:
    command = add_search(db, queued=3, **command_trainer("det-v2"))
    builtin = add_search(db, queued=2)
    leases = await lease_all(queue, "old-worker")  # names no trainers: builtin only, as before
    assert sorted(lease["id"] for lease in leases) == search_trial_ids(db, builtin)
    assert await queue.lease(worker="old-worker", trainers=["builtin"]) is None
    assert {trial_row(db, t)["state"] for t in search_trial_ids(db, command)} == {"queued"}


async def test_a_worker_leases_only_the_command_labels_it_was_given(
    db: Database, queue: TrialQueue
) -> None:
    a = add_search(db, queued=3, **command_trainer("a", metric="val_miou"))
    b = add_search(db, queued=2, **command_trainer("b"))
    add_search(db, queued=2)  # builtin
    leases = await lease_all(queue, "box-a", ["command:a"])
    assert sorted(lease["id"] for lease in leases) == search_trial_ids(db, a)
    for lease in leases:  # the lease says what trains it, what ranks it and its data, as stored
        assert lease["trainer"] == {"kind": "command", "name": "a"}
        assert lease["metric"] == {"name": "val_miou", "goal": "maximize"}
        assert lease["dataset"] == command_trainer()["dataset"]
        leased = TrialLease(**lease)
        assert (leased.trainer.label, leased.metric.name) == ("command:a", "val_miou")
    assert {trial_row(db, t)["state"] for t in search_trial_ids(db, b)} == {"queued"}


async def test_a_worker_with_builtin_and_a_command_leases_both_and_nothing_else(
    db: Database, queue: TrialQueue
) -> None:
    builtin = add_search(db, queued=2)
    a = add_search(db, queued=2, **command_trainer("a"))
    b = add_search(db, queued=2, **command_trainer("b"))
    leases = await lease_all(queue, "box", ["builtin", "command:a"])
    assert sorted(lease["id"] for lease in leases) == sorted(
        search_trial_ids(db, builtin) + search_trial_ids(db, a)
    )
    assert {lease["search_id"] for lease in leases} == {builtin, a}  # fair: both served
    assert {trial_row(db, t)["state"] for t in search_trial_ids(db, b)} == {"queued"}


async def test_every_lease_request_records_the_worker_and_its_trainers(
    db: Database, queue: TrialQueue
) -> None:
    assert await queue.lease(worker="idle", trainers=["command:x", "builtin", "command:x"]) is None
    first = workers_table(db)["idle"]
    assert first["trainers"] == ["command:x", "builtin"]  # each once, as sent
    with db.session() as session:
        now = session.scalar(select(store.db_now(session)))
    assert abs((now - first["last"]).total_seconds()) < 5  # by the database clock
    add_search(db, queued=1)
    assert await queue.lease(worker="idle") is not None  # now builtin only
    again = workers_table(db)["idle"]
    assert again["trainers"] == ["builtin"]
    assert again["first"] == first["first"] and again["last"] >= first["last"]
    assert set(workers_table(db)) == {"idle"}


async def test_leases_go_to_the_least_served_running_search_first(
    db: Database, queue: TrialQueue
) -> None:
    older = add_search(db, queued=3, name="older")
    newer = add_search(db, queued=3, name="newer", seed=2)
    done = add_search(db, queued=2, name="done", seed=3)
    set_search_state(db, done, "completed")  # queued trials of a search not running stay put
    leases = [await queue.lease(worker="w") for _ in range(7)]
    assert [lease and lease["search_id"] for lease in leases] == [
        older, newer, older, newer, older, newer, None,
    ]  # fmt: skip
    assert [lease and lease["id"] for lease in leases[::2][:3]] == search_trial_ids(db, older)
    assert {trial_row(db, t)["state"] for t in search_trial_ids(db, done)} == {"queued"}


# -- heartbeat --------------------------------------------------------------------------------


async def test_a_heartbeat_extends_the_lease_and_records_the_epoch(
    db: Database, queue: TrialQueue
) -> None:
    add_search(db, queued=1)
    lease = await queue.lease(worker="w")
    assert lease is not None
    await asyncio.sleep(0.05)
    reply = await queue.heartbeat(lease["id"], heartbeat(lease, 1, val_top1=0.5, lr=0.001))
    assert set(reply) == {"action", "lease_expires_at"} and reply["action"] == "continue"
    assert reply["lease_expires_at"] > lease["lease_expires_at"]
    row = trial_row(db, lease["id"])
    assert row["lease_expires_at"] == reply["lease_expires_at"]
    assert row["curve"] == [
        {"epoch": 1, "val_top1": 0.5, "val_top5": None, "train_loss": None, "lr": 0.001}
    ]
    # The same epoch again replaces its point; a heartbeat without metrics records none.
    await queue.heartbeat(lease["id"], heartbeat(lease, 1, val_top1=0.6, train_loss=1.2))
    assert (await queue.heartbeat(lease["id"], heartbeat(lease, 2)))["action"] == "continue"
    assert trial_row(db, lease["id"])["curve"] == [
        {"epoch": 1, "val_top1": 0.6, "val_top5": None, "train_loss": 1.2}
    ]
    assert trial_row(db, lease["id"])["state"] == "running"


async def test_the_median_rule_answers_stop_to_a_hopeless_search_trial(db: Database) -> None:
    queue = queue_for(db, median_stop_min_trials=3, median_stop_warmup_epochs=1)
    strict = queue_for(db, median_stop_min_trials=4, median_stop_warmup_epochs=1)
    add_search(db, queued=6)
    leases = [await queue.lease(worker=f"w{n}") for n in range(6)]
    reference, other_reference, *searches = [lease for lease in leases if lease is not None]
    assert [lease["kind"] for lease in leases if lease is not None] == [
        "reference:width_only", "reference:compound", "search", "search", "search", "search",
    ]  # fmt: skip
    for lease in (reference, searches[0], searches[1]):  # val_top1 0.6 at epoch 1, 0.9 at 2
        await queue.complete(lease["id"], report(lease, top1=0.9, curve=curve(3, 0.9)))
    hopeful, hopeless = searches[2], searches[3]

    async def action(queue: TrialQueue, lease: dict[str, Any], epoch: int, top1: float) -> str:
        reply = await queue.heartbeat(lease["id"], heartbeat(lease, epoch, val_top1=top1))
        return str(reply["action"])

    assert await action(queue, other_reference, 1, 0.05) == "continue"  # references are exempt
    assert await action(queue, hopeless, 0, 0.0) == "continue"  # still warming up
    assert await action(strict, hopeless, 1, 0.05) == "continue"  # only 3 completed trials
    assert await action(queue, hopeful, 1, 0.95) == "continue"
    assert await action(queue, hopeful, 2, 0.1) == "continue"  # its best so far, 0.95, is fine
    reply = await queue.heartbeat(hopeless["id"], heartbeat(hopeless, 1, val_top1=0.05))
    assert reply["action"] == "stop" and "median" in reply["reason"]
    row = trial_row(db, hopeless["id"])
    assert row["state"] == "stopped" and row["error"] == reply["reason"]
    assert row["finished_at"] is not None
    assert [p["val_top1"] for p in row["curve"]] == [0.0, 0.05]
    # The worker that missed the answer hears it again under the same lease.
    again = await queue.heartbeat(hopeless["id"], heartbeat(hopeless, 2, val_top1=0.5))
    assert again == {"action": "stop", "reason": reply["reason"]}
    assert trial_row(db, hopeful["id"])["state"] == "running"


async def test_a_stopped_search_answers_stop_and_its_trials_end_stopped(
    db: Database, queue: TrialQueue
) -> None:
    search_id = add_search(db, queued=3)
    beating, failing = await queue.lease(worker="a"), await queue.lease(worker="b")
    assert beating is not None and failing is not None
    with db.session(write=True) as session:
        store.stop_search(session, search_id)
    reason = f"search {search_id} is stopped"
    assert await queue.heartbeat(beating["id"], heartbeat(beating, 0)) == {
        "action": "stop",
        "reason": reason,
    }
    assert trial_row(db, beating["id"])["state"] == "stopped"
    with pytest.raises(InvalidTransition, match="is stopped"):
        await queue.complete(beating["id"], report(beating))
    ack = await queue.fail(failing["id"], failure(failing, retry=True))
    assert (ack.state, ack.attempts) == ("stopped", 1)
    assert await queue.lease(worker="c") is None


# -- complete ---------------------------------------------------------------------------------


@pytest.mark.parametrize("with_curve", [True, False], ids=["curve", "no-curve"])
async def test_complete_is_idempotent_and_a_different_report_conflicts(
    db: Database, queue: TrialQueue, with_curve: bool
) -> None:
    search_id = add_search(db, queued=1)
    lease = await queue.lease(worker="w")
    assert lease is not None
    await queue.heartbeat(lease["id"], heartbeat(lease, 0, val_top1=0.1))
    points = [*curve(3, 0.83), {"epoch": 1, "val_top1": 0.7, "lr": 0.001}]
    body = report(lease, top1=0.83, curve=points if with_curve else [])
    first = await queue.complete(lease["id"], body)
    assert first == TrialAck(id=lease["id"], search_id=search_id, state="completed", attempts=0)
    stored = trial_row(db, lease["id"])
    assert await queue.complete(lease["id"], body) == first  # the worker's retry: a no-op
    assert trial_row(db, lease["id"]) == stored
    with pytest.raises(Conflict, match="different report"):
        await queue.complete(lease["id"], report(lease, top1=0.5, curve=body.curve))
    assert trial_row(db, lease["id"]) == stored
    assert stored["state"] == "completed" and stored["error"] is None
    assert (stored["value"], stored["top5"], stored["latency_ms"], stored["images_per_s"]) == (
        body.top1,
        body.top5,
        body.latency_ms,
        body.images_per_s,
    )
    assert stored["surrogate"] is True and stored["finished_at"] is not None
    assert stored["metrics"] == {"reported_macs": lease["macs"], "reported_params": lease["params"]}
    if with_curve:  # the report's curve replaces the heartbeats'; an epoch's last point wins
        assert stored["curve"] == [
            {"epoch": 0, "val_top1": 0.276667, "val_top5": 0.376667, "train_loss": 2.0},
            {"epoch": 1, "val_top1": 0.7, "val_top5": None, "train_loss": None, "lr": 0.001},
            {"epoch": 2, "val_top1": 0.83, "val_top5": 0.93, "train_loss": 0.666667},
        ]
    else:  # no curve in the report: the heartbeats' points stay
        assert [(p["epoch"], p["val_top1"]) for p in stored["curve"]] == [(0, 0.1)]
    with pytest.raises(InvalidTransition, match="is completed"):
        await queue.heartbeat(lease["id"], heartbeat(lease, 3))


# -- stale leases -----------------------------------------------------------------------------


async def test_a_stale_lease_is_refused_and_changes_nothing(
    db: Database, queue: TrialQueue
) -> None:
    add_search(db, queued=1)
    lease = await queue.lease(worker="w")
    assert lease is not None
    await queue.heartbeat(lease["id"], heartbeat(lease, 0, val_top1=0.3))
    before = trial_row(db, lease["id"])
    stale = {**lease, "lease_id": "not-the-lease"}
    for operation in (
        queue.heartbeat(lease["id"], heartbeat(stale, 1, val_top1=0.1)),
        queue.complete(lease["id"], report(stale)),
        queue.fail(lease["id"], failure(stale, retry=True)),
    ):
        with pytest.raises(Conflict, match="not the current lease") as refused:
            await operation
        assert type(refused.value) is Conflict  # not InvalidTransition: the lease is the issue
    assert trial_row(db, lease["id"]) == before
    for operation in (
        queue.heartbeat(2_000_000, heartbeat(lease, 1)),
        queue.complete(2_000_000, report(lease)),
        queue.fail(2_000_000, failure(lease, retry=True)),
    ):
        with pytest.raises(NotFound):
            await operation


# -- fail and expiry --------------------------------------------------------------------------


async def test_fail_with_retry_queues_again_until_max_attempts(db: Database) -> None:
    queue = queue_for(db, max_attempts=3)
    search_id = add_search(db, queued=2)
    first, second = search_trial_ids(db, search_id)
    for attempts in (1, 2):
        lease = await queue.lease(worker="w")
        assert lease is not None and (lease["id"], lease["attempts"]) == (first, attempts - 1)
        ack = await queue.fail(first, failure(lease, retry=True))
        assert ack == TrialAck(id=first, search_id=search_id, state="queued", attempts=attempts)
        row = trial_row(db, first)
        assert (row["state"], row["lease_id"], row["lease_expires_at"]) == ("queued", None, None)
        assert row["error"] == "CUDA OOM" and row["finished_at"] is None
    lease = await queue.lease(worker="w")
    assert lease is not None and lease["id"] == first
    ack = await queue.fail(first, failure(lease, "CUDA OOM again", retry=True))
    assert (ack.state, ack.attempts) == ("failed", 3)
    row = trial_row(db, first)
    assert (row["state"], row["error"]) == ("failed", "CUDA OOM again")
    assert row["finished_at"] is not None
    # Not retryable: failed at once.
    lease = await queue.lease(worker="w")
    assert lease is not None and lease["id"] == second
    ack = await queue.fail(second, failure(lease, "no such dataset", retry=False))
    assert (ack.state, ack.attempts) == ("failed", 1)
    assert await queue.lease(worker="w") is None


async def test_an_expired_lease_is_queued_again_then_failed_after_max_attempts(
    db: Database,
) -> None:
    short = queue_for(db, lease_seconds=SHORT_LEASE_S, max_attempts=2)
    long = queue_for(db, max_attempts=2)
    search_id = add_search(db, queued=2)
    expiring_id, kept_id = search_trial_ids(db, search_id)
    old = await short.lease(worker="slow")
    kept = await long.lease(worker="steady")
    assert old is not None and kept is not None
    assert (old["id"], kept["id"]) == (expiring_id, kept_id)
    time.sleep(SHORT_LEASE_S + 0.2)
    assert await long.sweep_expired() == 1  # only the expired lease, whichever queue sweeps
    row = trial_row(db, expiring_id)
    assert (row["state"], row["attempts"], row["lease_id"]) == ("queued", 1, None)
    assert row["error"] == "lease expired; queued again"
    assert trial_row(db, kept_id)["state"] == "running"
    new = await short.lease(worker="fast")
    assert new is not None and new["id"] == expiring_id
    assert new["attempts"] == 1 and new["lease_id"] != old["lease_id"]
    with pytest.raises(Conflict, match="not the current lease"):  # the old holder is refused
        await short.complete(expiring_id, report(old))
    time.sleep(SHORT_LEASE_S + 0.2)
    assert await short.sweep_expired() == 1
    row = trial_row(db, expiring_id)
    assert (row["state"], row["attempts"]) == ("failed", 2)
    assert row["error"] == "lease expired; out of attempts" and row["finished_at"] is not None
    assert await short.sweep_expired() == 0
    assert await short.lease(worker="w") is None


async def test_an_expired_lease_of_a_stopped_search_ends_stopped(db: Database) -> None:
    queue = queue_for(db, lease_seconds=SHORT_LEASE_S)
    search_id = add_search(db, queued=1)
    lease = await queue.lease(worker="w")
    assert lease is not None
    with db.session(write=True) as session:
        store.stop_search(session, search_id)
    time.sleep(SHORT_LEASE_S + 0.2)
    assert await queue.sweep_expired() == 1
    row = trial_row(db, lease["id"])
    assert (row["state"], row["attempts"]) == ("stopped", 0)
    assert row["error"] == "lease expired after the search stopped"


def _pause(db: Database, search_id: int) -> None:
    with db.session(write=True) as session:
        session.execute(update(Search).where(Search.id == search_id).values(state="paused"))


async def test_a_paused_search_keeps_its_running_trials_and_leases_nothing_new(
    db: Database,
) -> None:
    queue = queue_for(db, lease_seconds=SHORT_LEASE_S)
    search_id = add_search(db, queued=3)
    first = await queue.lease(worker="w")
    second = await queue.lease(worker="w")
    assert first is not None and second is not None
    _pause(db, search_id)
    assert await queue.lease(worker="w") is None  # its queued trial waits for the resume
    # a running trial of a paused search goes on ...
    reply = await queue.heartbeat(first["id"], heartbeat(first, 0, val_top1=0.4))
    assert reply["action"] == "continue"
    # ... a retryable failure queues it again, and so does an expired lease
    ack = await queue.fail(
        first["id"], TrialFailure(lease_id=first["lease_id"], error="SIGTERM", retry=True)
    )
    assert (ack.state, ack.attempts) == ("queued", 1)
    time.sleep(SHORT_LEASE_S + 0.2)
    assert await queue.sweep_expired() == 1
    row = trial_row(db, second["id"])
    assert (row["state"], row["attempts"]) == ("queued", 1)


async def test_non_retryable_failures_with_one_error_pause_the_search(db: Database) -> None:
    queue = queue_for(db, fail_fast_after=2)
    search_id = add_search(db, queued=3)
    leases = [await queue.lease(worker="w") for _ in range(3)]
    for lease in leases[:2]:
        assert lease is not None
        failure = TrialFailure(lease_id=lease["lease_id"], error="no dataset at /d", retry=False)
        ack = await queue.fail(lease["id"], failure)
        assert ack.state == "failed"
        assert trial_row(db, lease["id"])["error_retryable"] is False
    with db.session() as session:
        search = store.get_search(session, search_id)
        assert search.state == "paused" and "no dataset at /d" in (search.error or "")


async def test_a_worker_fault_is_queued_again_without_charging_an_attempt(db: Database) -> None:
    queue = queue_for(db, max_attempts=2, max_worker_faults=2, fail_fast_after=1)
    search_id = add_search(db, queued=1)
    (trial_id,) = search_trial_ids(db, search_id)
    fault = "CUDA error: an illegal memory access was encountered"
    for faults in (1, 2):  # free: the GPU broke, not the trial
        lease = await queue.lease(worker=f"bad-gpu-{faults}")
        assert lease is not None and (lease["id"], lease["attempts"]) == (trial_id, 0)
        body = TrialFailure(lease_id=lease["lease_id"], error=fault, retry=True, worker_fault=True)
        ack = await queue.fail(trial_id, body)
        assert (ack.state, ack.attempts) == ("queued", 0)
        row = trial_row(db, trial_id)
        assert (row["state"], row["attempts"], row["lease_id"]) == ("queued", 0, None)
        assert row["error"] == fault and row["error_retryable"] is True
        assert row["metrics"] == {"worker_faults": faults}
    # Beyond max_worker_faults a fault is charged: a trial that breaks every worker still ends.
    lease = await queue.lease(worker="bad-gpu-3")
    assert lease is not None
    body = TrialFailure(lease_id=lease["lease_id"], error=fault, retry=True, worker_fault=True)
    assert (await queue.fail(trial_id, body)).attempts == 1
    lease = await queue.lease(worker="bad-gpu-4")
    assert lease is not None
    body = TrialFailure(lease_id=lease["lease_id"], error=fault, retry=True, worker_fault=True)
    ack = await queue.fail(trial_id, body)
    assert (ack.state, ack.attempts) == ("failed", 2)
    assert trial_row(db, trial_id)["metrics"] == {"worker_faults": 4}
    with db.session() as session:  # retryable: fail fast (threshold 1) did not count it
        assert store.get_search(session, search_id).state == "running"


async def test_completing_keeps_what_the_server_recorded_beside_the_report(db: Database) -> None:
    queue = queue_for(db)
    search_id = add_search(db, queued=1)
    (trial_id,) = search_trial_ids(db, search_id)
    lease = await queue.lease(worker="bad-gpu")
    assert lease is not None
    fault = TrialFailure(
        lease_id=lease["lease_id"], error="CUBLAS_STATUS_EXECUTION_FAILED", retry=True,
        worker_fault=True,
    )  # fmt: skip
    await queue.fail(trial_id, fault)
    lease = await queue.lease(worker="good-gpu")
    assert lease is not None
    report = TrialReport(**report_body(lease, latency_device="cpu: test"))
    assert (await queue.complete(trial_id, report)).state == "completed"
    metrics = trial_row(db, trial_id)["metrics"]
    assert metrics["worker_faults"] == 1  # the server's count survives the completion
    assert metrics["latency_device"] == "cpu: test"
    assert metrics["reported_macs"] == lease["macs"]
