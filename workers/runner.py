"""A trial's network built, trained and measured: what the builtin executor reports.

`run_trial` builds the trial's architecture with models/, trains it (`workers.training.train`;
after a CUDA out-of-memory error, again with the batch split into micro-batches,
`train_splitting_on_oom`), and measures params, MACs, the batch-1 latency on the worker's
device and under ONNX Runtime on its CPU (`workers.latency`).

Imports torch, models and workers.*.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from vitcube.workers.datasets import ImageDataset
from vitcube.workers.device import release_device_memory
from vitcube.workers.executors import Control, SegmentEvents
from vitcube.workers.latency import measure_latency, onnx_cpu_latency
from vitcube.workers.recipe import TrainingConfig
from vitcube.workers.training import CheckpointSink, TrainResult, train

MAX_MICRO_BATCHES = 8


def train_splitting_on_oom(
    build: Callable[[], nn.Module],
    data: ImageDataset,
    *,
    resolution: int,
    config: TrainingConfig,
    seed: int,
    device: torch.device,
    control: Control | None = None,
    listener: SegmentEvents | None = None,
    log: Callable[[str], None] | None = None,
    max_micro_batches: int = MAX_MICRO_BATCHES,
    resume: Mapping[str, Any] | None = None,
    checkpoints: CheckpointSink | None = None,
    to_epoch: int | None = None,
) -> TrainResult:
    """`train` a fresh `build()` (seeded); on a CUDA OOM, free the memory and start again with
    twice the micro-batches, up to `max_micro_batches` (and never pieces under one image).

    An OOM from a smaller card or a neighbour process then costs a restart, not the trial. The
    restart trains from scratch with the same seed, so the run is the recipe's, only split.
    Raises the last torch.OutOfMemoryError when even the finest split does not fit. A resumed
    run (`resume`) starts at the checkpoint's split and restarts from the checkpoint.
    """
    log = log or (lambda message: None)
    micro_batches = 1
    if resume is not None:
        saved = resume.get("micro_batches", 1)
        micro_batches = saved if isinstance(saved, int) and 1 <= saved <= max_micro_batches else 1
    while True:
        torch.manual_seed(seed)
        model = build().to(device)
        try:
            result = train(
                model,
                data,
                resolution=resolution,
                config=config,
                seed=seed,
                device=device,
                control=control,
                listener=listener,
                micro_batches=micro_batches,
                resume=resume,
                checkpoints=checkpoints,
                to_epoch=to_epoch,
            )
            result.micro_batches = micro_batches
            return result
        except torch.OutOfMemoryError as error:
            finer = micro_batches * 2
            if finer > max_micro_batches or finer > config.batch_size:
                raise
            first_line = str(error).splitlines()[0][:300] if str(error) else "out of memory"
        # Outside the except block: the traceback, and the activations its frames hold, are gone.
        del model
        log(
            f"CUDA out of memory with batch {config.batch_size} in {micro_batches} micro-batch(es) "
            f"({first_line}); restarting the trial with {finer} micro-batches of "
            f"~{math.ceil(config.batch_size / finer)} (same effective batch, LR and steps)"
        )
        release_device_memory(log)
        micro_batches = finer


@dataclass
class TrainedTrial:
    """A trial's network trained and measured (`run_trial`): what a worker reports for it."""

    top1: float
    top5: float | None
    params: int
    macs: int
    latency_ms: float | None
    images_per_s: float | None
    curve: list[dict[str, float]]
    stopped: bool
    best_epoch: int
    latency_device: str | None = None  # what measured latency_ms (`Latency.device`)
    latency_onnx_ms: float | None = None  # batch 1 under ONNX Runtime on this CPU
    latency_onnx_device: str | None = None
    resumed_from_epoch: int | None = None
    epochs_trained: float | None = None
    train_images: int | None = None  # training images in one epoch (train_macs counts them)
    # The best epoch's EMA weights (CPU) and the Arch dict: the trial's weights file.
    weights: dict[str, torch.Tensor] | None = field(default=None, repr=False)
    arch: dict[str, Any] | None = field(default=None, repr=False)


def run_trial(
    arch_dict: Mapping[str, Any],
    data: ImageDataset,
    *,
    config: TrainingConfig,
    seed: int,
    device: torch.device,
    control: Control | None = None,
    listener: SegmentEvents | None = None,
    log: Callable[[str], None] | None = None,
    resume: Mapping[str, Any] | None = None,
    checkpoints: CheckpointSink | None = None,
    onnx_latency: bool = True,
    to_epoch: int | None = None,
) -> TrainedTrial:
    """Build the trial's architecture with models/, train it (restarting with micro-batches
    after a CUDA OOM, `train_splitting_on_oom`; from `resume` when given, checkpointing into
    `checkpoints`, up to the end of epoch `to_epoch` when given, `train`), measure
    params/MACs/latency, and the ONNX Runtime latency on the CPU (None when the export or the
    runtime fails: that never fails the trial)."""
    from vitcube.models import Arch, build_model, count_macs, count_params

    arch = Arch.from_dict(dict(arch_dict))
    if arch.num_classes < data.num_classes:
        raise ValueError(
            f"the trial's network has {arch.num_classes} outputs but dataset {data.name!r} has "
            f"{data.num_classes} classes; create the search with num_classes >= {data.num_classes}"
        )
    config = config.resolved(family=arch.family, size=arch.base.size, dataset=data.name)
    dropout = config.transformer_dropout or 0.0
    result = train_splitting_on_oom(
        lambda: build_model(arch, transformer_dropout=dropout),
        data,
        resolution=arch.resolution,
        config=config,
        seed=seed,
        device=device,
        control=control,
        listener=listener,
        log=log,
        resume=resume,
        checkpoints=checkpoints,
        to_epoch=to_epoch,
    )
    cuda = device.type == "cuda"
    amp = config.amp == "bf16" or (config.amp == "auto" and cuda)
    channels_last = config.channels_last if config.channels_last is not None else cuda
    latency = measure_latency(
        result.model, arch.resolution, device, amp=amp, channels_last=channels_last
    )
    onnx = onnx_cpu_latency(result.model, arch.resolution, log=log) if onnx_latency else None
    return TrainedTrial(
        top1=result.top1,
        top5=result.top5,
        params=count_params(arch),
        macs=count_macs(arch),
        latency_ms=latency.ms,
        latency_device=latency.device,
        images_per_s=result.images_per_s,
        curve=result.curve,
        stopped=result.stopped,
        best_epoch=result.best_epoch,
        latency_onnx_ms=onnx.ms if onnx is not None else None,
        latency_onnx_device=onnx.device if onnx is not None else None,
        resumed_from_epoch=result.resumed_from_epoch,
        epochs_trained=result.epochs_trained,
        train_images=result.epoch_images or None,
        weights=result.best_state,
        arch=arch.to_dict(),
    )
