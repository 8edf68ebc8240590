"""One conformance suite for every executor: a real worker loop against a real server.

Each test runs the same scenario for every kind of executor (the `kind` fixture): real
`Worker`s in this process (each in its own thread, with its own spool and checkpoint
directories, as two machines would be) against a real `vitcube serve` on SQLite, and asserts
what a user sees on the server:
(a) an ASHA segment (to_epoch < epochs) is reported, and the promoted trial's next segment is
    trained by another worker from the checkpoint the first one stored, continuing its curve;
(b) SIGTERM mid-run: a checkpoint is stored, the trial is queued again, and another worker
    resumes it losing at most one epoch;
(c) the server's stop action: the partial curve is reported as stopped;
(d) a crash: the trial fails with its message;
(e) a non-finite metric: refused, a final failure naming it.

Adding an executor is one entry in `KINDS` and one branch in `kind`: the worker options that
give a worker that executor and the search body that makes its trials run on it, plus the body
changes that make it crash and report a non-finite metric (None: it cannot, and the test says
why it is skipped).
"""

from __future__ import annotations

import io
import re
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from tests.workers.conftest import WORKER_TOKEN, LiveServer, wait_for
from vitcube.workers.loop import Worker, WorkerOptions
from vitcube.workers.progress import PlainProgress

pytestmark = pytest.mark.slow

# The cheapest real training the worker tests use: digits at 32 px, a few steps an epoch.
TRAINING = {"batch_size": 32, "max_steps_per_epoch": 2}


@dataclass(frozen=True)
class ExecutorKind:
    """What a conformance test needs to run one kind of executor."""

    name: str
    options: dict[str, Any]  # WorkerOptions fields (server, token, spool, name are added)
    search: Callable[[int], dict[str, Any]]  # search fields for a short run of that many epochs
    # Search fields (and worker options) for a run whose epochs last long enough for a signal
    # or a stop to land in the middle of one.
    long_search: Callable[[int], dict[str, Any]]
    crash: dict[str, Any]  # search fields that make a trial crash ...
    crash_message: str  # ... with this in the trial's error
    # Search fields that make an epoch's metric non-finite, or why the executor cannot.
    non_finite: dict[str, Any] | str
    non_finite_message: str = ""
    long_options: dict[str, Any] = field(default_factory=dict)


KINDS = ["builtin", "surrogate", "command"]

# The command kind's script: a toy trainer on the SDK (vitcube.trial), its dataset block its
# knobs (the script owns its data): `epoch_s` per epoch, `mode` "crash" or "nan".
TOY_SCRIPT = """
import json, math, sys, time
from pathlib import Path
from vitcube import trial

t = trial.current()
mode = t.dataset.get("mode", "ok")
if mode == "crash":
    sys.stderr.write("RuntimeError: the toy trainer crashed on purpose\\n")
    sys.exit(1)
start = json.loads(Path(t.checkpoint_path).read_text())["epoch"] if t.checkpoint_path else 0
for epoch in range(start + 1, t.to_epoch + 1):
    deadline = time.monotonic() + float(t.dataset.get("epoch_s", 0))
    while time.monotonic() < deadline and not t.should_stop:
        time.sleep(0.01)
    if t.should_stop:
        sys.exit(0)  # the epoch in flight is lost; the last checkpoint is announced already
    value = math.nan if mode == "nan" else 0.5 + 0.4 * (1 - math.exp(-epoch / 2))
    t.report(epoch, val_top1=value, train_loss=2.0 / epoch)  # NaN: refused here, naming it
    state = Path(t.checkpoint_dir) / "state.json"
    state.write_text(json.dumps({"epoch": epoch}))
    t.save_checkpoint_file(state, epoch=epoch, move=True)
"""


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest, tmp_path: Path) -> ExecutorKind:
    """The executor kind a test runs on (`tmp_path`: where a kind may write what it runs)."""
    if request.param == "builtin":
        return ExecutorKind(
            name="builtin",
            options={"trainer": "real", "checkpoint_every_s": 0.0},
            search=lambda epochs: {"training": {**TRAINING, "epochs": epochs}},
            long_search=lambda epochs: {
                "training": {**TRAINING, "epochs": epochs, "max_steps_per_epoch": 20}
            },
            crash={"dataset": {"name": "cifar10"}},  # not on this worker: no --data-root
            crash_message="needs --data-root",
            # AdamW's decoupled decay at lr x weight_decay ~ 9 multiplies the weights by ~ -8
            # a step, with no clipping or warm-up to hold them: the loss is NaN within 20 steps.
            non_finite={
                "training": {
                    **TRAINING,
                    "epochs": 2,
                    "max_steps_per_epoch": 20,
                    "lr": 9.0,
                    "weight_decay": 0.99,
                    "grad_clip": 0.0,
                    "warmup_epochs": 0.0,
                }
            },
            non_finite_message="training loss became nan",
        )
    if request.param == "surrogate":
        return ExecutorKind(
            name="surrogate",
            options={"trainer": "surrogate"},
            search=lambda epochs: {"training": {**TRAINING, "epochs": epochs}},
            long_search=lambda epochs: {"training": {**TRAINING, "epochs": epochs}},
            long_options={"surrogate_epoch_s": 0.5},
            crash={"dataset": {"name": "digits", "landscape": "no-such-landscape"}},
            crash_message="no-such-landscape",
            non_finite="the surrogate landscape is finite by construction",
        )
    if request.param == "command":
        from vitcube.workers.executors.command import CommandSpec

        script = tmp_path / "toy_trainer.py"
        script.write_text(TOY_SCRIPT)
        spec = CommandSpec(name="toy", argv=(sys.executable, str(script)), workdir=tmp_path)

        def toy(epochs: int, **dataset: Any) -> dict[str, Any]:
            return {
                "trainer": {"kind": "command", "name": "toy"},
                "dataset": {"name": "toy", "num_classes": 10, **dataset},
                "training": {**TRAINING, "epochs": epochs},
            }

        return ExecutorKind(
            name="command",
            options={"commands": {spec.label: spec}},
            search=toy,
            long_search=lambda epochs: toy(epochs, epoch_s=0.5),
            crash=toy(2, mode="crash"),
            crash_message="RuntimeError: the toy trainer crashed on purpose",
            non_finite=toy(2, mode="nan"),
            non_finite_message="val_top1 must be a finite number",
        )
    raise AssertionError(f"no conformance entry for executor kind {request.param!r}")


class WorkerThread:
    """A real `Worker` running its loop in a thread of this process; `interrupt` is what its
    SIGTERM handler does (signals reach only the main thread)."""

    def __init__(self, options: WorkerOptions) -> None:
        self.stream = io.StringIO()
        self.worker = Worker(options, PlainProgress(self.stream, step_every_s=0.0))
        self.code: int | None = None
        self.thread = threading.Thread(target=self._run, name=f"worker-{options.name}")
        self.thread.start()

    def _run(self) -> None:
        self.code = self.worker.run()

    def log(self) -> str:
        return self.stream.getvalue()

    def interrupt(self) -> None:
        self.worker.interrupt("SIGTERM")

    def wait(self, timeout_s: float = 120) -> int:
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), f"worker did not exit in {timeout_s} s:\n{self.log()}"
        assert self.code is not None, self.log()
        return self.code


@pytest.fixture
def start(
    live_server: LiveServer, tmp_path: Path, kind: ExecutorKind
) -> Iterator[Callable[..., WorkerThread]]:
    """Start a worker of the test's executor kind, with a home (spool, checkpoints) of its own."""
    started: list[WorkerThread] = []

    def start_worker(name: str, **overrides: Any) -> WorkerThread:
        home = tmp_path / f"worker-{name}"
        home.mkdir()
        options = WorkerOptions(
            server=live_server.url,
            token=WORKER_TOKEN,
            device="cpu",
            threads=1,
            name=name,
            spool_dir=home / "spool",
            deliver_timeout_s=20.0,
            **kind.options,
        )
        worker = WorkerThread(replace(options, **overrides))
        started.append(worker)
        return worker

    yield start_worker
    for worker in started:
        worker.interrupt()
        worker.thread.join(60)


def _points(trial: dict[str, Any]) -> list[tuple[int, float]]:
    return [(int(point["epoch"]), float(point["val_top1"])) for point in trial["curve"]]


def _epochs_logged(worker: WorkerThread, trial_id: int) -> list[int]:
    return [int(e) for e in re.findall(rf"trial {trial_id} epoch (\d+)/\d+:", worker.log())]


def test_a_segment_ends_at_its_rung_and_another_worker_resumes_the_next_from_its_checkpoint(
    live_server: LiveServer, kind: ExecutorKind, start: Callable[..., WorkerThread]
) -> None:
    # ASHA over 2 epochs with eta 2: rungs 1 and 2. The planner's two reference trials train
    # both epochs in one segment; two search trials stop at rung 1, and the better goes on.
    search_id = live_server.create_search(
        **kind.search(2),
        max_trials=4,
        parallelism=1,
        schedule={"kind": "asha", "min_epochs": 1, "eta": 2},
    )
    first = start("a", max_trials=4)
    assert first.wait() == 0, first.log()
    at_rung = {t["id"]: t for t in live_server.trials(search_id) if t["kind"] == "search"}
    assert len(at_rung) == 2, (at_rung, first.log())
    for trial in at_rung.values():
        assert trial["epochs_trained"] == 1 and len(trial["curve"]) == 1, trial
        assert trial["state"] in ("paused", "queued"), trial
        assert trial["checkpoint"]["epoch"] == 1, trial  # the segment's end, stored
    assert "(a rung)" in first.log()

    heir = start("b", max_trials=1)
    assert heir.wait() == 0, heir.log()
    [promoted] = [
        t for t in live_server.trials(search_id) if t["kind"] == "search" and t["worker"] == "b"
    ]
    assert promoted["state"] == "completed", (promoted, heir.log())
    assert promoted["resumed_from_epoch"] == 1, promoted
    # The next segment continues the curve: epoch 1 as the first worker reported it, then 2.
    assert _points(promoted)[:1] == _points(at_rung[promoted["id"]])
    assert [epoch for epoch, _ in _points(promoted)] == [1, 2]
    assert _epochs_logged(heir, promoted["id"]) == [2]  # only the epoch after the checkpoint
    assert f"trial {promoted['id']}: resuming from its checkpoint at epoch 1" in heir.log()


def test_sigterm_mid_run_stores_a_checkpoint_and_another_worker_resumes_it(
    live_server: LiveServer, kind: ExecutorKind, start: Callable[..., WorkerThread]
) -> None:
    epochs = 4
    search_id = live_server.create_search(**kind.long_search(epochs))
    first = start("a", max_trials=1, **kind.long_options)
    running = wait_for(
        lambda: (t := live_server.trial(search_id))["state"] == "running" and t["curve"] and t,
        120,
        "the first epoch",
    )
    done_before = len(running["curve"])
    first.interrupt()
    assert first.wait() == 0, first.log()
    trial = live_server.trial(search_id)
    assert trial["state"] == "queued", (trial, first.log())
    assert "interrupted by SIGTERM" in (trial["error"] or ""), trial
    checkpoint = trial["checkpoint"]
    assert checkpoint is not None, first.log()
    # At most the epoch in progress is lost: the checkpoint holds every epoch reported.
    assert done_before <= checkpoint["epoch"] < epochs, (checkpoint, done_before)
    kept = _points(trial)[: checkpoint["epoch"]]

    heir = start("b", max_trials=1, **kind.long_options)
    assert heir.wait() == 0, heir.log()
    trial = live_server.trial(search_id)
    assert trial["state"] == "completed" and trial["worker"] == "b", (trial, heir.log())
    assert trial["resumed_from_epoch"] == checkpoint["epoch"]
    assert [epoch for epoch, _ in _points(trial)] == list(range(1, epochs + 1))
    assert _points(trial)[: checkpoint["epoch"]] == kept
    assert _epochs_logged(heir, trial["id"]) == list(range(checkpoint["epoch"] + 1, epochs + 1))


def test_the_stop_action_reports_the_partial_curve_as_stopped(
    live_server: LiveServer, kind: ExecutorKind, start: Callable[..., WorkerThread]
) -> None:
    epochs = 200
    search_id = live_server.create_search(**kind.long_search(epochs))
    worker = start("a", max_trials=1, **kind.long_options)
    wait_for(
        lambda: (t := live_server.trial(search_id))["state"] == "running" and t["curve"],
        120,
        "the first epoch",
    )
    assert live_server.http.post(f"/api/searches/{search_id}/stop").status_code == 200
    assert worker.wait(60) == 0, worker.log()
    trial = live_server.trial(search_id)
    assert trial["state"] == "stopped", (trial, worker.log())
    assert 1 <= len(trial["curve"]) < epochs
    assert [epoch for epoch, _ in _points(trial)] == list(range(1, len(trial["curve"]) + 1))
    assert "the server asked to stop" in worker.log() and "stopped early" in worker.log()


def test_a_crash_fails_the_trial_with_its_message(
    live_server: LiveServer, kind: ExecutorKind, start: Callable[..., WorkerThread]
) -> None:
    search_id = live_server.create_search(**{**kind.search(2), **kind.crash})
    worker = start("a", max_trials=1)
    assert worker.wait() == 0, worker.log()
    trial = live_server.trial(search_id)
    assert trial["state"] == "failed", (trial, worker.log())
    assert kind.crash_message in (trial["error"] or ""), trial
    assert "failed (final)" in worker.log()


def test_a_non_finite_metric_is_refused(
    live_server: LiveServer, kind: ExecutorKind, start: Callable[..., WorkerThread]
) -> None:
    if isinstance(kind.non_finite, str):
        pytest.skip(kind.non_finite)
    search_id = live_server.create_search(**kind.non_finite)
    worker = start("a", max_trials=1)
    assert worker.wait() == 0, worker.log()
    trial = live_server.trial(search_id)
    assert trial["state"] == "failed", (trial, worker.log())
    assert kind.non_finite_message in (trial["error"] or ""), trial
    assert "failed (final)" in worker.log()  # a retry would only diverge again
