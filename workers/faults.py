"""How a failed trial is reported: the message, whether a retry could help, whose fault it is.

`describe_failure` classifies what an executor raised: `executors.TrialFailed` as the executor
said; a missing/malformed dataset, a bad training block, a diverged loss, `compile` without a
compiler, CUDA out-of-memory even with micro-batches: final (`retry: false`) with a message
saying what to change; a fault of this worker rather than the trial (a sticky CUDA error,
cuBLAS/cuDNN, a killed DataLoader worker; `workers.host.worker_fault_kind`): retried without
charging an attempt; anything else: retried.

Imports torch, workers.datasets, workers.host, workers.training and workers.executors.
"""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import NamedTuple

from vitcube.contract import TrialLease
from vitcube.workers.datasets import DatasetError
from vitcube.workers.executors import TrialFailed
from vitcube.workers.host import worker_fault_kind
from vitcube.workers.training import TrainingDiverged


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

    if isinstance(error, TrialFailed):
        return FailureVerdict(str(error), error.retry)
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
