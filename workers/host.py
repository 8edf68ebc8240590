"""What a worker checks about its host: shared memory for DataLoader workers, a C compiler for
`torch.compile`, and which failures are the host's (its GPU, its loader processes) rather than
the trial's.

- `/dev/shm`: DataLoader worker processes hand every decoded batch to the trainer through
  shared memory. A container gets 64 MiB unless told otherwise; one 64 × 3 × 293² uint8 batch
  is about 16.5 MB and each loader worker keeps `prefetch_factor` (2) batches in flight, so the
  default four workers need ~132 MB and die with a bus error mid-epoch. `shm_warning` says so,
  and what to change, at worker start.
- `torch.compile` on a GPU generates Triton kernels, which Triton builds with a C compiler at
  run time (the inductor's CPU backend needs a C++ one). `missing_compiler` names what is
  missing, so the trial fails with that message instead of a compiler traceback.
- `worker_fault_kind` recognises the failures that say this worker is broken (a sticky CUDA
  error, cuBLAS/cuDNN, a killed DataLoader worker), so the trial goes back to the queue
  uncharged and the worker stops leasing after a few in a row.

Standard library only: cheap to import before torch.
"""

from __future__ import annotations

import os
import re
import shutil

# DataLoader's default prefetch_factor: batches each loader worker keeps in flight.
PREFETCH_FACTOR = 2

# The CUDA context is unusable after these (every later CUDA call fails): the process must go.
STICKY_CUDA = re.compile(
    r"an illegal memory access|illegal instruction|CUDA error: an illegal|device-side assert"
    r"|uncorrectable ECC|ECC error|\bXid\b|unspecified launch failure|misaligned address"
    r"|CUDA error: unknown error|GPU is lost|fallen off the bus",
    re.IGNORECASE,
)
# Library or host-process failures that a healthy box does not produce.
HOST_FAULT = re.compile(
    r"CUBLAS_STATUS_\w+|CUDNN_STATUS_\w+"
    r"|DataLoader worker \(pids?(?:\(s\))? [^)]*\) (?:is killed|exited unexpectedly)"
    r"|lost a DataLoader worker"
    r"|\bbus error\b|insufficient shared memory",
    re.IGNORECASE,
)


def loader_shm_bytes(
    *, num_workers: int, batch_size: int, load_size: int, prefetch: int = PREFETCH_FACTOR
) -> int:
    """Shared memory the loader workers of one trial hold at once (uint8 RGB batches)."""
    return num_workers * prefetch * batch_size * 3 * load_size * load_size


def shm_free_bytes(path: str = "/dev/shm") -> int | None:
    """Bytes free in the shared-memory mount, or None where there is none (not Linux)."""
    try:
        stats = os.statvfs(path)
    except OSError:
        return None
    return stats.f_bavail * stats.f_frsize


def shm_warning(
    free_bytes: int | None, need_bytes: int, *, num_workers: int, processes: int = 1
) -> str | None:
    """What to change when `free_bytes` of /dev/shm cannot hold `need_bytes`, or None.

    need_bytes: what the box's `processes` worker processes (one per GPU; they share /dev/shm),
    each with `num_workers` DataLoader workers, hold at once.

    A warning, not a refusal: a worker cannot know at start whether it will get an image-folder
    trial (digits and CIFAR are in memory and never touch /dev/shm), and if one does die of a
    bus error it is handed back as a worker fault, uncharged.
    """
    if free_bytes is None or free_bytes >= need_bytes:
        return None
    mib = 1 << 20
    who = f"{num_workers} DataLoader workers"
    if processes > 1:
        who = f"{processes} worker processes x {who}"
    return (
        f"/dev/shm has {free_bytes / mib:.0f} MiB free but {who} need about "
        f"{need_bytes / mib:.0f} MiB for image-folder trials (they die with a bus error "
        "otherwise): docker run --shm-size=16g (compose: shm_size), on Kubernetes mount an "
        "emptyDir {medium: Memory} at /dev/shm, or set VITCUBE_LOADER_WORKERS lower"
    )


def missing_compiler(device_type: str) -> str | None:
    """Why `torch.compile` cannot work on this host, or None when the compiler it needs exists.

    CUDA: Triton builds its launcher with a C compiler ($CC, cc, gcc or clang). CPU: the
    inductor compiles C++ ($CXX, c++, g++ or clang++).
    """
    if device_type == "cuda":
        names, var = ("cc", "gcc", "clang"), "CC"
        what = "C compiler (Triton builds its kernels' launchers with it)"
    else:
        names, var = ("c++", "g++", "clang++"), "CXX"
        what = "C++ compiler (the inductor's CPU backend needs it)"
    chosen = os.environ.get(var)
    if chosen and shutil.which(chosen):
        return None
    if any(shutil.which(name) for name in names):
        return None
    return (
        f"training.compile is true but this worker has no {what}: none of "
        f"{', '.join(names)} is on PATH; install one (apt-get install gcc, as the vitcube image "
        "does) or create the search with training.compile false"
    )


def worker_fault_kind(message: str) -> str | None:
    """`"sticky"` (the CUDA context is dead), `"host"` (cuBLAS/cuDNN, loader workers killed),
    or None when the failure may be the trial's own."""
    if STICKY_CUDA.search(message):
        return "sticky"
    if HOST_FAULT.search(message):
        return "host"
    return None
