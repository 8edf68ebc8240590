"""Real workers (`python -m vitcube.workers`) against a real `vitcube serve` on SQLite.

lease → train → complete; kill -9 mid-trial → the trial is re-leased after its lease expires
and completed by another worker; SIGTERM → the trial is failed with retry and queued again;
server down when the result is ready → the result waits in the spool and is delivered by the
next worker start once the server is back, or by the same worker still retrying; "stop" from
the server ends training early; a frozen worker whose lease was taken over abandons the trial
(409); the surrogate trainer's results are labelled; a missing dataset fails the trial for good.
"""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.workers.conftest import wait_for

pytestmark = pytest.mark.slow


def _running_with_epochs(server: Any, search_id: int, epochs: int) -> bool:
    trial = server.trial(search_id)
    return trial["state"] == "running" and len(trial["curve"]) >= epochs


def _wait(predicate: Any, timeout_s: float, what: str) -> Any:
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def test_worker_leases_trains_and_completes(
    live_server: Any, start_worker: Any, tmp_path: Path
) -> None:
    search_id = live_server.create_search()
    worker = start_worker(live_server, "--max-trials", "1", name="box-1:cpu")
    assert worker.wait() == 0, worker.log()
    trial = live_server.trial(search_id)
    assert trial["state"] == "completed", (trial, worker.log())
    assert trial["worker"] == "box-1:cpu" and trial["surrogate"] is False
    assert 0.0 <= trial["top1"] <= trial["top5"] <= 1.0
    assert trial["latency_ms"] > 0 and trial["images_per_s"] > 0
    assert [p["epoch"] for p in trial["curve"]] == [1, 2]
    assert all(p["train_loss"] > 0 for p in trial["curve"])
    assert "epoch 2/2" in worker.log() and "reported" in worker.log()
    assert not list((tmp_path / "spool").glob("trial-*.json"))


def test_killed_worker_trial_is_re_leased_and_completed_by_another(
    server_factory: Any, start_worker: Any
) -> None:
    live_server = server_factory(lease_seconds=3)
    search_id = live_server.create_search(
        training={"epochs": 6, "batch_size": 32, "max_steps_per_epoch": 2}
    )
    first = start_worker(live_server, "--max-trials", "1", name="doomed")
    _wait(lambda: _running_with_epochs(live_server, search_id, 1), 90, "the first epoch")
    first.kill()
    second = start_worker(live_server, "--max-trials", "1", name="rescuer")
    assert second.wait() == 0, second.log()
    trial = live_server.trial(search_id)
    assert trial["state"] == "completed", (trial, second.log())
    assert trial["worker"] == "rescuer"
    assert trial["attempts"] == 1  # the expired lease counted as one attempt
    assert [p["epoch"] for p in trial["curve"]] == [1, 2, 3, 4, 5, 6]


def test_sigterm_fails_the_trial_with_retry(live_server: Any, start_worker: Any) -> None:
    search_id = live_server.create_search(
        training={"epochs": 500, "batch_size": 32, "max_steps_per_epoch": 2}
    )
    worker = start_worker(live_server, name="interrupted")
    _wait(lambda: _running_with_epochs(live_server, search_id, 1), 90, "the first epoch")
    worker.signal(signal.SIGTERM)
    assert worker.wait(60) == 0, worker.log()
    trial = live_server.trial(search_id)
    assert trial["state"] == "queued", trial
    assert trial["attempts"] == 1
    assert "interrupted by SIGTERM" in (trial["error"] or ""), trial
    assert "failed (will be retried)" in worker.log()


def test_results_survive_a_server_outage(
    live_server: Any, start_worker: Any, tmp_path: Path
) -> None:
    search_id = live_server.create_search(
        training={"epochs": 3, "batch_size": 32, "max_steps_per_epoch": 2}
    )
    worker = start_worker(
        live_server, "--max-trials", "1", "--deliver-timeout-s", "2", name="patient"
    )
    _wait(lambda: live_server.trial(search_id)["state"] == "running", 90, "the lease")
    live_server.stop()
    assert worker.wait() == 0, worker.log()
    spooled = list((tmp_path / "spool").glob("trial-*.json"))
    assert len(spooled) == 1, worker.log()
    record = json.loads(spooled[0].read_text())
    assert record["server"] == live_server.url and record["body"]["top1"] >= 0
    assert "not yet acknowledged" in worker.log()

    live_server.start()
    assert live_server.trial(search_id)["state"] == "running"
    flusher = start_worker(live_server, "--max-trials", "0", name="flusher")
    assert flusher.wait() == 0, flusher.log()
    trial = live_server.trial(search_id)
    assert trial["state"] == "completed", (trial, flusher.log())
    assert trial["top1"] == record["body"]["top1"]
    assert trial["worker"] == "patient"
    assert [p["epoch"] for p in trial["curve"]] == [1, 2, 3]
    assert not list((tmp_path / "spool").glob("trial-*.json"))

    # A worker that keeps retrying delivers by itself once the server is back.
    second_search = live_server.create_search(
        training={"epochs": 3, "batch_size": 32, "max_steps_per_epoch": 2}
    )
    waiting = start_worker(live_server, "--max-trials", "1", name="waiting")
    _wait(lambda: live_server.trial(second_search)["state"] == "running", 90, "the lease")
    live_server.stop()
    # The trial's weights go first, then the complete: either retrying shows the wait.
    _wait(
        lambda: any(f"/{call}: ConnectError" in waiting.log() for call in ("weights", "complete")),
        90,
        "the worker to retry",
    )
    live_server.start()
    assert waiting.wait() == 0, waiting.log()
    assert live_server.trial(second_search)["state"] == "completed", waiting.log()


def test_missing_dataset_fails_the_trial_for_good(live_server: Any, start_worker: Any) -> None:
    search_id = live_server.create_search(dataset={"name": "cifar10"})
    worker = start_worker(live_server, "--max-trials", "1", name="no-data")
    assert worker.wait() == 0, worker.log()
    trial = live_server.trial(search_id)
    assert trial["state"] == "failed", trial
    assert "needs --data-root" in trial["error"] and "cifar-10-batches-py" in trial["error"]


def test_stop_from_the_server_ends_training_early(live_server: Any, start_worker: Any) -> None:
    search_id = live_server.create_search(
        training={"epochs": 500, "batch_size": 32, "max_steps_per_epoch": 2}
    )
    worker = start_worker(live_server, "--max-trials", "1", name="stoppable")
    _wait(lambda: _running_with_epochs(live_server, search_id, 1), 90, "the first epoch")
    assert live_server.http.post(f"/api/searches/{search_id}/stop").status_code == 200
    assert worker.wait(60) == 0, worker.log()
    trial = live_server.trial(search_id)
    assert trial["state"] == "stopped", trial
    assert 1 <= len(trial["curve"]) < 500  # the epochs trained before the stop
    assert "the server asked to stop" in worker.log()
    assert "stopped early" in worker.log()


def test_surrogate_trainer_reports_labelled_results(
    live_server: Any, start_worker: Any, tmp_path: Path
) -> None:
    search_id = live_server.create_search(
        max_trials=2, parallelism=2, training={"epochs": 7, "batch_size": 64}
    )
    worker = start_worker(live_server, "--trainer", "surrogate", "--max-trials", "2")
    assert worker.wait() == 0, worker.log()
    trials = live_server.trials(search_id)
    assert [t["state"] for t in trials] == ["completed", "completed"], worker.log()
    for trial in trials:
        assert trial["surrogate"] is True and trial["latency_ms"] is None
        assert [p["epoch"] for p in trial["curve"]] == list(range(1, 8))
        assert trial["top1"] == max(p["val_top1"] for p in trial["curve"])


def test_the_surrogate_trainer_trains_each_asha_segment_and_the_curves_continue(
    live_server: Any, start_worker: Any
) -> None:
    search_id = live_server.create_search(
        max_trials=6,
        parallelism=2,
        training={"epochs": 9, "batch_size": 64},
        schedule={"kind": "asha", "min_epochs": 1, "eta": 3},
    )
    worker = start_worker(live_server, "--trainer", "surrogate", "--max-trials", "40")

    def ended() -> list[dict[str, Any]] | None:
        search = live_server.http.get(f"/api/searches/{search_id}").json()
        return live_server.trials(search_id) if search["state"] == "completed" else None

    trials = wait_for(ended, timeout_s=120, what="the asha search to complete")
    worker.kill()
    promoted = [t for t in trials if t["kind"] == "search" and len(t["rung_top1"]) > 1]
    assert promoted, [(t["state"], t["rung_top1"]) for t in trials]
    for trial in trials:
        reached = int(trial["epochs_trained"])
        assert [p["epoch"] for p in trial["curve"]] == list(range(1, reached + 1))
        for epoch, top1 in trial["rung_top1"].items():  # each rung's result is its curve's
            assert top1 == max(p["val_top1"] for p in trial["curve"][: int(epoch)])
    assert any(t["state"] == "paused" for t in trials)
    search = live_server.http.get(f"/api/searches/{search_id}").json()
    assert search["epochs_trained"] == sum(t["epochs_trained"] for t in trials) < 9 * len(trials)
    assert search["train_macs"] == sum(t["epochs_trained"] * t["macs"] * 1437 for t in trials)


def test_a_frozen_worker_that_lost_its_lease_abandons_the_trial(
    server_factory: Any, start_worker: Any, worker_token: str
) -> None:
    from vitcube.workers.client import VitcubeClient

    live_server = server_factory(lease_seconds=3)
    search_id = live_server.create_search(
        training={"epochs": 500, "batch_size": 32, "max_steps_per_epoch": 2}
    )
    frozen = start_worker(live_server, "--max-trials", "1", name="frozen")
    _wait(lambda: _running_with_epochs(live_server, search_id, 1), 90, "the first epoch")
    frozen.signal(signal.SIGSTOP)  # a VM pause: no heartbeats, the lease expires
    _wait(lambda: live_server.trial(search_id)["state"] == "queued", 30, "the lease to expire")
    thief = VitcubeClient(live_server.url, worker_token, worker="thief")
    lease = thief.lease()
    assert lease is not None and lease.id == live_server.trial(search_id)["id"]
    # The thief holds its 3 s lease as a live worker would, however long the frozen one takes
    # (often: a loaded CI box can take over a second to answer one heartbeat).
    holding = threading.Event()

    def hold() -> None:
        while not holding.wait(0.25):
            thief.heartbeat(lease.id, lease.lease_id, epoch=0)

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    frozen.signal(signal.SIGCONT)
    try:
        assert frozen.wait(60) == 0, frozen.log()
    finally:
        holding.set()
        holder.join(timeout=30)
    assert "lease lost" in frozen.log() and "abandoned" in frozen.log()
    trial = live_server.trial(search_id)
    assert trial["state"] == "running" and trial["worker"] == "thief"  # untouched by the old one
    thief.close()
