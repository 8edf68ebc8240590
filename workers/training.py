"""Train one architecture on one dataset the MobileViT way: the epoch loop.

The recipe (`workers.recipe`) is AdamW with a warm-up + cosine LR, label-smoothed
cross-entropy (on Mixup/CutMix soft targets when those are on) and an EMA of the weights that is
the model evaluated and reported; random resized crop + horizontal flip and, where the recipe
says, RandAugment, RandomErasing, Mixup and CutMix (all on the device, `workers.augment`),
transformer dropout (v1), gradient-norm clipping, bf16 autocast and channels_last on CUDA,
optionally `torch.compile`, and the multi-scale variable batch sampler (v1's default).
Everything random is seeded from the trial's seed: bit-exact on the CPU, not on a GPU (cuDNN
autotuning and atomic adds; `TrainingRecipe`'s docstring).

`train()` sets up a `TrainingRun` (loaders, augmentation, EMA, AdamW), restores a checkpoint
into it when given one, and runs its epochs against a `Control` (stop / lease lost /
interrupted flags set by other threads), telling a `TrainingListener` (the segment's events)
how it goes. `workers.runner` builds a trial's network, trains it here (restarting with
micro-batches after a CUDA OOM) and measures it.

Checkpoints and resume (`workers.checkpoint` has the format and the cadence): the run hands a
`CheckpointSink` its whole state at an epoch end the sink says is due, and at the step boundary
where an interrupt (SIGTERM/SIGINT) stops it; a run restored from a checkpoint has all of it
back — model, EMA, AdamW, RNG states (the epoch's plan is rebuilt from the plan generator's
state at the epoch's start and the steps already done are skipped), the curve, the best epoch,
the partial epoch's loss — and goes on where the run stopped. On the CPU a resumed run gives
the uninterrupted run's curve and top-1 exactly.

Imports torch, models and workers.*.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from vitcube.workers.augment import TrainAugment
from vitcube.workers.batches import (
    Batch,
    BatchLoader,
    fixed_plan,
    host_loader_workers,
    multiscale_resolutions,
    variable_plan,
)
from vitcube.workers.checkpoint import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    check_resumable,
    cpu_optimizer_state,
    cpu_state,
    python_rng_state,
    recipe_digest,
    set_python_rng_state,
)
from vitcube.workers.datasets import FolderSplit, ImageDataset
from vitcube.workers.evaluate import evaluate
from vitcube.workers.executors import Control, SegmentEvents, TrainingAborted
from vitcube.workers.recipe import (
    ModelEma,
    TrainingConfig,
    adamw_implementation,
    augment_options,
    expected_steps,
    parameter_groups,
    resolved_for,
)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message says what to change."""


@dataclass
class EpochReport:
    epoch: int
    train_loss: float
    val_top1: float
    val_top5: float
    lr: float
    images_per_s: float

    def metrics(self) -> dict[str, float]:
        """What the segment's events and the heartbeat receive for this epoch."""
        return {
            "val_top1": self.val_top1,
            "val_top5": self.val_top5,
            "train_loss": self.train_loss,
            "lr": self.lr,
            "images_per_s": self.images_per_s,
        }


@dataclass
class TrainResult:
    """What training produced: best-epoch EMA accuracy (fractions), the curve, throughput."""

    top1: float
    top5: float
    best_epoch: int
    curve: list[dict[str, float]]
    images_per_s: float
    stopped: bool
    model: nn.Module = field(repr=False)  # the EMA model, eval mode, on the device
    micro_batches: int = 1  # pieces each batch was split into (more after a CUDA OOM)
    # The EMA weights of the best epoch (the reported top-1's), on the CPU.
    best_state: dict[str, torch.Tensor] | None = field(default=None, repr=False)
    resumed_from_epoch: int | None = None  # the checkpoint's epoch this run resumed from
    epochs_trained: float = 0.0  # epochs this run trained (a partial epoch: its share of steps)
    epoch_images: int = 0  # training images in one full epoch (steps per epoch x batch)


class CheckpointSink(Protocol):
    """Where a run hands checkpoints (`workers.checkpoint.TrialCheckpoints`).

    `due()` is asked at every epoch end but the last; `save(state_fn)` is called when it said
    yes, and at the step boundary where an interrupt stops training. `state_fn()` builds the
    checkpoint dict (tensors on the CPU); the sink decides where it goes.
    """

    def due(self) -> bool: ...

    def save(self, state_fn: Callable[[], dict[str, Any]]) -> object: ...


class TrainingListener:
    """The segment's events (`executors.SegmentEvents`) with do-nothing defaults, to override."""

    def on_start(self, *, epochs: int, steps_per_epoch: int, train_images: int) -> None:
        """Training is about to start."""

    def on_step(
        self, *, epoch: int, step: int, loss: float, images_per_s: float, lr: float
    ) -> None:
        """Called every few steps with the running mean loss of the epoch."""

    def on_epoch(self, epoch: int, metrics: Mapping[str, float]) -> None:
        """An epoch finished and was evaluated (`EpochReport.metrics`)."""


@dataclass
class _EpochSoFar:
    """The epoch in progress: what its steps added up to (restored from a mid-epoch checkpoint)."""

    loss_sum: torch.Tensor
    loss_count: int = 0
    images: int = 0
    seconds_before: float = 0.0  # spent on this epoch by an earlier run
    started: float = field(default_factory=time.perf_counter)
    lr: float = 0.0


class TrainingRun:
    """One model's training: set up once, optionally restored, then `run` epoch by epoch.

    Everything a checkpoint holds is an attribute here; `checkpoint_state()` writes it out and
    `restore()` reads it back.
    """

    def __init__(
        self,
        model: nn.Module,
        data: ImageDataset,
        *,
        resolution: int,
        config: TrainingConfig,
        seed: int,
        device: torch.device,
        control: Control,
        listener: SegmentEvents,
        micro_batches: int,
        checkpoints: CheckpointSink | None,
    ) -> None:
        self.data = data
        self.resolution = resolution
        self.config = config = resolved_for(config, model, data.name)
        self.device = device
        self.control = control
        self.listener = listener
        self.micro_batches = micro_batches
        self.checkpoints = checkpoints
        self.digest = recipe_digest(config.model_dump(mode="json"), seed)
        arch = getattr(model, "arch", None)
        self.arch_dict = arch.to_dict() if arch is not None and hasattr(arch, "to_dict") else None
        self.cuda = cuda = device.type == "cuda"
        if cuda:
            torch.backends.cudnn.benchmark = True  # a handful of input shapes, each tuned once
        self.amp = config.amp == "bf16" or (config.amp == "auto" and cuda)
        self.channels_last = config.channels_last if config.channels_last is not None else cuda
        self.resolutions = (
            multiscale_resolutions(
                resolution,
                min_scale=config.multiscale_min,
                max_scale=config.multiscale_max,
                n_scales=config.multiscale_n,
            )
            if config.multiscale
            else [resolution]
        )
        self.train_loader, self.val_loader = self._loaders()
        self.plan_generator = torch.Generator().manual_seed(seed)
        classes = int(getattr(getattr(model, "arch", None), "num_classes", data.num_classes))
        self.augment = TrainAugment(augment_options(config), num_classes=classes, seed=seed + 1)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.model = model
        self.ema = ModelEma(model, config.ema_decay)
        self.optimizer = torch.optim.AdamW(
            parameter_groups(
                model,
                config.weight_decay or 0.0,
                decay_norms_and_biases=bool(config.decay_norms_and_biases),
            ),
            lr=config.lr_at(0.0),
            betas=(0.9, 0.999),
            **adamw_implementation(device),
        )
        self.step_model: Callable[[torch.Tensor], torch.Tensor] = (
            torch.compile(model) if config.compile else model
        )
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.n_train = len(self.train_loader)
        # Evaluation batches shrink with the split too (their size changes no result).
        self.eval_batch = max(1, (config.eval_batch_size or 2 * config.batch_size) // micro_batches)
        self.steps_per_epoch = expected_steps(config, self.n_train)
        # The run so far (a checkpoint's, once restored).
        self.curve: list[dict[str, float]] = []
        self.best: EpochReport | None = None
        self.best_state: dict[str, torch.Tensor] | None = None
        self.train_seconds = 0.0
        self.train_images = 0
        self.resumed_at: int | None = None
        self.partial: Mapping[str, Any] = {}
        # Where a checkpoint taken now resumes: completed epochs, steps into the next, and the
        # plan generator's state before that epoch's plan was drawn.
        self.done_epochs, self.done_steps = 0, 0
        self.plan_start_state = self.plan_generator.get_state()
        self.epoch_so_far = _EpochSoFar(torch.zeros((), device=device))
        self.stopped = False
        self.epochs_trained = 0.0
        self.steps_this_run = 0

    def _loaders(self) -> tuple[BatchLoader, BatchLoader]:
        """The training and validation loaders: image folders load each batch at the size its
        crop needs, from the host's decode cache; an interrupt (SIGTERM: preemption) ends a long
        first decode too. Training crops may reach any part of an image (whole images, with
        their aspect ratios); evaluation takes the centre crop, as the references do."""
        config, data, device = self.config, self.data, self.device
        requested = config.num_workers if "num_workers" in config.model_fields_set else None
        workers = (
            host_loader_workers(device, requested=requested)
            if isinstance(data.train, FolderSplit)
            else 0
        )
        train_loader = BatchLoader(
            data.train,
            device,
            resolutions=self.resolutions,
            fit="whole",
            num_workers=workers,
            check=self.control.check,
        )
        val_loader = BatchLoader(
            data.val,
            device,
            resolutions=[self.resolution],
            crop_fraction=data.val_crop_fraction,
            num_workers=workers,
            resident=True,
            check=self.control.check,
        )
        if len(train_loader) < 2:
            raise ValueError(
                f"dataset {data.name!r} has {len(train_loader)} training images; need >= 2"
            )
        return train_loader, val_loader

    def close(self) -> None:
        self.train_loader.close()
        self.val_loader.close()

    # -- checkpoints -----------------------------------------------------------------------------

    def check_resumable(self, resume: Mapping[str, Any]) -> None:
        """CheckpointError for a checkpoint of another architecture or recipe (before training)."""
        check_resumable(resume, arch=self.arch_dict, digest=self.digest, epochs=self.config.epochs)

    def restore(self, resume: Mapping[str, Any]) -> None:
        """Continue from a loaded checkpoint (`workers.checkpoint.load_checkpoint`)."""
        self._restore_weights(resume)
        self.resumed_at = int(resume["epoch"])
        self.done_epochs, self.done_steps = self.resumed_at, int(resume["step"])
        self.curve = [dict(point) for point in resume.get("curve") or []]
        self._restore_best(resume)
        self.train_seconds = float(resume.get("train_seconds", 0.0))
        self.train_images = int(resume.get("train_images", 0))
        self.partial = resume.get("partial_epoch") or {}
        rng = resume["rng"]
        self.plan_generator.set_state(rng["plan_epoch_start"])
        self.plan_start_state = self.plan_generator.get_state()
        self.augment.generator.set_state(rng["augment"])
        if rng.get("augment_python") is not None:
            set_python_rng_state(self.augment.rng, rng["augment_python"])
        torch.set_rng_state(rng["torch"])
        if self.cuda and rng.get("cuda") is not None:
            torch.cuda.set_rng_state(rng["cuda"], self.device)

    def _restore_weights(self, resume: Mapping[str, Any]) -> None:
        """Load a checkpoint's model, EMA and AdamW state in place; CheckpointError if they do
        not fit this network (the EMA keeps its tensors, so its update pairs stay valid)."""
        ema = self.ema
        try:
            self.model.load_state_dict(resume["model"])
            ema.module.load_state_dict(resume["ema"])
            ema.updates = int(resume.get("ema_updates", 0))
            self.optimizer.load_state_dict(resume["optimizer"])
            best = resume.get("best")
            if isinstance(best, dict) and best.get("ema") is not None:
                ema.module.load_state_dict(best["ema"])  # shapes checked now, not at the end
                ema.module.load_state_dict(resume["ema"])
        except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as error:
            first = (str(error).splitlines() or [type(error).__name__])[0][:300]
            raise CheckpointError(
                f"the checkpoint's weights do not fit the trial's network: {first}"
            ) from None
        # The saved groups carry the saving device's kernel choice (fused on CUDA): use ours.
        implementation = adamw_implementation(self.device)
        for group in self.optimizer.param_groups:
            group["fused"] = implementation.get("fused")
            group["foreach"] = implementation.get("foreach")

    def _restore_best(self, resume: Mapping[str, Any]) -> None:
        best = resume.get("best")
        if not isinstance(best, dict):
            return
        self.best = EpochReport(
            epoch=int(best["epoch"]),
            train_loss=float(best["train_loss"]),
            val_top1=float(best["val_top1"]),
            val_top5=float(best["val_top5"]),
            lr=float(best["lr"]),
            images_per_s=float(best["images_per_s"]),
        )
        weights = best.get("ema")
        self.best_state = (
            dict(weights) if weights is not None else cpu_state(self.ema.module.state_dict())
        )

    def checkpoint_state(self) -> dict[str, Any]:
        """The checkpoint of this moment (`workers.checkpoint` names the keys)."""
        mid_epoch = self.done_steps > 0
        so_far = self.epoch_so_far
        best_dict: dict[str, Any] | None = None
        best = self.best
        if best is not None:
            best_dict = {
                "epoch": best.epoch,
                "train_loss": best.train_loss,
                "val_top1": best.val_top1,
                "val_top5": best.val_top5,
                "lr": best.lr,
                "images_per_s": best.images_per_s,
            }
            # The best epoch's EMA weights, unless they are the EMA itself (this epoch's end).
            if self.best_state is not None and (mid_epoch or best.epoch != self.done_epochs):
                best_dict["ema"] = self.best_state
        seconds = so_far.seconds_before + time.perf_counter() - so_far.started if mid_epoch else 0.0
        return {
            "format": CHECKPOINT_FORMAT,
            "arch": self.arch_dict,
            "epoch": self.done_epochs,
            "step": self.done_steps,
            "model": cpu_state(self.model.state_dict()),
            "ema": cpu_state(self.ema.module.state_dict()),
            "ema_updates": self.ema.updates,
            "optimizer": cpu_optimizer_state(self.optimizer.state_dict()),
            "scaler": None,  # bf16 autocast needs no GradScaler
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state(self.device) if self.cuda else None,
                "plan": self.plan_generator.get_state(),
                "plan_epoch_start": self.plan_start_state,
                "augment": self.augment.generator.get_state(),
                "augment_python": python_rng_state(self.augment.rng),  # Mixup/CutMix draws
            },
            "curve": [dict(point) for point in self.curve],
            "best": best_dict,
            "train_seconds": self.train_seconds + seconds,
            "train_images": self.train_images + (so_far.images if mid_epoch else 0),
            "partial_epoch": {
                "loss_sum": so_far.loss_sum.detach().to("cpu", copy=True) if mid_epoch else 0.0,
                "loss_count": so_far.loss_count if mid_epoch else 0,
                "epoch_images": so_far.images if mid_epoch else 0,
                "epoch_seconds": seconds,
                "lr": so_far.lr if mid_epoch else 0.0,
            },
            "micro_batches": self.micro_batches,
            "recipe_digest": self.digest,
        }

    # -- the epochs ------------------------------------------------------------------------------

    def run(self, end_epoch: int) -> TrainResult:
        """Train epochs done_epochs + 1 … end_epoch, checkpointing as the sink says; a
        `control.stop` ends early with the epochs done so far."""
        config, checkpoints = self.config, self.checkpoints
        self.listener.on_start(
            epochs=config.epochs, steps_per_epoch=self.steps_per_epoch, train_images=self.n_train
        )
        start_epoch, start_step = self.done_epochs, self.done_steps
        try:
            for epoch in range(start_epoch, end_epoch):
                self._train_epoch(epoch, first_step=start_step if epoch == start_epoch else 0)
                if self.epoch_so_far.loss_count == 0:
                    break  # stopped before a single step of this epoch: report the earlier ones
                self.control.check()
                self._end_epoch(epoch)
                if self.stopped or self.control.stop.is_set():
                    self.stopped = True
                    break
                segment_end = epoch + 1 == end_epoch  # and more epochs follow, in a later lease
                if (
                    checkpoints is not None
                    and epoch + 1 < config.epochs
                    and (segment_end or checkpoints.due())
                ):
                    checkpoints.save(self.checkpoint_state)
        except TrainingAborted as aborted:
            # Preempted: keep what this run trained, at the step boundary it stopped at.
            if aborted.reason == "interrupted" and checkpoints is not None and self.steps_this_run:
                checkpoints.save(self.checkpoint_state)
            raise
        return self._result()

    def _plan_epoch(self) -> list[Batch]:
        config = self.config
        if config.multiscale:
            plan = variable_plan(
                self.n_train,
                config.batch_size,
                self.resolution,
                self.resolutions,
                generator=self.plan_generator,
            )
        else:
            plan = fixed_plan(
                self.n_train,
                config.batch_size,
                self.resolution,
                generator=self.plan_generator,
                drop_last=True,
            )
        return plan[: config.max_steps_per_epoch] if config.max_steps_per_epoch else plan

    def _train_epoch(self, epoch: int, *, first_step: int) -> None:
        """The steps of epoch `epoch` (0-based) from `first_step` on (an interrupted epoch: its
        plan again, less the steps already done)."""
        config, control = self.config, self.control
        self.model.train()
        self.plan_start_state = self.plan_generator.get_state()
        plan = self._plan_epoch()
        plan_images = max(1, sum(len(batch.indices) for batch in plan))
        so_far = _EpochSoFar(torch.zeros((), device=self.device))
        if first_step:
            partial = self.partial
            so_far.loss_sum = torch.as_tensor(partial.get("loss_sum", 0.0)).to(self.device)
            so_far.loss_sum = so_far.loss_sum.reshape(())
            so_far.loss_count = int(partial.get("loss_count", 0))
            so_far.images = int(partial.get("epoch_images", 0))
            so_far.seconds_before = float(partial.get("epoch_seconds", 0.0))
            self.train_seconds -= so_far.seconds_before  # counted again at this epoch's end
            self.train_images -= so_far.images
        self.epoch_so_far = so_far
        self.done_epochs, self.done_steps = epoch, first_step
        so_far.started = time.perf_counter()
        so_far.lr = config.lr_at(epoch + so_far.images / plan_images)
        if first_step:
            so_far.lr = float(self.partial.get("lr", so_far.lr))  # the epoch's last step's
        rest = plan[first_step:]
        for step, ((images, labels), batch) in enumerate(
            zip(self.train_loader.iterate(rest), rest, strict=True), start=first_step
        ):
            control.check()
            if control.stop.is_set():
                self.stopped = True
                break
            so_far.lr = config.lr_at(epoch + so_far.images / plan_images)
            loss = self._step(images, labels, batch, so_far.lr)
            so_far.loss_sum += loss.detach()
            so_far.loss_count += 1
            so_far.images += labels.shape[0]
            self.done_steps = step + 1
            self.steps_this_run += 1
            self.epochs_trained += 1.0 / len(plan)
            if step % 10 == 0 or step == len(plan) - 1:
                self._report_step(epoch, step)
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def _step(
        self, images: torch.Tensor, labels: torch.Tensor, batch: Batch, lr: float
    ) -> torch.Tensor:
        """One optimizer step on a batch; returns its mean loss (a device tensor)."""
        config = self.config
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        # Crop + flip, RandAugment, RandomErasing, Mixup/CutMix as the recipe says; targets are
        # the labels, or soft targets once Mixup/CutMix mixed them.
        inputs, targets = self.augment(
            images, labels, batch.resolution, aspect=self.train_loader.aspects(batch)
        )
        if self.channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        self.optimizer.zero_grad(set_to_none=True)
        loss = accumulate_gradients(
            self.step_model,
            inputs,
            targets,
            lambda logits, targets: F.cross_entropy(
                logits.float(), targets, label_smoothing=config.label_smoothing
            ),
            micro_batches=self.micro_batches,
            amp=self.amp,
        )
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, config.grad_clip)
        self.optimizer.step()
        self.ema.update()
        return loss

    def _report_step(self, epoch: int, step: int) -> None:
        """Every few steps (reading the loss synchronises the device): refuse a diverged loss,
        tell the listener."""
        so_far = self.epoch_so_far
        mean_loss = float(so_far.loss_sum) / so_far.loss_count
        if not math.isfinite(mean_loss):
            raise TrainingDiverged(
                f"training loss became {mean_loss} in epoch {epoch + 1}: lower "
                f"training.lr (now {self.config.lr}) or keep training.grad_clip > 0"
            )
        elapsed = time.perf_counter() - so_far.started
        self.listener.on_step(
            epoch=epoch + 1,
            step=step + 1,
            loss=mean_loss,
            images_per_s=so_far.images / max(elapsed, 1e-9),
            lr=so_far.lr,
        )

    def _evaluate_ema(self) -> tuple[float, float]:
        """Top-1 and top-5 of the EMA weights (the model that is reported) on the val split."""
        return evaluate(
            self.ema.module,
            self.val_loader,
            resolution=self.resolution,
            batch_size=self.eval_batch,
            crop_fraction=self.data.val_crop_fraction,
            amp=self.amp,
            channels_last=self.channels_last,
        )

    def _end_epoch(self, epoch: int) -> None:
        """Evaluate the epoch just trained, add it to the curve, keep the best, tell the listener"""
        so_far = self.epoch_so_far
        top1, top5 = self._evaluate_ema()
        epoch_seconds = so_far.seconds_before + time.perf_counter() - so_far.started
        self.train_seconds += epoch_seconds
        self.train_images += so_far.images
        report = EpochReport(
            epoch=epoch + 1,
            train_loss=float(so_far.loss_sum) / so_far.loss_count,
            val_top1=top1,
            val_top5=top5,
            lr=so_far.lr,
            images_per_s=so_far.images / max(epoch_seconds, 1e-9),
        )
        self.curve.append(
            {
                "epoch": report.epoch,
                "val_top1": report.val_top1,
                "val_top5": report.val_top5,
                "train_loss": report.train_loss,
                "lr": report.lr,
                "epoch_time_s": epoch_seconds,
            }
        )
        if self.best is None or report.val_top1 > self.best.val_top1:
            self.best = report
            self.best_state = cpu_state(self.ema.module.state_dict())
        self.done_epochs, self.done_steps = epoch + 1, 0
        self.plan_start_state = self.plan_generator.get_state()
        self.listener.on_epoch(report.epoch, report.metrics())

    def _result(self) -> TrainResult:
        best = self.best
        if best is None:
            # Stopped before the first epoch ended: evaluate the EMA once so there is a result.
            top1, top5 = self._evaluate_ema()
            best = EpochReport(0, float("nan"), top1, top5, 0.0, 0.0)
        best_state = self.best_state
        if best_state is None:
            best_state = cpu_state(self.ema.module.state_dict())
        return TrainResult(
            top1=best.val_top1,
            top5=best.val_top5,
            best_epoch=best.epoch,
            curve=self.curve,
            images_per_s=self.train_images / self.train_seconds if self.train_seconds > 0 else 0.0,
            stopped=self.stopped,
            model=self.ema.module,
            best_state=best_state,
            resumed_from_epoch=self.resumed_at,
            epochs_trained=round(self.epochs_trained, 6),
            epoch_images=self.steps_per_epoch * self.config.batch_size,
        )


def train(
    model: nn.Module,
    data: ImageDataset,
    *,
    resolution: int,
    config: TrainingConfig,
    seed: int,
    device: torch.device,
    control: Control | None = None,
    listener: SegmentEvents | None = None,
    micro_batches: int = 1,
    resume: Mapping[str, Any] | None = None,
    checkpoints: CheckpointSink | None = None,
    to_epoch: int | None = None,
) -> TrainResult:
    """Train `model` (already on `device`) on `data` at `resolution` px; return the EMA result.

    `resume`: a loaded checkpoint (`workers.checkpoint.load_checkpoint`) to go on from; one of
    another architecture or recipe, or whose tensors do not fit the model, raises
    CheckpointError before any training. `checkpoints`: where checkpoints go (module docstring).
    `to_epoch`: train only up to the end of that epoch (a lease's segment; None: all of
    `config.epochs`). The LR schedule still spans `config.epochs`, and a segment that ends
    before them always saves a checkpoint at its end, whatever the cadence says, so that the
    next segment, resumed from it, continues the same run: segments 0→k and k→n give the
    uninterrupted run's curve exactly on the CPU.

    `micro_batches` > 1 splits every batch into that many pieces whose gradients accumulate
    before the one optimizer step (`accumulate_gradients`): the effective batch, the LR and
    the steps stay the recipe's, only less activation memory is needed at once (BatchNorm then
    normalises over each piece). Raises TrainingAborted when `control` says so (interrupt,
    lease lost), TrainingDiverged on a NaN loss; a `control.stop` ends training early with the
    epochs done so far.
    """
    run = TrainingRun(
        model,
        data,
        resolution=resolution,
        config=config,
        seed=seed,
        device=device,
        control=control or Control(),
        listener=listener or TrainingListener(),
        micro_batches=micro_batches,
        checkpoints=checkpoints,
    )
    try:
        epochs = run.config.epochs
        if resume is not None:
            run.check_resumable(resume)
        end_epoch = epochs if to_epoch is None else to_epoch
        resumed_at = int(resume["epoch"]) if resume is not None else 0
        if not resumed_at < end_epoch <= epochs:
            raise ValueError(
                f"to_epoch must be after the checkpoint's epoch {resumed_at} and at most "
                f"training.epochs = {epochs}, got {to_epoch}"
            )
        if resume is not None:
            run.restore(resume)
        return run.run(end_epoch)
    finally:
        run.close()


def accumulate_gradients(
    model: Callable[[torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
    targets: torch.Tensor,
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    micro_batches: int = 1,
    amp: bool = False,
) -> torch.Tensor:
    """Forward and backward one batch in `micro_batches` pieces; returns its mean loss.

    inputs: a `B x 3 x H x W` batch; targets: `B` labels (or `B x C` soft targets). Each piece's
    mean loss is scaled by its share of the batch (b_k / B) before its backward, so the summed
    gradients are the full batch's mean-loss gradient and the returned loss its mean loss,
    whatever the split (up to float rounding). The caller zeroes the gradients and steps.
    """
    total = targets.shape[0]
    loss_sum = torch.zeros((), device=inputs.device)
    for piece_inputs, piece_targets in zip(
        inputs.chunk(micro_batches), targets.chunk(micro_batches), strict=True
    ):
        with torch.autocast(inputs.device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(piece_inputs)
        share = piece_targets.shape[0] / total
        loss = criterion(logits, piece_targets) * share
        loss.backward()
        loss_sum += loss.detach()
    return loss_sum
