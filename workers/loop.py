"""The worker loop: lease a trial, run its segment on an executor, keep the lease alive, report.

A lease reads top to bottom in `Worker._process`: pick the executor of the lease's trainer
label (`workers.executors`: builtin, surrogate, command), build its `Segment` (control flags,
events to the progress display and the heartbeat, the lease's checkpoints, a scratch
directory), `executor.run(segment)`, then report the outcome or the failure. Around every
lease the loop owns, as the worker protocol (README, "The REST API") expects:
- the heartbeat: every epoch (with the metrics the executor reported) and at least every 30 s
  from a background thread; 409 (lease lost): the trial is abandoned, nothing is reported;
  "stop": the executor ends early and the partial curve is reported;
- SIGINT/SIGTERM: the executor saves a checkpoint at its next step boundary, the upload is
  flushed (at most `FLUSH_ON_SIGNAL_S`), then the trial is failed with `retry: true` and the
  worker exits 0;
- checkpoints: the lease's checkpoint is downloaded into the segment's scratch directory and
  checked (sha256) for the executor (`LeaseCheckpoints.resume_path`); one the executor cannot
  resume is discarded on the server (DELETE, with the reason) and the trial trains from
  scratch; the executor's new ones are uploaded by a background thread, newest first, and a
  segment that more epochs follow waits for its last one before it reports;
- failures (`workers.faults.describe_failure`): final ones with a message saying what to
  change, retried ones, and faults of this worker rather than the trial, after which the
  worker stops leasing and exits with EXIT_WORKER_FAULTY (at once after a sticky CUDA error,
  or after `max_worker_faults` in a row) so its scheduler replaces it;
- the spool: a finished result (and its weights) is written there first and delivered; a
  server that cannot be reached is retried with backoff, and what waits in the spool is
  re-sent before every lease and by the next worker start until acknowledged.

Imports vitcube.contract, workers.* (the builtin executor brings torch and models).
"""

from __future__ import annotations

import math
import random
import shutil
import signal
import socket
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from vitcube.contract import BUILTIN_TRAINER, TrialLease
from vitcube.workers.checkpoint import CheckpointUploader
from vitcube.workers.client import (
    ArtifactCorrupt,
    AuthError,
    LeaseLost,
    RequestRejected,
    ServerUnavailable,
    VitcubeClient,
)
from vitcube.workers.device import release_device_memory, resolve_device
from vitcube.workers.executors import (
    Control,
    Executor,
    Segment,
    TrainingAborted,
    TrialOutcome,
)
from vitcube.workers.faults import FailureVerdict, describe_despite_signals
from vitcube.workers.host import loader_shm_bytes, shm_free_bytes, shm_warning
from vitcube.workers.progress import WorkerProgress
from vitcube.workers.spool import Spool, deliver

if TYPE_CHECKING:
    import torch

    from vitcube.workers.executors.command import CommandSpec

HEARTBEAT_MAX_INTERVAL_S = 30.0
IDLE_MAX_S = 15.0
FLUSH_ON_SIGNAL_S = 20.0  # how long a preempted worker waits for its last checkpoint's upload
# How long a worker that trained a lease's segment (`to_epoch` before training.epochs) waits for
# the checkpoint of the segment's end, from which the next segment resumes, before reporting.
SEGMENT_FLUSH_S = 300.0
# The exit code that tells a scheduler (Slurm, Kubernetes) this worker's device is faulty.
EXIT_WORKER_FAULTY = 4


@dataclass(frozen=True)
class WorkerOptions:
    server: str
    token: str
    device: str = "auto"
    data_root: Path | None = None
    max_trials: int | None = None
    trainer: str = "real"  # the builtin label's executor: "real" (training) or "surrogate"
    name: str | None = None
    spool_dir: Path | None = None
    deliver_timeout_s: float = 60.0
    threads: int | None = None
    max_worker_faults: int = 3  # worker faults in a row before the worker exits (0: never)
    checkpoint_every_s: float = 180.0  # workers.checkpoint's cadence (0: every epoch)
    surrogate_epoch_s: float = 0.0  # how long a surrogate epoch takes (0: instant)
    # The operator's own training scripts (`--command LABEL=...`), by label.
    commands: Mapping[str, CommandSpec] = field(default_factory=dict)


def build_executors(options: WorkerOptions, device: torch.device) -> dict[str, Executor]:
    """The executors a worker with these options runs, by trainer label (what it leases)."""
    executors: dict[str, Executor] = {}
    if options.trainer == "surrogate":
        from vitcube.workers.executors.surrogate import SurrogateExecutor

        executors[BUILTIN_TRAINER] = SurrogateExecutor(epoch_s=options.surrogate_epoch_s)
    else:
        from vitcube.workers.executors.builtin import BuiltinExecutor

        executors[BUILTIN_TRAINER] = BuiltinExecutor(
            device, data_root=options.data_root, checkpoint_every_s=options.checkpoint_every_s
        )
    for label, spec in options.commands.items():
        executors[label] = spec.executor()
    return executors


def default_worker_name(device: str) -> str:
    return f"{socket.gethostname()}:{device.replace(':', '')}"


class Heartbeat:
    """A background thread that keeps one lease alive.

    It beats every `interval_s` and immediately after `update()` (each epoch, with metrics).
    "stop" sets `control.stop`; a 409 sets `control.lease_lost`; an unreachable server is
    logged and tried again at the next beat (the lease usually outlives a blip).
    """

    def __init__(
        self,
        client: VitcubeClient,
        lease: TrialLease,
        control: Control,
        *,
        interval_s: float,
        log: Callable[[str], None],
    ) -> None:
        self.client = client
        self.lease = lease
        self.control = control
        self.interval_s = interval_s
        self.log = log
        self.epoch = 0
        self.metrics: dict[str, float] = {}
        self.beats = 0
        self._wake = threading.Event()
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{lease.id}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def update(self, epoch: int, metrics: Mapping[str, float]) -> None:
        with self._lock:
            self.epoch = epoch
            self.metrics = {k: v for k, v in metrics.items() if _finite(v)}
        self._wake.set()

    def stop(self) -> None:
        self._done.set()
        self._wake.set()
        self._thread.join(timeout=self.interval_s + 35)

    def _run(self) -> None:
        while not self._done.is_set():
            self._wake.wait(self.interval_s)
            self._wake.clear()
            if self._done.is_set():
                return
            with self._lock:
                epoch, metrics = self.epoch, dict(self.metrics)
            try:
                action = self.client.heartbeat(
                    self.lease.id,
                    self.lease.lease_id,
                    epoch=epoch,
                    metrics=metrics,
                    deadline_s=max(1.0, self.interval_s),
                    abort=self._done,
                )
            except LeaseLost as error:
                self.log(f"trial {self.lease.id}: lease lost ({error}); abandoning it")
                self.control.lease_lost.set()
                return
            except (ServerUnavailable, RequestRejected) as error:
                self.log(f"trial {self.lease.id}: heartbeat failed ({error}); will retry")
                continue
            except AuthError as error:
                self.log(f"trial {self.lease.id}: heartbeat refused ({error})")
                continue
            self.beats += 1
            if action == "stop" and not self.control.stop.is_set():
                self.log(f"trial {self.lease.id}: the server asked to stop; reporting what we have")
                self.control.stop.set()


class _SegmentEvents:
    """A segment's events (`executors.SegmentEvents`), to the progress display and the
    heartbeat: each epoch's metrics go with the next beat, which follows at once."""

    def __init__(self, progress: WorkerProgress, heartbeat: Heartbeat) -> None:
        self.progress = progress
        self.heartbeat = heartbeat

    def on_start(self, *, epochs: int, steps_per_epoch: int, train_images: int) -> None:
        self.progress.on_start(
            epochs=epochs, steps_per_epoch=steps_per_epoch, train_images=train_images
        )

    def on_step(
        self, *, epoch: int, step: int, loss: float, images_per_s: float, lr: float
    ) -> None:
        self.progress.on_step(epoch=epoch, step=step, loss=loss, images_per_s=images_per_s, lr=lr)

    def on_epoch(self, epoch: int, metrics: Mapping[str, float]) -> None:
        self.progress.on_epoch(epoch, metrics)
        self.heartbeat.update(epoch, metrics)


class LeaseCheckpoints:
    """The lease's checkpoints as the loop keeps them (`executors.SegmentCheckpoints`): the
    download to resume from, a discard, and the background upload of new ones."""

    def __init__(
        self,
        client: VitcubeClient,
        lease: TrialLease,
        scratch: Path,
        *,
        abort: threading.Event,
        log: Callable[[str], None],
    ) -> None:
        self.client = client
        self.lease = lease
        self.scratch = scratch
        self.abort = abort
        self.log = log
        self.uploader: CheckpointUploader | None = None

    def resume_path(self) -> Path | None:
        lease = self.lease
        if lease.checkpoint is None:
            return None
        path = self.scratch / "resume.checkpoint"
        try:
            self.client.download_checkpoint(lease.id, path, deadline_s=120.0, abort=self.abort)
        except ArtifactCorrupt as error:
            self.discard(str(error))
            return None
        except (RequestRejected, ServerUnavailable, AuthError, LeaseLost, OSError) as error:
            self.log(
                f"trial {lease.id}: checkpoint of epoch {lease.checkpoint.epoch} not downloaded "
                f"({error}); training from epoch 0"
            )
            return None
        return path

    def discard(self, reason: str) -> None:
        lease = self.lease
        self.log(
            f"trial {lease.id}: its checkpoint cannot be resumed ({reason}); discarding it and "
            "training from epoch 0"
        )
        try:
            self.client.discard_checkpoint(lease.id, lease.lease_id, reason, abort=self.abort)
        except (RequestRejected, ServerUnavailable, AuthError, LeaseLost) as error:
            self.log(f"trial {lease.id}: the server did not discard it ({error})")

    def submit(self, path: Path, *, epoch: int, step: int = 0) -> None:
        if self.uploader is None:
            self.uploader = CheckpointUploader(
                self.client, self.lease.id, self.lease.lease_id, log=self.log
            )
        self.uploader.submit(path, epoch=epoch, step=step)

    def flush(self, timeout_s: float) -> None:
        """Wait (at most `timeout_s`) until the newest checkpoint is stored; say how it went."""
        uploader = self.uploader
        if uploader is None or uploader.submitted is None:
            return
        if uploader.flush(timeout_s):
            sent = uploader.sent
            if sent is not None:
                self.log(
                    f"trial {self.lease.id}: checkpoint at epoch {sent.epoch}"
                    + (f" step {sent.step}" if sent.step else "")
                    + " stored on the server"
                )
        else:
            self.log(
                f"trial {self.lease.id}: the last checkpoint was not stored within "
                f"{timeout_s:.0f} s; the trial resumes from an earlier one, if any"
            )

    def close(self) -> None:
        """Stop uploading (anything not sent is dropped) and delete the local files."""
        uploader, self.uploader = self.uploader, None
        if uploader is not None:
            uploader.close()


class Worker:
    """One worker process bound to one device, running its executors' leases."""

    def __init__(self, options: WorkerOptions, progress: WorkerProgress) -> None:
        from vitcube.workers.spool import default_spool_dir

        self.options = options
        self.progress = progress
        self.device_name = options.device
        self.name = options.name or default_worker_name(options.device)
        self.client = VitcubeClient(
            options.server, options.token, worker=self.name, log=self._debug
        )
        self.spool = Spool(options.spool_dir or default_spool_dir())
        self.shutdown = threading.Event()
        self.signal_name: str | None = None
        self._control: Control | None = None
        self.checkpoint_dir = self.spool.directory.parent / "checkpoints"
        self.executors: dict[str, Executor] = {}
        self.trials_done = 0
        self.consecutive_faults = 0  # worker faults since the last trial that went otherwise
        self.faulty: str | None = None  # why this worker stopped leasing, once it is faulty

    # -- lifecycle -----------------------------------------------------------------------------

    def run(self) -> int:
        """Work until max_trials or a signal; returns the process exit code."""
        previous = self._install_signal_handlers()
        try:
            return self._run()
        except AuthError as error:
            self.progress.log(f"the server refused the worker token: {error}")
            return 3
        finally:
            self._restore_signal_handlers(previous)
            self.client.close()

    def _run(self) -> int:
        import torch

        device = resolve_device(self.options.device)
        if device.type == "cuda":
            if device.index is None:
                device = torch.device("cuda", 0)  # `--device cuda`: the first visible GPU
            # Before any CUDA work: the pin-memory thread and every default-device allocation
            # then use this GPU, not GPU 0 (another worker's).
            torch.cuda.set_device(device)
        self.device = device
        if self.options.threads:
            torch.set_num_threads(self.options.threads)
        if self.options.trainer not in ("real", "surrogate"):
            raise ValueError(f"--trainer must be real or surrogate, got {self.options.trainer!r}")
        self.executors = build_executors(self.options, device)
        trainers = ", ".join(
            f"{label} ({self.options.trainer})" if label == BUILTIN_TRAINER else label
            for label in self.executors
        )
        self.progress.log(
            f"worker {self.name} on {device} (trainers: {trainers}; torch "
            f"{torch.__version__}) serving {self.client.server}; spool {self.spool.directory}"
        )
        try:
            return self._lease_until_done()
        finally:
            for executor in self.executors.values():
                executor.close()

    def _lease_until_done(self) -> int:
        self._warn_about_shared_memory()
        self._deliver_spool(deadline_s=10.0)
        idle_s = 1.0
        while not self.shutdown.is_set() and self.faulty is None:
            if self.options.max_trials is not None and self.trials_done >= self.options.max_trials:
                break
            try:
                lease = self.client.lease(abort=self.shutdown, trainers=list(self.executors))
            except ServerUnavailable:
                break  # only raised when shutdown was requested while retrying
            if self.spool.pending(self.client.server):
                # The server answers again: results that waited for it go first.
                self._deliver_spool(deadline_s=10.0)
            if lease is None:
                # Nothing queued: wait politely, longer each time, with jitter.
                self.shutdown.wait(idle_s * random.uniform(0.8, 1.2))
                idle_s = min(IDLE_MAX_S, idle_s * 1.5)
                continue
            idle_s = 1.0
            self._process(lease)
            self.trials_done += 1
        left = self._deliver_spool(deadline_s=self.options.deliver_timeout_s)
        if left:
            self.progress.log(
                f"{left} result(s) not yet acknowledged stay in {self.spool.directory}; "
                "the next worker start sends them"
            )
        if self.faulty is not None:
            self.progress.log(
                f"worker {self.name} stops leasing: {self.faulty}; exiting with code "
                f"{EXIT_WORKER_FAULTY} so the scheduler replaces it"
            )
            return EXIT_WORKER_FAULTY
        self.progress.log(f"worker {self.name} exiting after {self.trials_done} trial(s)")
        return 0

    def _warn_about_shared_memory(self) -> None:
        """Say at start what to change when /dev/shm cannot hold the loaders' batches."""
        if self.options.trainer != "real":
            return
        from vitcube.contract import TrainingRecipe
        from vitcube.workers.batches import PREFETCH_BATCHES, host_gpu_count, host_loader_workers

        workers = host_loader_workers(self.device)
        # Every worker process of the box (one per GPU) shares /dev/shm.
        processes = max(1, host_gpu_count()) if self.device.type == "cuda" else 1
        # A typical batch: the default batch size at the base resolution's evaluation load size
        # (256 / 0.875 = 293 px), the largest a default image-folder trial loads.
        need = processes * loader_shm_bytes(
            num_workers=workers,
            batch_size=TrainingRecipe().batch_size,
            load_size=293,
            prefetch=PREFETCH_BATCHES,
        )
        warning = shm_warning(shm_free_bytes(), need, num_workers=workers, processes=processes)
        if warning:
            self.progress.log(f"warning: {warning}")

    def _install_signal_handlers(self) -> dict[int, Any]:
        previous: dict[int, Any] = {}
        if threading.current_thread() is not threading.main_thread():
            return previous
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, self._on_signal)
        return previous

    def _restore_signal_handlers(self, previous: dict[int, Any]) -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.shutdown.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C means "now"
        self.interrupt(signal.Signals(signum).name)

    def interrupt(self, signal_name: str) -> None:
        """What SIGINT/SIGTERM do: checkpoint and hand the running trial back, lease no more."""
        self.signal_name = signal_name
        self.shutdown.set()
        if self._control is not None:
            self._control.interrupted.set()

    def _deliver_spool(self, *, deadline_s: float) -> int:
        _, left = deliver(
            self.spool,
            self.client,
            deadline_s=deadline_s,
            abort=self.shutdown,
            log=self.progress.log,
        )
        return left

    def _debug(self, message: str) -> None:
        self.progress.log(message)

    # -- one lease -----------------------------------------------------------------------------

    def _process(self, lease: TrialLease) -> None:
        """Lease → executor → report."""
        arch = lease.arch
        self.progress.start_trial(
            lease.id,
            f"search {lease.search_id}, {arch.get('base', {}).get('family', '?')} at "
            f"{arch.get('resolution', '?')} px, dataset {lease.dataset.get('name')}",
        )
        executor = self.executors.get(lease.trainer.label)
        if executor is None:  # the server leases only what the request listed
            self._fail(
                lease,
                f"worker {self.name} cannot run trainer {lease.trainer.label!r} (it runs "
                f"{', '.join(self.executors)}), yet was leased it; another worker will",
                retry=True,
            )
            return
        control = Control()
        self._control = control
        if self.shutdown.is_set():
            control.interrupted.set()
        interval = min(HEARTBEAT_MAX_INTERVAL_S, max(0.5, lease.lease_seconds / 3))
        heartbeat = Heartbeat(
            self.client, lease, control, interval_s=interval, log=self.progress.log
        )
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f"trial-{lease.id}-", dir=self.checkpoint_dir))
        checkpoints = LeaseCheckpoints(
            self.client, lease, scratch, abort=self.shutdown, log=self.progress.log
        )
        segment = Segment(
            lease=lease,
            control=control,
            events=_SegmentEvents(self.progress, heartbeat),
            checkpoints=checkpoints,
            scratch=scratch,
            log=self.progress.log,
        )
        heartbeat.start()
        try:
            outcome, failure = self._run_segment(executor, segment, heartbeat)
            if control.lease_lost.is_set():
                self.progress.end_trial("abandoned: the lease was lost")
            elif outcome is not None:
                self._report(segment, checkpoints, outcome)
            else:
                self._hand_back(segment, checkpoints, failure)
        finally:
            checkpoints.close()
            shutil.rmtree(scratch, ignore_errors=True)

    def _run_segment(
        self, executor: Executor, segment: Segment, heartbeat: Heartbeat
    ) -> tuple[TrialOutcome | None, FailureVerdict | None]:
        """The executor's outcome, or why there is none (None, None: control says why)."""
        lease = segment.lease
        try:
            outcome = executor.run(segment)
            return outcome, _refused(outcome)
        except TrainingAborted:
            return None, None  # control says why: lease lost or interrupted
        except (KeyboardInterrupt, SystemExit):
            heartbeat.stop()
            self._fail(lease, f"worker {self.name} killed during training", retry=True)
            raise
        except Exception as error:
            # Described here, acted on by the caller: once this frame returns, the traceback
            # (and the model and optimizer state its frames hold) is gone, so device memory can
            # really be freed.
            return None, describe_despite_signals(error, lease, self.options.data_root)
        finally:
            self._control = None
            heartbeat.stop()

    def _hand_back(
        self, segment: Segment, checkpoints: LeaseCheckpoints, failure: FailureVerdict | None
    ) -> None:
        """Fail the lease: retried after a signal (once its checkpoint is stored), else as the
        failure says; count worker faults."""
        lease = segment.lease
        verdict = failure or FailureVerdict("training ended without a result", True)
        if verdict.fault != "sticky":  # a dead CUDA context would only raise again
            release_device_memory(self.progress.log)
        if segment.control.interrupted.is_set():
            # A signal may also surface as another error (DataLoader workers killed with us).
            checkpoints.flush(FLUSH_ON_SIGNAL_S)
            checkpoints.close()
            self._fail(lease, f"worker {self.name} interrupted by {self.signal_name}", retry=True)
            return
        checkpoints.close()
        self._fail(lease, verdict.message, retry=verdict.retry, worker_fault=verdict.fault)
        self._count_fault(verdict.fault)

    def _report(
        self, segment: Segment, checkpoints: LeaseCheckpoints, outcome: TrialOutcome
    ) -> None:
        """Complete the lease: the segment's last checkpoint stored first (the next segment
        resumes from it), then the result and its weights through the spool."""
        lease = segment.lease
        self.consecutive_faults = 0
        if _ends_a_segment(lease):
            checkpoints.flush(SEGMENT_FLUSH_S)
        # Completing the last segment deletes the server's checkpoint: an upload still pending
        # is not needed then.
        checkpoints.close()
        # A finished result is reported even if a signal arrived meanwhile: it is never wasted.
        surrogate = self.options.trainer == "surrogate" and lease.trainer.label == BUILTIN_TRAINER
        body = {"lease_id": lease.lease_id, **outcome.report(), "surrogate": surrogate}
        weights = self._stage_weights(lease, outcome.weights_path)
        entry = self.spool.put(
            self.client.server, lease.id, body, stopped=outcome.stopped, weights=weights
        )
        delivered, _ = deliver(
            self.spool,
            self.client,
            deadline_s=self.options.deliver_timeout_s,
            abort=self.shutdown,
            log=self.progress.log,
            only=entry,
        )
        what = "stopped early" if outcome.stopped else "completed"
        if not outcome.stopped and _ends_a_segment(lease):
            what = f"trained to epoch {lease.to_epoch} of {lease.training.get('epochs')} (a rung)"
        state = "reported" if delivered else f"kept in the spool ({entry.path})"
        self.progress.end_trial(
            f"{what}: {_metric_text(outcome)} (epoch {outcome.best_epoch}), "
            f"{outcome.macs / 1e6:.1f} M MACs, {outcome.params / 1e6:.2f} M params; {state}"
        )

    def _stage_weights(self, lease: TrialLease, path: Path | None) -> Path | None:
        """The executor's weights file, moved to the spool's filesystem for `Spool.put`."""
        if path is None or not path.is_file():
            return None
        staged = self.spool.staging_path(lease.id)
        try:
            shutil.move(path, staged)
        except OSError as error:
            staged.unlink(missing_ok=True)
            self.progress.log(f"trial {lease.id}: weights not kept ({error})")
            return None
        return staged

    def _count_fault(self, fault: str | None) -> None:
        """Count worker faults in a row; a trial that failed otherwise breaks the run."""
        if fault is None:
            self.consecutive_faults = 0
            return
        self.consecutive_faults += 1
        limit = self.options.max_worker_faults
        if fault == "sticky":
            self.faulty = "a sticky CUDA error left this process's CUDA context unusable"
        elif limit and self.consecutive_faults >= limit:
            self.faulty = f"{self.consecutive_faults} worker faults in a row (--max-worker-faults)"

    def _fail(
        self, lease: TrialLease, message: str, *, retry: bool, worker_fault: str | None = None
    ) -> None:
        try:
            self.client.fail(
                lease.id, lease.lease_id, message, retry=retry, worker_fault=bool(worker_fault)
            )
            what = (
                "worker fault, handed back uncharged"
                if worker_fault
                else ("will be retried" if retry else "final")
            )
            self.progress.end_trial(f"failed ({what}): {message}")
        except LeaseLost:
            self.progress.end_trial(f"failed, but the lease was already lost: {message}")
        except (ServerUnavailable, RequestRejected) as error:
            self.progress.end_trial(
                f"failed ({message}); the server did not take the report ({error}); "
                "the lease will expire and the trial be queued again"
            )


def _refused(outcome: TrialOutcome) -> FailureVerdict | None:
    """A final failure for an outcome the search cannot rank: its metric missing or not finite
    at the best epoch or in any epoch of the curve (the server would refuse the report)."""
    metric = outcome.metric
    try:
        metric.check_value(outcome.value, where="the result")
        for point in outcome.curve:
            for name, value in point.items():
                if not _finite(value):
                    raise ValueError(
                        f"epoch {point.get('epoch')}'s {name} must be a finite number, got "
                        f"{value!r} (the search cannot rank NaN or infinity)"
                    )
    except ValueError as error:
        return FailureVerdict(f"invalid result: {error}", False)
    return None


def _metric_text(outcome: TrialOutcome) -> str:
    if outcome.metric.name == "val_top1":
        return f"top-1 {outcome.value:.2%}"
    return f"{outcome.metric.name} {outcome.value:.4g}"


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _ends_a_segment(lease: TrialLease) -> bool:
    """Whether the lease trains a segment that more epochs follow (`to_epoch` < epochs)."""
    epochs = lease.training.get("epochs")
    return lease.to_epoch is not None and isinstance(epochs, int) and lease.to_epoch < epochs
