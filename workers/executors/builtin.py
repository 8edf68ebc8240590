"""The builtin executor: vitcube's recipe (`workers.training`) on a dataset the worker loads.

A segment: load the lease's dataset (kept for the next lease of the same dataset), resume from
the lease's checkpoint (`workers.checkpoint`'s format; one that does not load or does not fit
the trial's network and recipe is discarded on the server, and the trial trains from epoch 0),
train epochs from_epoch + 1 … to_epoch, handing checkpoints to the segment at the cadence of
`workers.checkpoint.CheckpointCadence`, and write the best epoch's EMA weights (the weights
format) into the segment's scratch directory.

Imports torch, models and workers.*; never the service.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from vitcube.contract import BUILTIN_TRAINER, TrialLease, preprocessing
from vitcube.workers.checkpoint import (
    DEFAULT_CHECKPOINT_EVERY_S,
    CheckpointCadence,
    CheckpointError,
    TrialCheckpoints,
    load_checkpoint,
    save_weights,
)
from vitcube.workers.datasets import ImageDataset, load_dataset
from vitcube.workers.executors import Executor, Segment, TrialOutcome
from vitcube.workers.faults import CompilerMissing
from vitcube.workers.host import missing_compiler
from vitcube.workers.recipe import TrainingConfig
from vitcube.workers.runner import TrainedTrial, run_trial


class BuiltinExecutor(Executor):
    """Trains builtin-trainer leases on `device` with datasets found under `data_root`."""

    label = BUILTIN_TRAINER

    def __init__(
        self,
        device: torch.device,
        *,
        data_root: Path | None = None,
        checkpoint_every_s: float = DEFAULT_CHECKPOINT_EVERY_S,
    ) -> None:
        self.device = device
        self.data_root = data_root
        self.checkpoint_every_s = checkpoint_every_s
        self._dataset_cache: tuple[str, ImageDataset] | None = None

    def run(self, segment: Segment) -> TrialOutcome:
        lease = segment.lease
        config = TrainingConfig.from_dict(lease.training)
        if config.compile:
            reason = missing_compiler(self.device.type)
            if reason:
                raise CompilerMissing(reason)
        data = self._load_dataset(lease.dataset)
        segment.control.check()
        resume = self._resume(segment)
        try:
            try:
                trained = self._train(segment, data, config, resume)
            except CheckpointError as error:
                if resume is None:
                    raise
                # Refused before any training: discard it and start from epoch 0.
                segment.checkpoints.discard(str(error))
                trained = self._train(segment, data, config, None)
        finally:
            if config.compile:
                # Every trial is a new network: drop its compiled graphs, so a long-lived worker
                # does not reach dynamo's recompile limit and silently fall back to eager.
                import torch._dynamo

                torch._dynamo.reset()
        return self._outcome(segment, trained)

    def close(self) -> None:
        self._dataset_cache = None

    def _load_dataset(self, spec: Mapping[str, Any]) -> ImageDataset:
        key = json.dumps([spec, str(self.data_root)], sort_keys=True, default=str)
        if self._dataset_cache is not None and self._dataset_cache[0] == key:
            return self._dataset_cache[1]
        data = load_dataset(dict(spec), self.data_root)
        self._dataset_cache = (key, data)
        return data

    def _resume(self, segment: Segment) -> dict[str, Any] | None:
        """The lease's checkpoint, loaded; None to start afresh (a damaged one is discarded)."""
        path = segment.checkpoints.resume_path()
        if path is None:
            return None
        try:
            state = load_checkpoint(path)
        except CheckpointError as error:
            segment.checkpoints.discard(str(error))
            return None
        finally:
            path.unlink(missing_ok=True)  # loaded into memory: the scratch space is not needed
        segment.log(
            f"trial {segment.lease.id}: resuming from its checkpoint at epoch {state['epoch']}"
            + (f", step {state['step']}" if state.get("step") else "")
        )
        return state

    def _train(
        self,
        segment: Segment,
        data: ImageDataset,
        config: TrainingConfig,
        resume: dict[str, Any] | None,
    ) -> TrainedTrial:
        lease = segment.lease
        sink = TrialCheckpoints(
            segment.scratch / "checkpoints",
            lease.id,
            cadence=CheckpointCadence(self.checkpoint_every_s),
            uploader=segment.checkpoints,
            log=segment.log,
        )
        return run_trial(
            lease.arch,
            data,
            config=config,
            seed=lease.seed,
            device=self.device,
            control=segment.control,
            listener=segment.events,
            log=segment.log,
            resume=resume,
            checkpoints=sink,
            to_epoch=lease.to_epoch,
        )

    def _outcome(self, segment: Segment, trained: TrainedTrial) -> TrialOutcome:
        return TrialOutcome(
            value=trained.top1,
            metric=segment.metric,
            curve=trained.curve,
            stopped=trained.stopped,
            best_epoch=trained.best_epoch,
            params=trained.params,
            macs=trained.macs,
            top5=trained.top5,
            latency_ms=trained.latency_ms,
            latency_device=trained.latency_device,
            images_per_s=trained.images_per_s,
            latency_onnx_ms=trained.latency_onnx_ms,
            latency_onnx_device=trained.latency_onnx_device,
            resumed_from_epoch=trained.resumed_from_epoch,
            epochs_trained=trained.epochs_trained,
            train_images=trained.train_images,
            weights_path=_write_weights(segment, trained),
        )


def _write_weights(segment: Segment, trained: TrainedTrial) -> Path | None:
    """The best epoch's EMA weights in the weights format, in the segment's scratch directory;
    None when they cannot be written (the result still counts)."""
    lease: TrialLease = segment.lease
    if trained.weights is None or trained.arch is None:
        return None
    path = segment.scratch / "weights.pt"
    try:
        save_weights(
            path,
            arch=trained.arch,
            state_dict=trained.weights,
            preprocessing=preprocessing(
                str(lease.dataset.get("name", "")), int(trained.arch.get("resolution", 0))
            ),
            top1=trained.top1,
            trial_id=lease.id,
            search_id=lease.search_id,
        )
    except OSError as error:
        path.unlink(missing_ok=True)
        segment.log(f"trial {lease.id}: weights not written ({error})")
        return None
    return path
