"""The worker's device: which one `--device` names, and giving a failed run's memory back.

Imports torch only.
"""

from __future__ import annotations

import gc
from collections.abc import Callable

import torch


def resolve_device(name: str) -> torch.device:
    """`auto` picks cuda:0 when a GPU is visible, else the CPU."""
    if name == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: no CUDA GPU is visible; use --device cpu or auto")
    return device


def release_device_memory(log: Callable[[str], None] | None = None) -> None:
    """Give a failed run's device memory back for real and log what stays reserved.

    `gc.collect()` first: the model, optimizer and activations may sit in reference cycles (a
    traceback's frames) that only the collector frees, and `empty_cache()` can return only
    blocks nothing references any more.
    """
    gc.collect()
    if not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return
    torch.cuda.empty_cache()
    if log is not None:
        mib = 1 << 20
        log(
            f"device memory after freeing: {torch.cuda.memory_allocated() / mib:.0f} MiB "
            f"allocated, {torch.cuda.memory_reserved() / mib:.0f} MiB reserved"
        )
