"""The worker loop: lease a trial, train it, keep the lease alive, report, repeat.

For every trial: load the dataset, build the architecture (models/), train it (or evaluate the
surrogate landscape), heartbeat every epoch and at least every 30 s from a background thread,
then write the result to the spool and complete it. Faults, as the worker protocol (README,
"The REST API") expects:
- 409 on a heartbeat (lease lost): the trial is abandoned, nothing is reported;
- "stop" from a heartbeat: training ends and the partial curve is reported;
- SIGINT/SIGTERM: the trial is failed with `retry: true` (queued again) and the worker exits 0;
- a missing/malformed dataset, a bad training block, a diverged loss, `compile` without a
  compiler, CUDA out-of-memory even with micro-batches (the trainer retries an OOM with the
  batch split first): failed with `retry: false` and a message saying what to change;
- a fault of this worker rather than the trial (a sticky CUDA error, cuBLAS/cuDNN, a killed
  DataLoader worker; `workers.host.worker_fault_kind`): failed with `worker_fault: true`, so
  the trial is queued again without being charged an attempt; the worker then stops leasing
  and exits with EXIT_WORKER_FAULTY, at once after a sticky CUDA error (the context is dead)
  or after `max_worker_faults` faults in a row, so its scheduler replaces it;
- a server that cannot be reached: retried with backoff; a finished result stays in the
  spool and is re-sent before every lease and by the next worker start until acknowledged.

Checkpoints (`workers.checkpoint`): a lease that names a checkpoint resumes from it (downloaded
and checked into a temporary directory); one that fails to download intact or to load (corrupt,
another architecture or recipe) is discarded on the server (DELETE, with the reason) and the
trial trains from scratch. While training, epoch-end checkpoints go to a local directory beside
the spool and a background thread uploads them (the epoch loop never waits for the network).
On SIGINT/SIGTERM the trainer saves a checkpoint at the next step boundary, the upload is
flushed (at most `FLUSH_ON_SIGNAL_S`), and only then is the trial failed with `retry: true`.
A completed trial's best-epoch EMA weights are written into the spool beside its result and
uploaded before the complete (`workers.spool.deliver`).

Imports vitcube.contract, models (through workers.trainer) and workers.*.
"""

from __future__ import annotations

import json
import random
import signal
import socket
import threading
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, NamedTuple

from vitcube.contract import TrialLease, preprocessing
from vitcube.workers.client import (
    ArtifactCorrupt,
    AuthError,
    LeaseLost,
    RequestRejected,
    ServerUnavailable,
    VitcubeClient,
)
from vitcube.workers.datasets import DatasetError, ImageDataset, load_dataset
from vitcube.workers.host import (
    loader_shm_bytes,
    missing_compiler,
    shm_free_bytes,
    shm_warning,
    worker_fault_kind,
)
from vitcube.workers.progress import WorkerProgress
from vitcube.workers.spool import Spool, deliver
from vitcube.workers.trainer import (
    Control,
    EpochReport,
    TrainingAborted,
    TrainingConfig,
    TrainingDiverged,
    TrainingListener,
    TrialOutcome,
    release_device_memory,
)

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
    trainer: str = "real"  # or "surrogate"
    name: str | None = None
    spool_dir: Path | None = None
    deliver_timeout_s: float = 60.0
    threads: int | None = None
    max_worker_faults: int = 3  # worker faults in a row before the worker exits (0: never)
    checkpoint_every_s: float = 180.0  # workers.checkpoint's cadence (0: every epoch)


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

    def update(self, epoch: int, metrics: dict[str, float]) -> None:
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


class _Listener(TrainingListener):
    """Forwards training events to the progress display and the heartbeat."""

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

    def on_epoch(self, report: EpochReport) -> None:
        self.progress.on_epoch(report)
        self.heartbeat.update(
            report.epoch,
            {
                "train_loss": report.train_loss,
                "val_top1": report.val_top1,
                "val_top5": report.val_top5,
                "lr": report.lr,
                "images_per_s": report.images_per_s,
            },
        )


class Worker:
    """One worker process bound to one device."""

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
        self._uploader: Any = None  # the running trial's CheckpointUploader
        self.checkpoint_dir = self.spool.directory.parent / "checkpoints"
        self._dataset_cache: tuple[str, ImageDataset] | None = None
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

        from vitcube.workers.trainer import resolve_device

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
        self.progress.log(
            f"worker {self.name} on {device} ({self.options.trainer} trainer, torch "
            f"{torch.__version__}) serving {self.client.server}; spool {self.spool.directory}"
        )
        self._warn_about_shared_memory()
        self._deliver_spool(deadline_s=10.0)
        idle_s = 1.0
        while not self.shutdown.is_set() and self.faulty is None:
            if self.options.max_trials is not None and self.trials_done >= self.options.max_trials:
                break
            try:
                lease = self.client.lease(abort=self.shutdown)
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
        self.signal_name = signal.Signals(signum).name
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

    # -- one trial -----------------------------------------------------------------------------

    def _process(self, lease: TrialLease) -> None:
        control = Control()
        self._control = control
        if self.shutdown.is_set():
            control.interrupted.set()
        interval = min(HEARTBEAT_MAX_INTERVAL_S, max(0.5, lease.lease_seconds / 3))
        heartbeat = Heartbeat(
            self.client, lease, control, interval_s=interval, log=self.progress.log
        )
        arch = lease.arch
        self.progress.start_trial(
            lease.id,
            f"search {lease.search_id}, {arch.get('base', {}).get('family', '?')} at "
            f"{arch.get('resolution', '?')} px, dataset {lease.dataset.get('name')}",
        )
        heartbeat.start()
        outcome: TrialOutcome | None = None
        failure: FailureVerdict | None = None
        surrogate = self.options.trainer == "surrogate"
        try:
            outcome = self._train(lease, control, heartbeat, surrogate=surrogate)
        except TrainingAborted:
            pass  # control says why: lease lost or interrupted
        except (KeyboardInterrupt, SystemExit):
            heartbeat.stop()
            self._close_uploader()
            self._fail(lease, f"worker {self.name} killed during training", retry=True)
            raise
        except Exception as error:
            # Decided here, acted on below: outside this block the traceback (and the model and
            # optimizer state its frames hold) is gone, so device memory can really be freed.
            failure = describe_despite_signals(error, lease, self.options.data_root)
        finally:
            self._control = None
            heartbeat.stop()
        if control.lease_lost.is_set():
            self._close_uploader()
            self.progress.end_trial("abandoned: the lease was lost")
            return
        if outcome is None:
            verdict = failure or FailureVerdict("training ended without a result", True)
            if verdict.fault != "sticky":  # a dead CUDA context would only raise again
                release_device_memory(self.progress.log)
            if control.interrupted.is_set():
                # A signal may also surface as another error (DataLoader workers killed with us).
                message = f"worker {self.name} interrupted by {self.signal_name}"
                self._flush_checkpoint(lease)
                self._close_uploader()
                self._fail(lease, message, retry=True)
                return
            self._close_uploader()
            self._fail(lease, verdict.message, retry=verdict.retry, worker_fault=verdict.fault)
            self._count_fault(verdict.fault)
            return
        self.consecutive_faults = 0
        if _ends_a_segment(lease):
            # The next segment resumes from the checkpoint of this one's end: store it first.
            self._flush_checkpoint(lease, timeout_s=SEGMENT_FLUSH_S)
        # Completing the last segment deletes the server's checkpoint: an upload still pending
        # is not needed then.
        self._close_uploader()
        # A finished result is reported even if a signal arrived meanwhile: it is never wasted.
        body = {"lease_id": lease.lease_id, **outcome.report(), "surrogate": surrogate}
        weights = self._write_weights(lease, outcome)
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
            f"{what}: top-1 {outcome.top1:.2%} (epoch {outcome.best_epoch}), "
            f"{outcome.macs / 1e6:.1f} M MACs, {outcome.params / 1e6:.2f} M params; {state}"
        )

    def _train(
        self, lease: TrialLease, control: Control, heartbeat: Heartbeat, *, surrogate: bool
    ) -> TrialOutcome:
        config = TrainingConfig.from_dict(lease.training)
        if surrogate:
            return self._surrogate(lease, config, control, heartbeat)
        if config.compile:
            reason = missing_compiler(self.device.type)
            if reason:
                raise CompilerMissing(reason)
        data = self._load_dataset(lease.dataset)
        control.check()
        from vitcube.workers.checkpoint import (
            CheckpointCadence,
            CheckpointError,
            CheckpointUploader,
            TrialCheckpoints,
        )
        from vitcube.workers.trainer import run_trial

        resume = self._fetch_checkpoint(lease)
        uploader = CheckpointUploader(self.client, lease.id, lease.lease_id, log=self.progress.log)
        self._uploader = uploader
        sink = TrialCheckpoints(
            self.checkpoint_dir,
            lease.id,
            cadence=CheckpointCadence(self.options.checkpoint_every_s),
            uploader=uploader,
            log=self.progress.log,
        )

        def attempt(resume: dict[str, Any] | None) -> TrialOutcome:
            return run_trial(
                lease.arch,
                data,
                config=config,
                seed=lease.seed,
                device=self.device,
                control=control,
                listener=_Listener(self.progress, heartbeat),
                log=self.progress.log,
                resume=resume,
                checkpoints=sink,
                to_epoch=lease.to_epoch,
            )

        try:
            try:
                return attempt(resume)
            except CheckpointError as error:
                if resume is None:
                    raise
                reason = str(error)
            # Refused before any training: discard it and start from epoch 0.
            resume = None
            self._discard_checkpoint(lease, reason)
            return attempt(None)
        finally:
            if config.compile:
                # Every trial is a new network: drop its compiled graphs, so a long-lived worker
                # does not reach dynamo's recompile limit and silently fall back to eager.
                import torch._dynamo

                torch._dynamo.reset()

    # -- checkpoints and weights -------------------------------------------------------------

    def _fetch_checkpoint(self, lease: TrialLease) -> dict[str, Any] | None:
        """The lease's checkpoint, downloaded, verified and loaded; None to start afresh (one
        that is damaged is discarded on the server first)."""
        if lease.checkpoint is None:
            return None
        import tempfile

        from vitcube.workers.checkpoint import CheckpointError, load_checkpoint

        ref = lease.checkpoint
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.checkpoint_dir, prefix="resume-") as scratch:
            path = Path(scratch) / "checkpoint.pt"
            try:
                self.client.download_checkpoint(
                    lease.id, path, deadline_s=120.0, abort=self.shutdown
                )
                state = load_checkpoint(path)
            except (ArtifactCorrupt, CheckpointError) as error:
                self._discard_checkpoint(lease, str(error))
                return None
            except (RequestRejected, ServerUnavailable, AuthError, LeaseLost, OSError) as error:
                self.progress.log(
                    f"trial {lease.id}: checkpoint of epoch {ref.epoch} not downloaded ({error}); "
                    "training from epoch 0"
                )
                return None
        self.progress.log(
            f"trial {lease.id}: resuming from its checkpoint at epoch {state['epoch']}"
            + (f", step {state['step']}" if state.get("step") else "")
        )
        return state

    def _discard_checkpoint(self, lease: TrialLease, reason: str) -> None:
        self.progress.log(
            f"trial {lease.id}: its checkpoint cannot be resumed ({reason}); discarding it and "
            "training from epoch 0"
        )
        try:
            self.client.discard_checkpoint(lease.id, lease.lease_id, reason, abort=self.shutdown)
        except (RequestRejected, ServerUnavailable, AuthError, LeaseLost) as error:
            self.progress.log(f"trial {lease.id}: the server did not discard it ({error})")

    def _flush_checkpoint(self, lease: TrialLease, *, timeout_s: float = FLUSH_ON_SIGNAL_S) -> None:
        uploader = self._uploader
        if uploader is None or uploader.submitted is None:
            return
        if uploader.flush(timeout_s):
            sent = uploader.sent
            if sent is not None:
                self.progress.log(
                    f"trial {lease.id}: checkpoint at epoch {sent.epoch}"
                    + (f" step {sent.step}" if sent.step else "")
                    + " stored on the server"
                )
        else:
            self.progress.log(
                f"trial {lease.id}: the last checkpoint was not stored within "
                f"{timeout_s:.0f} s; the trial resumes from an earlier one, if any"
            )

    def _close_uploader(self) -> None:
        uploader, self._uploader = self._uploader, None
        if uploader is not None:
            uploader.close()

    def _write_weights(self, lease: TrialLease, outcome: TrialOutcome) -> Path | None:
        """The completed trial's weights file (`workers.checkpoint.save_weights`), staged in the
        spool; None when there are none (the surrogate) or it cannot be written."""
        if outcome.weights is None or outcome.arch is None:
            return None
        from vitcube.workers.checkpoint import save_weights

        path = self.spool.staging_path(lease.id)
        try:
            save_weights(
                path,
                arch=outcome.arch,
                state_dict=outcome.weights,
                preprocessing=preprocessing(
                    str(lease.dataset.get("name", "")), int(outcome.arch.get("resolution", 0))
                ),
                top1=outcome.top1,
                trial_id=lease.id,
                search_id=lease.search_id,
            )
        except OSError as error:
            path.unlink(missing_ok=True)
            self.progress.log(f"trial {lease.id}: weights not written ({error})")
            return None
        return path

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

    def _load_dataset(self, spec: dict[str, Any]) -> ImageDataset:
        key = json.dumps([spec, str(self.options.data_root)], sort_keys=True, default=str)
        if self._dataset_cache is not None and self._dataset_cache[0] == key:
            return self._dataset_cache[1]
        data = load_dataset(spec, self.options.data_root)
        self._dataset_cache = (key, data)
        return data

    def _surrogate(
        self, lease: TrialLease, config: TrainingConfig, control: Control, heartbeat: Heartbeat
    ) -> TrialOutcome:
        """The documented synthetic landscape instead of training (reports say surrogate).

        Trains the lease's segment, epochs from_epoch + 1 … to_epoch of the run's curve (the
        curve is a function of the trial alone, so a resumed segment continues it exactly), and
        reports the curve so far and its best top-1."""
        from vitcube.models import Arch, count_macs, count_params
        from vitcube.workers.surrogate import surrogate_curve

        arch = Arch.from_dict(dict(lease.arch))
        name = str(lease.dataset.get("name", "digits"))
        landscape = str(lease.dataset.get("landscape", "balanced"))
        values = surrogate_curve(
            arch, dataset=name, epochs=config.epochs, seed=lease.seed, landscape=landscape
        )
        end = config.epochs if lease.to_epoch is None else min(lease.to_epoch, config.epochs)
        start = min(lease.from_epoch, end - 1)
        self.progress.on_start(epochs=end, steps_per_epoch=1, train_images=0)
        curve = [
            {"epoch": epoch, "val_top1": float(values[epoch - 1])} for epoch in range(1, start + 1)
        ]
        stopped = False
        for epoch in range(start + 1, end + 1):
            top1 = float(values[epoch - 1])
            control.check()
            if control.stop.is_set():
                stopped = True
                break
            curve.append({"epoch": epoch, "val_top1": top1})
            report = EpochReport(epoch, 0.0, top1, top1, 0.0, 0.0)
            self.progress.on_epoch(report)
            heartbeat.update(epoch, {"val_top1": top1})
        best = (
            max(curve, key=lambda point: point["val_top1"])
            if curve
            else {"epoch": 0, "val_top1": 0.0}
        )
        return TrialOutcome(
            top1=best["val_top1"],
            top5=None,
            params=count_params(arch),
            macs=count_macs(arch),
            latency_ms=None,
            images_per_s=None,
            curve=curve,
            stopped=stopped,
            best_epoch=int(best["epoch"]),
            resumed_from_epoch=start or None,
            epochs_trained=float(len(curve) - start),
            train_images=_surrogate_train_images(lease.dataset),
        )


# Training images per epoch the surrogate trainer reports (what the real datasets hold; digits'
# fixed split keeps 80 % of 1,797), so a surrogate search counts train_macs as a real one would.
SURROGATE_TRAIN_IMAGES = {"digits": 1437, "cifar10": 50_000, "cifar100": 50_000}


def _surrogate_train_images(dataset: Mapping[str, Any]) -> int | None:
    """The images per epoch of a surrogate trial: the spec's `train_images` (shapes' option;
    any dataset may name it), else the real dataset's size, else unknown (an image folder)."""
    named = dataset.get("train_images")
    if isinstance(named, int) and not isinstance(named, bool) and named > 0:
        return named
    if dataset.get("name") == "shapes":
        from vitcube.workers.shapes import DEFAULT_TRAIN_IMAGES

        return DEFAULT_TRAIN_IMAGES
    return SURROGATE_TRAIN_IMAGES.get(str(dataset.get("name")))


class CompilerMissing(RuntimeError):
    """`training.compile` is true and this host lacks the compiler it needs (workers.host)."""


class FailureVerdict(NamedTuple):
    """How to report a failed trial: the message, whether a retry could help, and whether the
    fault is this worker's (`"sticky"`: its CUDA context is dead; `"host"`: cuBLAS/cuDNN or its
    loader workers) rather than the trial's."""

    message: str
    retry: bool
    fault: str | None = None


def describe_despite_signals(
    error: BaseException, lease: TrialLease, data_root: Path | None
) -> FailureVerdict:
    """`describe_failure`, even when another error arrives while it runs.

    Edge case: once a DataLoader process has died, torch's SIGCHLD handler raises "DataLoader
    worker … is killed" at whatever bytecode the main thread runs next, for as long as the
    loader's iterator is alive — and the traceback being described keeps it alive. The later
    error is the same fault, so it is described instead; it must not escape and kill the worker.
    """
    for _ in range(3):
        try:
            return describe_failure(error, lease, data_root)
        except Exception as later:
            error = later
    return FailureVerdict(f"{type(error).__name__}: {error}", True)


def describe_failure(
    error: BaseException, lease: TrialLease, data_root: Path | None
) -> FailureVerdict:
    """Classify a training failure: the fail message, retry, and whether it is a worker fault."""
    import torch

    if isinstance(error, DatasetError):
        return FailureVerdict(f"dataset error on worker (data root {data_root}): {error}", False)
    if isinstance(error, torch.OutOfMemoryError):
        batch = lease.training.get("batch_size", "?")
        return FailureVerdict(
            f"CUDA out of memory training at batch size {batch} and "
            f"{lease.arch.get('resolution', '?')} px, even with the batch split into "
            "micro-batches: lower training.batch_size or use a GPU with more memory "
            f"({str(error).splitlines()[0][:300]})",
            False,
        )
    if isinstance(error, TrainingDiverged):
        return FailureVerdict(str(error), False)
    if isinstance(error, CompilerMissing):
        return FailureVerdict(str(error), False)
    trace = "".join(traceback.format_exception(error, limit=8))
    fault = worker_fault_kind("\n".join(_messages(error)))
    if fault is not None:
        hint = (
            " (a killed DataLoader worker is usually /dev/shm too small: see the worker's "
            "start-up warning)"
            if "DataLoader" in str(error) or "bus error" in str(error).lower()
            else ""
        )
        return FailureVerdict(
            f"worker fault on {type(error).__name__}: {error}{hint}\n{trace[-4000:]}",
            True,
            fault,
        )
    if isinstance(error, ValueError):
        return FailureVerdict(f"invalid trial: {error}", False)
    return FailureVerdict(f"{type(error).__name__}: {error}\n{trace[-4000:]}", True)


def _messages(error: BaseException) -> list[str]:
    """The error's message and those of its causes (a loader error re-raised, a wrapped CUDA
    error), not the traceback's source lines."""
    messages: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        messages.append(f"{type(current).__name__}: {current}")
        current = current.__cause__ or current.__context__
    return messages


def _finite(value: float) -> bool:
    try:
        return value == value and abs(value) != float("inf")
    except TypeError:
        return False


def _ends_a_segment(lease: TrialLease) -> bool:
    """Whether the lease trains a segment that more epochs follow (`to_epoch` < epochs)."""
    epochs = lease.training.get("epochs")
    return lease.to_epoch is not None and isinstance(epochs, int) and lease.to_epoch < epochs
