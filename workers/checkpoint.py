"""Training checkpoints on the worker: the file format, when to save, and the background upload.

A checkpoint is one `torch.save` of a dict (`CHECKPOINT_FORMAT`; the epoch loop builds it,
`workers.training.TrainingRun.checkpoint_state`): the model, its EMA and the EMA's update count,
the AdamW state, the epoch and step it stopped at, every RNG state the rest of the run draws
from, the curve and the best epoch so far, and a digest of the recipe. `load_checkpoint` reads it
back with `torch.load(weights_only=True, map_location="cpu")` and raises `CheckpointError` (never
anything else) for a file that is corrupt, truncated or not a vitcube checkpoint;
`check_resumable` refuses one of another architecture or recipe before any training starts.

When a checkpoint is saved (`CheckpointCadence`, the worker's `checkpoint_every_s`, default
180 s; 0 means every epoch):
- at the end of an epoch once `checkpoint_every_s` has passed since the previous checkpoint;
- at the end of every epoch while saving is cheap next to the work it protects: the previous
  save took at most 5 % of the time since that save (so short epochs are checkpointed every
  epoch, and a save never costs more than ~5 % of training);
- at the end of the first epoch, which measures what a save costs;
- always when the worker is told to stop (SIGTERM/SIGINT), at the next step boundary.
The last epoch is never checkpointed: the trial completes instead.

`TrialCheckpoints` is the epoch loop's sink: the training thread writes the file to a local
directory (atomically: a temporary file renamed into place), hands it to the segment's
checkpoints (`executors.SegmentCheckpoints.submit`) and returns at once; the worker loop's
`CheckpointUploader`, a background thread, PUTs the newest file to the server. A newer file
supersedes one not yet sent (coalescing), an unreachable server is retried with backoff for
as long as the trial trains, and a 409 (the lease is no longer ours) stops it. `flush` waits,
bounded, for the newest file to be acknowledged: the worker calls it on SIGTERM before it
hands the trial back.

Imports torch and workers.client; never the service.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from vitcube.workers.client import (
    AuthError,
    LeaseLost,
    RequestRejected,
    ServerUnavailable,
    VitcubeClient,
)

CHECKPOINT_FORMAT = "vitcube-checkpoint/1"
WEIGHTS_FORMAT = "vitcube-weights/1"
DEFAULT_CHECKPOINT_EVERY_S = 180.0
# A save this cheap relative to the training since the previous one is made at every epoch end.
CHEAP_SAVE_FRACTION = 0.05
# Recipe keys that change how fast a run goes, not what it computes: a resume may differ in them.
_SPEED_ONLY_KEYS = frozenset({"num_workers", "eval_batch_size", "compile"})
_REQUIRED_KEYS = ("arch", "epoch", "step", "model", "ema", "optimizer", "rng", "recipe_digest")


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from; the message says why (it is then discarded)."""


def recipe_digest(recipe: Mapping[str, Any], seed: int) -> str:
    """A short digest of a resolved recipe and the seed: a checkpoint resumes only the same run."""
    kept = {k: v for k, v in recipe.items() if k not in _SPEED_ONLY_KEYS}
    text = json.dumps({"recipe": kept, "seed": seed}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def save_checkpoint(state: Mapping[str, Any], path: Path) -> None:
    """Write `state` to `path` atomically: readers see the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp{os.getpid()}-{threading.get_ident()}")
    try:
        # A path, not a Python file object: torch's C++ writer then owns the file. Edge case: a
        # DataLoader process killed mid-save makes torch raise in the main thread at any
        # bytecode; through a Python handle that closes the file under the C++ writer, whose
        # next write aborts the whole worker (std::terminate) instead of failing the trial.
        torch.save(dict(state), str(temporary))
        descriptor = os.open(temporary, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint file; CheckpointError when it is corrupt, truncated or not ours."""
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as error:  # torch raises many kinds for a damaged zip or pickle
        first = (str(error).splitlines() or [type(error).__name__])[0][:300]
        raise CheckpointError(
            f"the checkpoint file cannot be read ({type(error).__name__}: {first}); "
            "it is corrupt or truncated"
        ) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"not a {CHECKPOINT_FORMAT} checkpoint (found {found!r})")
    missing = [key for key in _REQUIRED_KEYS if key not in state]
    if missing:
        raise CheckpointError(f"the checkpoint lacks {', '.join(missing)}")
    return state


def check_resumable(
    state: Mapping[str, Any], *, arch: Mapping[str, Any] | None, digest: str, epochs: int
) -> None:
    """Refuse a checkpoint of another architecture or recipe, before any training."""
    if arch is not None and _canonical(state.get("arch")) != _canonical(arch):
        raise CheckpointError(
            "the checkpoint is of another architecture than the trial's; it cannot be resumed"
        )
    if state.get("recipe_digest") != digest:
        raise CheckpointError(
            f"the checkpoint was trained with another recipe or seed (digest "
            f"{state.get('recipe_digest')!r}, this trial's {digest!r}); it cannot be resumed"
        )
    epoch, step = state.get("epoch"), state.get("step")
    if not isinstance(epoch, int) or not isinstance(step, int) or epoch < 0 or step < 0:
        raise CheckpointError(f"the checkpoint's epoch/step are not counts: {epoch!r}/{step!r}")
    if epoch > epochs:
        raise CheckpointError(f"the checkpoint is at epoch {epoch} of a {epochs}-epoch recipe")


def python_rng_state(rng: random.Random) -> list[Any]:
    """A `random.Random` state as lists and ints (what `torch.load(weights_only=True)` reads)."""
    version, internal, gauss_next = rng.getstate()
    return [version, list(internal), gauss_next]


def set_python_rng_state(rng: random.Random, saved: Any) -> None:
    try:
        version, internal, gauss_next = saved
        rng.setstate((int(version), tuple(int(v) for v in internal), gauss_next))
    except (TypeError, ValueError) as error:
        raise CheckpointError(
            f"the checkpoint's augmentation RNG state is damaged: {error}"
        ) from None


def cpu_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A CPU copy of a state dict (contiguous: a channels_last model loads anywhere)."""
    return {key: value.detach().to("cpu", copy=True).contiguous() for key, value in state.items()}


def cpu_optimizer_state(state: dict[str, Any]) -> dict[str, Any]:
    """The optimizer's state dict with its tensors copied to the CPU."""

    def cpu(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return value.detach().to("cpu", copy=True)
        if isinstance(value, dict):
            return {key: cpu(item) for key, item in value.items()}
        return value

    return {"state": cpu(state["state"]), "param_groups": state["param_groups"]}


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def save_weights(
    path: Path,
    *,
    arch: Mapping[str, Any],
    state_dict: Mapping[str, torch.Tensor],
    preprocessing: Mapping[str, Any],
    top1: float,
    trial_id: int,
    search_id: int,
) -> None:
    """The deployable file of a completed trial (`WEIGHTS_FORMAT`), written atomically."""
    cpu = {
        key: (
            value.detach()
            .to("cpu", torch.float32 if value.is_floating_point() else value.dtype)
            .contiguous()
            .clone()
        )
        for key, value in state_dict.items()
    }
    save_checkpoint(
        {
            "format": WEIGHTS_FORMAT,
            "arch": dict(arch),
            "state_dict": cpu,
            "preprocessing": dict(preprocessing),
            "top1": float(top1),
            "trial_id": int(trial_id),
            "search_id": int(search_id),
        },
        path,
    )


class CheckpointCadence:
    """When an epoch end deserves a checkpoint (the rule in the module docstring)."""

    def __init__(
        self,
        every_s: float = DEFAULT_CHECKPOINT_EVERY_S,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if every_s < 0:
            raise ValueError(f"checkpoint_every_s must be >= 0 (0: every epoch), got {every_s}")
        self.every_s = every_s
        self.clock = clock
        self.last_at = clock()
        self.last_cost_s: float | None = None  # how long the previous save blocked training

    def due(self) -> bool:
        elapsed = self.clock() - self.last_at
        if self.every_s == 0 or elapsed >= self.every_s or self.last_cost_s is None:
            return True
        return self.last_cost_s <= CHEAP_SAVE_FRACTION * elapsed

    def saved(self, cost_s: float) -> None:
        self.last_at = self.clock()
        self.last_cost_s = cost_s


@dataclass(frozen=True)
class LocalCheckpoint:
    path: Path
    epoch: int
    step: int
    version: int


class CheckpointUploader:
    """A background thread that PUTs a trial's newest checkpoint file to the server."""

    def __init__(
        self,
        client: VitcubeClient,
        trial_id: int,
        lease_id: str,
        *,
        log: Callable[[str], None] | None = None,
        keep_files: bool = False,
    ) -> None:
        self.client = client
        self.trial_id = trial_id
        self.lease_id = lease_id
        self.log = log or (lambda message: None)
        self.keep_files = keep_files
        self.sent: LocalCheckpoint | None = None  # the newest one the server acknowledged
        self.uploads = 0  # successful PUTs
        self.lease_lost = False
        self._latest: LocalCheckpoint | None = None
        self._failed_version = 0  # the newest file the server refused for good (413, 4xx)
        self._version = 0
        self._condition = threading.Condition()
        self._newer = threading.Event()  # aborts a retrying upload of a superseded file
        self._closing = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"checkpoint-upload-{trial_id}", daemon=True
        )
        self._thread.start()

    @property
    def submitted(self) -> LocalCheckpoint | None:
        """The newest file handed to the uploader, sent or not."""
        return self._latest

    def submit(self, path: Path, *, epoch: int, step: int = 0) -> None:
        """Send this file (soon): it supersedes any file not yet sent."""
        with self._condition:
            self._version += 1
            superseded = self._latest
            self._latest = LocalCheckpoint(path, epoch, step, self._version)
            self._newer.set()
            self._condition.notify_all()
        if superseded is not None and superseded != self.sent:
            self._remove(superseded)  # never sent, never will be

    def flush(self, deadline_s: float) -> bool:
        """Wait until the newest file was acknowledged; False on timeout or a lost lease."""
        deadline = time.monotonic() + deadline_s
        with self._condition:
            while True:
                if self.lease_lost:
                    return False
                latest = self._latest
                if latest is None or self._sent_version() >= latest.version:
                    return True
                if latest.version == self._failed_version:
                    return False
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._condition.wait(min(left, 0.5))

    def close(self) -> None:
        """Stop uploading (anything not sent is dropped) and delete the local files."""
        self._closing.set()
        with self._condition:
            self._condition.notify_all()
        self._thread.join(timeout=30)
        for item in (self._latest, self.sent):
            if item is not None:
                self._remove(item)

    def _run(self) -> None:
        while not self._closing.is_set():
            with self._condition:
                while not self._closing.is_set() and not self._pending():
                    self._condition.wait()
                if self._closing.is_set():
                    return
                item = self._latest
                self._newer.clear()
            assert item is not None
            abort = _AnyEvent(self._newer, self._closing)
            try:
                self.client.put_checkpoint(
                    self.trial_id,
                    self.lease_id,
                    item.path,
                    epoch=item.epoch,
                    step=item.step,
                    deadline_s=None,
                    abort=abort,
                )
            except ServerUnavailable:
                continue  # a newer file came (or we are closing): send that one instead
            except LeaseLost as error:
                self.log(f"trial {self.trial_id}: checkpoint refused (409: {error}); uploads stop")
                with self._condition:
                    self.lease_lost = True
                    self._condition.notify_all()
                return
            except (RequestRejected, AuthError, OSError) as error:
                # Retrying the same file cannot help (too large, refused, gone): wait for a newer.
                self.log(
                    f"trial {self.trial_id}: checkpoint of epoch {item.epoch} not stored ({error})"
                )
                with self._condition:
                    self._failed_version = max(self._failed_version, item.version)
                    self._condition.notify_all()
                continue
            with self._condition:
                previous, self.sent = self.sent, item
                self.uploads += 1
                self._condition.notify_all()
            if previous is not None and previous.path != item.path:
                self._remove(previous)

    def _sent_version(self) -> int:
        return self.sent.version if self.sent is not None else 0

    def _pending(self) -> bool:
        latest = self._latest
        return (
            latest is not None
            and latest.version > self._sent_version()
            and latest.version != self._failed_version
        )

    def _remove(self, item: LocalCheckpoint) -> None:
        if not self.keep_files:
            item.path.unlink(missing_ok=True)


class _AnyEvent:
    """An abort for the client: `wait(timeout)` returns True once any of the events is set."""

    def __init__(self, *events: threading.Event) -> None:
        self.events = events

    def is_set(self) -> bool:
        return any(event.is_set() for event in self.events)

    def wait(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.is_set():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            self.events[0].wait(0.1 if left is None else min(left, 0.1))
        return True


class CheckpointTaker(Protocol):
    """Who takes a checkpoint file once written (`executors.SegmentCheckpoints`, an uploader)."""

    def submit(self, path: Path, *, epoch: int, step: int = 0) -> None: ...


class TrialCheckpoints:
    """The epoch loop's checkpoint sink for one trial: cadence, local atomic files, the uploader.

    `due()` says whether an epoch end should be saved; `save(state_fn)` builds the state,
    writes it to `directory/trial-{id}-…pt` and hands it to `uploader` (when one is given).
    """

    def __init__(
        self,
        directory: Path,
        trial_id: int,
        *,
        cadence: CheckpointCadence | None = None,
        uploader: CheckpointTaker | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.trial_id = trial_id
        self.cadence = cadence or CheckpointCadence()
        self.uploader = uploader
        self.log = log or (lambda message: None)
        self.saves = 0
        self.last_path: Path | None = None

    def due(self) -> bool:
        return self.cadence.due()

    def save(self, state_fn: Callable[[], Mapping[str, Any]]) -> Path:
        start = time.perf_counter()
        state = state_fn()
        self.saves += 1
        epoch, step = int(state["epoch"]), int(state["step"])
        name = f"trial-{self.trial_id}-{os.getpid()}-{self.saves}-e{epoch}s{step}.pt"
        path = self.directory / name
        save_checkpoint(state, path)
        cost = time.perf_counter() - start
        self.cadence.saved(cost)
        if self.uploader is not None:
            self.uploader.submit(path, epoch=epoch, step=step)
        elif self.last_path is not None and self.last_path != path:
            self.last_path.unlink(missing_ok=True)
        self.last_path = path
        self.log(
            f"trial {self.trial_id}: checkpoint at epoch {epoch}"
            + (f" step {step}" if step else "")
            + f" ({path.stat().st_size / 1e6:.1f} MB, {cost:.2f} s)"
        )
        return path
