"""What trains a lease's segment: one interface, three implementations, one loop that runs them.

The worker loop (`workers.loop`) owns everything around a lease: the heartbeat, the stop action
and signals (as `Control` flags), downloading the lease's checkpoint and uploading new ones,
the spool, fault classification and the report. An `Executor` owns only the training of one
segment (epochs `lease.from_epoch + 1 … to_epoch`) and hands back a `TrialOutcome`:
- `executors.builtin.BuiltinExecutor`: vitcube's recipe on a dataset the worker loads;
- `executors.surrogate.SurrogateExecutor`: the documented synthetic landscape (no training);
- `executors.command.CommandExecutor`: the operator's own script (`--command LABEL='…'`),
  talking to the worker through `vitcube.channel` (the SDK, `vitcube.trial`, writes it).

A lease reads top to bottom: `loop.Worker._process(lease)` → `executor.run(segment)` →
`report`. One conformance suite (tests/workers/executors) runs every executor through the
same segments, resumes, signals, stops, crashes and bad metrics.

Imports vitcube.contract and the standard library only: torch is the builtin executor's.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from vitcube.contract import MetricSpec, TrialLease


class Control:
    """Flags other threads set while a segment trains; executors check them often."""

    def __init__(self) -> None:
        self.stop = threading.Event()  # the server said stop: finish early, report what we have
        self.lease_lost = threading.Event()  # 409: someone else owns the trial; abandon it
        self.interrupted = threading.Event()  # SIGINT/SIGTERM: save, then give the trial back

    def check(self) -> None:
        if self.interrupted.is_set():
            raise TrainingAborted("interrupted")
        if self.lease_lost.is_set():
            raise TrainingAborted("lease_lost")


class TrainingAborted(Exception):
    """Training ended without a result; `reason` is "interrupted" or "lease_lost"."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TrialFailed(RuntimeError):
    """A failure the executor classified itself: `retry` says whether another attempt could
    help (a script killed by the OOM killer: yes; one that exits 1: no). The message's first
    line is what fail fast groups failures by."""

    def __init__(self, message: str, *, retry: bool) -> None:
        super().__init__(message)
        self.retry = retry


class SegmentEvents(Protocol):
    """Where an executor says how training goes (the progress display and the heartbeat)."""

    def on_start(self, *, epochs: int, steps_per_epoch: int, train_images: int) -> None: ...

    def on_step(
        self, *, epoch: int, step: int, loss: float, images_per_s: float, lr: float
    ) -> None: ...

    def on_epoch(self, epoch: int, metrics: Mapping[str, float]) -> None:
        """An epoch ended with these metrics (the search's metric among them)."""


class SegmentCheckpoints(Protocol):
    """The lease's checkpoints, as the loop keeps them.

    `resume_path()`: the lease's checkpoint, downloaded and checked (sha256) into the segment's
    scratch directory, or None on a fresh start (or when it could not be fetched: the loop has
    logged why). `discard(reason)`: the checkpoint cannot be resumed (another architecture, a
    corrupt file): drop it on the server and train from epoch 0. `submit(path, epoch=, step=)`:
    a complete checkpoint file of this trial after `epoch` epochs (and `step` steps of the
    next); the loop uploads it in the background, newest first, and waits for the last one
    before a segment's end is reported or a signalled trial handed back.
    """

    def resume_path(self) -> Path | None: ...

    def discard(self, reason: str) -> None: ...

    def submit(self, path: Path, *, epoch: int, step: int = 0) -> None: ...


@dataclass(frozen=True)
class Segment:
    """One lease's work as an executor sees it: epochs from_epoch + 1 … to_epoch of the run."""

    lease: TrialLease
    control: Control
    events: SegmentEvents
    checkpoints: SegmentCheckpoints
    scratch: Path  # this segment's own directory; the loop removes it afterwards
    log: Callable[[str], None]

    @property
    def metric(self) -> MetricSpec:
        return self.lease.metric

    @property
    def epochs(self) -> int:
        """The whole run's epochs (training.epochs): the LR schedule spans them."""
        return int(self.lease.training.get("epochs", 1))

    @property
    def to_epoch(self) -> int:
        return self.epochs if self.lease.to_epoch is None else min(self.lease.to_epoch, self.epochs)


@dataclass
class TrialOutcome:
    """Everything a worker reports for a finished (or stopped) segment.

    `value` is the search's metric (`metric.name`) at the best epoch so far (`best_epoch`);
    `curve` holds every epoch's metrics up to to_epoch, 1-based. `weights_path`: the best
    epoch's weights in `workers.checkpoint`'s weights format, or None (the surrogate; a script
    that saved none).
    """

    value: float
    metric: MetricSpec
    curve: list[dict[str, float]]
    stopped: bool
    best_epoch: int
    params: int
    macs: int
    top5: float | None = None
    latency_ms: float | None = None
    latency_device: str | None = None
    images_per_s: float | None = None
    latency_onnx_ms: float | None = None
    latency_onnx_device: str | None = None
    resumed_from_epoch: int | None = None
    epochs_trained: float | None = None
    train_images: int | None = None
    weights_path: Path | None = field(default=None, repr=False)

    def report(self) -> dict[str, Any]:
        """The metrics part of the complete body (the README's REST API table). The builtin
        metric also travels as `top1`, which every server version understands."""
        body: dict[str, Any] = {
            "value": self.value,
            "top5": self.top5,
            "params": self.params,
            "macs": self.macs,
            "latency_ms": self.latency_ms,
            "latency_device": self.latency_device,
            "images_per_s": self.images_per_s,
            "latency_onnx_ms": self.latency_onnx_ms,
            "latency_onnx_device": self.latency_onnx_device,
            "resumed_from_epoch": self.resumed_from_epoch,
            "epochs_trained": self.epochs_trained,
            "train_images": self.train_images,
            "curve": self.curve,
        }
        if self.metric.name == "val_top1" and 0.0 <= self.value <= 1.0:
            body["top1"] = self.value
        return body


class Executor(ABC):
    """Trains lease segments of one trainer label ("builtin", "command:NAME")."""

    label: str

    @abstractmethod
    def run(self, segment: Segment) -> TrialOutcome:
        """Train the segment and return its outcome; `stopped` when `control.stop` ended it
        early (the curve so far is reported).

        Raises TrainingAborted when `control` says interrupted (after a last checkpoint was
        submitted, where the executor can take one) or lease lost; TrialFailed for a failure
        it classified itself; any other exception is classified by `loop.describe_failure`.
        """

    def close(self) -> None:
        """Release what the executor keeps between leases (a dataset cache). Default: none."""
        return None
