"""ASHA with real training, end to end: real `vitcube serve`, real worker processes, digits.

A search with schedule asha (min_epochs 1, eta 2, training.epochs 4: rungs 1, 2, 4) runs in two
phases. Worker "a" alone trains the two reference trials (all epochs in one segment) and the
first two search trials to rung 1, then exits; worker "b" (another name, its own spool and
checkpoint directories) trains the rest, so the promotion of a rung-1 trial of "a" resumes from
the checkpoint "a" stored on the server. What a user notices is asserted: promotions happened and
some trials stayed paused, a promoted trial resumed from its previous rung's epoch and its curve
runs 1 … to_epoch without gap, repeat or change to the epochs already trained, no epoch was
trained twice, and the search's compute is the sum of its trials' and less than `full` spends.
Runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from tests.workers.conftest import LiveServer, WorkerProcess, wait_for
from vitcube.search.asha import promotable

pytestmark = pytest.mark.slow

EPOCHS = 4
RUNGS = (1, 2, 4)  # vitcube.contract.rung_epochs(asha(min_epochs=1, eta=2), 4)
ETA = 2
SCHEDULE = {"kind": "asha", "min_epochs": 1, "eta": ETA}
TRAINING = {"epochs": EPOCHS, "batch_size": 32, "max_steps_per_epoch": 4}
MAX_TRIALS = 6
# The planner's reference trials for conftest's TINY_BASE at c = 0.5 (width-only and compound;
# the baseline is over the budget). They come first and train all epochs in one segment.
REFERENCES = 2


def _epochs_trained_by(worker: WorkerProcess) -> set[tuple[int, int]]:
    """(trial id, epoch) of every epoch the worker finished, from its plain progress lines
    ("trial 7 epoch 2/4: …")."""
    return {(int(t), int(e)) for t, e in re.findall(r"trial (\d+) epoch (\d+)/\d+:", worker.log())}


def _leases_of(worker: WorkerProcess) -> list[int]:
    """The trial ids the worker leased, in order ("trial 7: search 1, …" opens each)."""
    return [int(t) for t in re.findall(r"trial (\d+): search \d+,", worker.log())]


def _by_id(trial: dict[str, Any]) -> int:
    return int(trial["id"])


def _snapshot(trials: list[dict[str, Any]], into: dict[tuple[int, float], list[Any]]) -> None:
    """Keep the curve of every trial that has finished a segment, up to that segment's end,
    keyed by (trial id, epochs trained so far): read while it waits at a rung, is queued again
    after a promotion, or trains its next segment."""
    for trial in trials:
        done = trial["epochs_trained"]
        if done > 0:
            curve = [point for point in trial["curve"] if point["epoch"] <= done]
            into.setdefault((trial["id"], done), curve)


def test_asha_promotes_resumes_on_another_worker_and_trains_less_than_full(
    server: LiveServer, start_worker: Callable[..., WorkerProcess]
) -> None:
    search_id = server.create_search(
        max_trials=MAX_TRIALS, parallelism=2, schedule=SCHEDULE, training=TRAINING, seed=3
    )
    search = server.http.get(f"/api/searches/{search_id}").json()
    assert [rung["epoch"] for rung in search["rungs"]] == list(RUNGS), search["rungs"]

    # Phase 1: "a" trains the references and the first two trials to rung 1 (oldest queued
    # first). "b" starts once "a" holds its last lease (its start-up overlaps that segment): it
    # can only lease trials "a" never touches, until a promotion of one of theirs is queued.
    first = start_worker(server, "--max-trials", str(REFERENCES + 2), name="a", own_home=True)
    wait_for(
        lambda: len(_leases_of(first)) >= REFERENCES + 2 or first.process.poll() is not None,
        150,
        'worker "a" to lease its last trial',
    )
    heir = start_worker(server, name="b", own_home=True)
    assert first.wait(timeout_s=150) == 0, first.log()[-3000:]
    trained_by_first = _epochs_trained_by(first)
    after_first = {t["id"]: t for t in server.trials(search_id)}
    first_ids = {trial_id for trial_id, _ in trained_by_first}
    assert [after_first[i]["kind"] for i in sorted(first_ids)] == [
        *["reference:width_only", "reference:compound"][:REFERENCES],
        "search",
        "search",
    ], (after_first, first.log()[-3000:])
    first_search = [i for i in sorted(first_ids) if after_first[i]["kind"] == "search"]
    assert {(i, 1) for i in first_search} <= trained_by_first
    for trial_id in first_search:
        trial = after_first[trial_id]
        assert trial["epochs_trained"] == 1 and trial["rung_top1"].keys() == {"1"}, trial
        if trial["state"] != "running":  # paused, or queued after a promotion: "b" may hold it
            assert trial["state"] in ("paused", "queued"), trial
            assert trial["checkpoint"]["epoch"] == 1, trial  # the segment's end, kept
    snapshots: dict[tuple[int, float], list[Any]] = {}
    _snapshot(list(after_first.values()), snapshots)

    # Phase 2: "b" trains the rest; the curves of waiting trials are read on the way.
    def finished() -> dict[str, Any] | None:
        trials = server.trials(search_id)
        _snapshot(trials, snapshots)
        assert not any(t["state"] in ("failed", "stopped") for t in trials), (
            trials,
            heir.log()[-3000:],
        )
        assert heir.process.poll() is None, heir.log()[-3000:]
        view = server.http.get(f"/api/searches/{search_id}").json()
        return view if view["state"] == "completed" else None

    search = wait_for(finished, 150, "the search to complete")
    trials = {t["id"]: t for t in server.trials(search_id)}
    search_trials = sorted((t for t in trials.values() if t["kind"] == "search"), key=_by_id)
    assert len(trials) == MAX_TRIALS

    # The search completed with no promotion left undone: ASHA's rule, applied to the final
    # results, names no trial still paused.
    for epoch in RUNGS[:-1]:
        results = {
            t["id"]: t["rung_top1"][str(epoch)]
            for t in search_trials
            if str(epoch) in t["rung_top1"]
        }
        waiting = [
            t["id"] for t in search_trials if t["state"] == "paused" and t["to_epoch"] == epoch
        ]
        skipped = promotable(results, waiting, ETA)
        assert not skipped, f"completed with trials {skipped} promotable at rung {epoch}: {results}"

    # Promotions happened and some trials stayed behind at a rung.
    reached = {epoch: [t for t in search_trials if str(epoch) in t["rung_top1"]] for epoch in RUNGS}
    assert len(reached[1]) == MAX_TRIALS - REFERENCES
    assert len(reached[2]) >= 1 and len(reached[EPOCHS]) >= 1, search_trials
    assert search["counts"]["paused"] > 0 and search["counts"]["completed"] >= 1, search["counts"]
    assert search["counts"]["paused"] + search["counts"]["completed"] == MAX_TRIALS
    summary = {rung["epoch"]: rung for rung in search["rungs"]}
    assert summary[1]["reached"] == len(reached[1]) and summary[1]["promoted"] == len(reached[2])
    assert summary[2]["promoted"] == len(reached[EPOCHS]) >= 1
    for trial in search_trials:
        assert trial["state"] == ("completed" if trial["to_epoch"] == EPOCHS else "paused")
    # Under eta 2 only the better half of a rung goes on: at least as many stay as go on.
    assert summary[1]["paused"] >= summary[1]["promoted"], summary

    # Every segment resumed where the last one ended: the previous rung's epoch, one point per
    # epoch 1 … to_epoch, and each epoch trained exactly once across the two workers.
    trained_by_heir = _epochs_trained_by(heir)
    everyone = [trained_by_first, trained_by_heir]
    for trial in search_trials:
        to_epoch = trial["to_epoch"]
        rung = RUNGS.index(to_epoch)
        assert trial["resumed_from_epoch"] == (RUNGS[rung - 1] if rung else None), trial
        assert trial["epochs_trained"] == to_epoch
        assert [p["epoch"] for p in trial["curve"]] == list(range(1, to_epoch + 1)), trial
        assert sorted(trial["rung_top1"], key=int) == [str(e) for e in RUNGS[: rung + 1]]
        for epoch in range(1, to_epoch + 1):
            holders = [log for log in everyone if (trial["id"], epoch) in log]
            assert len(holders) == 1, (trial["id"], epoch, everyone)
        # A rung's result is the best epoch up to that rung, as its segment reported it.
        for epoch, top1 in trial["rung_top1"].items():
            best = max(p["val_top1"] for p in trial["curve"][: int(epoch)])
            assert top1 == pytest.approx(best, abs=1e-9), trial
    for trial in trials.values():
        if trial["kind"] != "search":
            assert trial["state"] == "completed" and trial["resumed_from_epoch"] is None
            assert trial["rung_top1"].keys() == {str(EPOCHS)}

    # The curve read while a trial waited between segments is unchanged by the later segments.
    promoted_later = 0
    for (trial_id, epochs_then), curve in snapshots.items():
        final = trials[trial_id]["curve"]
        assert final[: int(epochs_then)] == curve, (trial_id, epochs_then, curve, final)
        promoted_later += trials[trial_id]["epochs_trained"] > epochs_then
    assert promoted_later >= 1, snapshots.keys()

    # A paused trial of "a" was resumed from its checkpoint by "b".
    handed_over = [t for t in search_trials if t["id"] in first_search and t["to_epoch"] > 1]
    assert handed_over, search_trials
    for trial in handed_over:
        assert trial["worker"] == "b"
        assert f"trial {trial['id']}: resuming from its checkpoint at epoch 1" in heir.log()
        assert (trial["id"], 1) in trained_by_first and (trial["id"], 1) not in trained_by_heir
        assert (trial["id"], 2) in trained_by_heir

    # Compute: the search's is the sum of its trials', and less than `full` would have spent.
    assert search["epochs_trained"] == pytest.approx(
        sum(t["epochs_trained"] for t in trials.values())
    )
    assert search["epochs_trained"] < len(trials) * EPOCHS
    assert search["train_macs"] == pytest.approx(sum(t["train_macs"] for t in trials.values()))
    images = TRAINING["batch_size"] * TRAINING["max_steps_per_epoch"]
    for trial in trials.values():
        assert trial["train_macs"] == pytest.approx(
            trial["epochs_trained"] * trial["macs"] * images
        )
