"""Preemption, end to end: real `vitcube serve`, real worker processes, real training on digits.

A worker killed with SIGKILL mid-trial, one sent SIGTERM mid-epoch, and a checkpoint damaged in
the store: each time another worker leases the trial again and it completes, resuming from the
trial's latest checkpoint where there is a usable one, from epoch 0 where there is not. Each
scenario runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.workers.conftest import LiveServer, WorkerProcess, wait_for

pytestmark = pytest.mark.slow

EPOCHS = 6
# Steps per epoch when a signal must land mid-epoch (an epoch of a second or two here).
STEPS = 15
# conftest's `server` on each backend, with short leases: a killed worker's trial is re-leased
# in seconds.
SERVER_LEASE_SECONDS = 3.0


def _search(server: LiveServer, steps_per_epoch: int) -> int:
    return server.create_search(
        training={"epochs": EPOCHS, "batch_size": 32, "max_steps_per_epoch": steps_per_epoch}
    )


def _epochs_logged(worker: WorkerProcess) -> list[int]:
    """The epochs a worker finished, as its plain progress lines say ("epoch 3/6: …")."""
    return [int(e) for e in re.findall(rf"epoch (\d+)/{EPOCHS}:", worker.log())]


def _checkpoint(server: LiveServer, search_id: int) -> dict[str, Any] | None:
    trial = server.trial(search_id)
    return trial.get("checkpoint") if trial.get("state") == "running" else None


def _completed(server: LiveServer, search_id: int, *workers: WorkerProcess) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        trial = server.trial(search_id)
        assert trial["state"] not in ("failed", "stopped"), (
            trial,
            *(w.log()[-3000:] for w in workers),
        )
        return trial if trial["state"] == "completed" else None

    return dict(wait_for(done, 240, "the trial to complete"))


def _assert_whole_curve(trial: dict[str, Any]) -> None:
    """One point per epoch 1 … EPOCHS: the resumed run continued the curve, never restarted it."""
    assert [point["epoch"] for point in trial["curve"]] == list(range(1, EPOCHS + 1))


def test_a_killed_workers_trial_resumes_on_another_worker(
    server: LiveServer, start_worker: Callable[..., WorkerProcess]
) -> None:
    search_id = _search(server, steps_per_epoch=6)
    first = start_worker(server, "--checkpoint-every-s", "0", name="doomed")
    checkpoint = wait_for(
        lambda: (c := _checkpoint(server, search_id)) and c["epoch"] >= 2 and c,
        180,
        "a checkpoint at epoch >= 2",
    )
    first.kill()  # SIGKILL: no goodbye, no last checkpoint; the lease expires
    trained_by_first = len(_epochs_logged(first))
    assert trained_by_first < EPOCHS, "the trial finished before the kill; make epochs longer"

    second = start_worker(server, "--checkpoint-every-s", "0", "--max-trials", "1", name="heir")
    trial = _completed(server, search_id, first, second)
    assert second.wait() == 0, second.log()

    assert trial["resumed_from_epoch"] >= checkpoint["epoch"] >= 1
    assert trial["attempts"] == 1  # the expired lease cost one attempt
    _assert_whole_curve(trial)
    # Work lost to the kill is at most the epoch in flight: across both workers no more than
    # one epoch more than the recipe's was trained.
    trained_by_second = _epochs_logged(second)
    assert trained_by_second == list(range(trial["resumed_from_epoch"] + 1, EPOCHS + 1))
    assert trial["attempt_epochs_trained"] == EPOCHS - trial["resumed_from_epoch"]
    assert trial["epochs_trained"] == EPOCHS  # the epoch the trial's training reached
    assert trained_by_first + len(trained_by_second) <= EPOCHS + 1
    assert trial["checkpoint"] is None  # a completed trial keeps its weights, not its checkpoint
    assert trial["weights_bytes"] and trial["weights_bytes"] > 0


def _terminated_mid_epoch(
    server: LiveServer, start_worker: Callable[..., WorkerProcess], search_id: int
) -> dict[str, Any]:
    """Start a worker that checkpoints only when told to stop, SIGTERM it in the middle of its
    second epoch; returns the checkpoint the trial then holds (it is queued again)."""
    worker = start_worker(server, "--checkpoint-every-s", "100000", name="preempted")
    wait_for(lambda: _epochs_logged(worker), 180, "a first epoch")
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0, worker.log()
    assert len(_epochs_logged(worker)) < EPOCHS, "the trial finished first; make epochs longer"
    trial = server.trial(search_id)
    assert trial["state"] == "queued", (trial, worker.log()[-2000:])
    assert trial["checkpoint"] is not None, worker.log()[-2000:]
    return dict(trial["checkpoint"])


def test_a_worker_sigtermed_mid_epoch_leaves_a_checkpoint_and_the_trial_resumes(
    server: LiveServer, start_worker: Callable[..., WorkerProcess]
) -> None:
    search_id = _search(server, steps_per_epoch=STEPS)
    checkpoint = _terminated_mid_epoch(server, start_worker, search_id)
    assert checkpoint["epoch"] >= 1 and checkpoint["bytes"] > 0

    second = start_worker(server, "--max-trials", "1", name="heir")
    trial = _completed(server, search_id, second)
    assert trial["resumed_from_epoch"] == checkpoint["epoch"]
    _assert_whole_curve(trial)
    # The heir trains the rest only: the epochs after the checkpoint, the first of them maybe
    # in part (a mid-epoch checkpoint carries the steps already done).
    assert _epochs_logged(second) == list(range(checkpoint["epoch"] + 1, EPOCHS + 1))
    remaining = EPOCHS - checkpoint["epoch"] - checkpoint["step"] / STEPS
    assert trial["attempt_epochs_trained"] == pytest.approx(remaining, abs=1e-6)


def test_a_truncated_checkpoint_is_discarded_and_the_trial_restarts_from_zero(
    server: LiveServer, start_worker: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    search_id = _search(server, steps_per_epoch=STEPS)
    checkpoint = _terminated_mid_epoch(server, start_worker, search_id)
    stored = [p for p in (tmp_path / "artifacts").rglob("checkpoint-*") if p.is_file()]
    assert len(stored) == 1, stored
    assert stored[0].stat().st_size == checkpoint["bytes"]
    with stored[0].open("r+b") as handle:
        handle.truncate(checkpoint["bytes"] // 2)

    second = start_worker(server, "--max-trials", "1", name="heir")
    trial = _completed(server, search_id, second)
    assert second.wait() == 0, second.log()
    assert trial["resumed_from_epoch"] is None
    assert trial["epochs_trained"] == trial["attempt_epochs_trained"] == EPOCHS
    assert _epochs_logged(second) == list(range(1, EPOCHS + 1))
    _assert_whole_curve(trial)
    assert "discard" in second.log().lower(), second.log()[-2000:]
