"""Train one architecture on one dataset the MobileViT way and measure it.

The recipe follows the MobileViT reference training (Apple's ml-cvnets configs for MobileViT
v1/v2; the per-family values are `vitcube.contract.FAMILY_RECIPES`): AdamW (v1: decay 0.01 on
every parameter; v2: 0.05, never on norms or biases) with the peak LR scaled from batch 1024 by
the square-root rule, linear warm-up then cosine decay, cross-entropy with label smoothing 0.1
(on Mixup/CutMix soft targets when those are on), an exponential moving average (EMA) of the
weights that is the model evaluated and reported, random resized crop + horizontal flip and,
where the recipe says, RandAugment, RandomErasing, Mixup and CutMix (all on the device,
`workers.augment`), transformer dropout (v1), gradient-norm clipping, bf16 autocast and
channels_last on CUDA, optionally `torch.compile`, and the multi-scale variable batch sampler
(v1's default). Everything random is seeded from the trial's seed: bit-exact on the CPU, not
on a GPU (cuDNN autotuning and atomic adds; `TrainingRecipe`'s docstring).

`TrainingConfig.from_dict(trial["training"])` validates the recipe with the contract's
`TrainingRecipe` (the server refused anything else at POST) and adds the LR schedule;
`train()` runs the loop against a `Control` (stop / lease lost / interrupted flags set by other
threads) and returns a `TrainResult`; `run_trial()` builds the network with models/ and adds
params, MACs, batch-1 latency and the ONNX Runtime CPU latency.

Checkpoints and resume (`workers.checkpoint` has the format and the cadence): `train` hands a
`CheckpointSink` the whole state at an epoch end the sink says is due, and at the step
boundary where an interrupt (SIGTERM/SIGINT) stops it; `train(resume=state)` restores all of
it — model, EMA, AdamW, RNG states (the epoch's plan is rebuilt from the plan generator's state
at the epoch's start and the steps already done are skipped), the curve, the best epoch, the
partial epoch's loss — and goes on where the run stopped. On the CPU a resumed run gives the
uninterrupted run's curve and top-1 exactly.

Imports torch, models and workers.*.
"""

from __future__ import annotations

import copy
import gc
import math
import platform
import random
import statistics
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from vitcube.contract import GENERIC_FAMILY, TrainingRecipe
from vitcube.workers.augment import AugmentOptions, TrainAugment, center_resize
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
    recipe_digest,
)
from vitcube.workers.datasets import FolderSplit, ImageDataset


class TrainingConfig(TrainingRecipe):
    """A validated `training` block (vitcube.contract.TrainingRecipe: the keys, their ranges and
    defaults, shared with the server) plus the schedule arithmetic the training loop needs.

    `TrainingConfig.from_dict(lease.training)` raises InvalidRecipeError (a ValueError) naming
    every bad key and its allowed range, exactly where the server's POST would have said 422.
    `train` and `run_trial` resolve it for the network's family and the dataset
    (`TrainingRecipe.resolved`) before they read it; a lease's recipe arrives resolved.
    """

    def learning_rates(self) -> tuple[float, float, float]:
        """(peak, floor, warm-up start) of a resolved recipe."""
        if self.lr is None or self.min_lr is None or self.warmup_init_lr is None:
            raise ValueError("resolve the recipe first: config.resolved(family=..., dataset=...)")
        return self.lr, self.min_lr, self.warmup_init_lr

    @property
    def warmup(self) -> float:
        """Warm-up length in epochs (may be fractional)."""
        return self.warmup_epochs if self.warmup_epochs is not None else 0.05 * self.epochs

    def lr_at(self, epoch_progress: float) -> float:
        """Learning rate at a fractional epoch: linear warm-up, then cosine to min_lr."""
        peak, floor, start = self.learning_rates()
        warmup = self.warmup
        if epoch_progress < warmup:
            return start + (peak - start) * epoch_progress / warmup
        span = max(self.epochs - warmup, 1e-9)
        t = min(1.0, (epoch_progress - warmup) / span)
        return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * t))


class Control:
    """Flags other threads set while a trial trains; the training loop checks them every step."""

    def __init__(self) -> None:
        self.stop = threading.Event()  # the server said stop: finish early, report what we have
        self.lease_lost = threading.Event()  # 409: someone else owns the trial; abandon it
        self.interrupted = threading.Event()  # SIGINT/SIGTERM: give the trial back

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
    """Where `train` hands checkpoints (`workers.checkpoint.TrialCheckpoints`).

    `due()` is asked at every epoch end but the last; `save(state_fn)` is called when it said
    yes, and at the step boundary where an interrupt stops training. `state_fn()` builds the
    checkpoint dict (tensors on the CPU); the sink decides where it goes.
    """

    def due(self) -> bool: ...

    def save(self, state_fn: Callable[[], dict[str, Any]]) -> object: ...


class TrainingListener:
    """Hooks a caller may override (progress display, heartbeats). Default: do nothing."""

    def on_start(self, *, epochs: int, steps_per_epoch: int, train_images: int) -> None:
        """Training is about to start."""

    def on_step(
        self, *, epoch: int, step: int, loss: float, images_per_s: float, lr: float
    ) -> None:
        """Called every few steps with the running mean loss of the epoch."""

    def on_epoch(self, report: EpochReport) -> None:
        """An epoch finished and was evaluated."""


def resolve_device(name: str) -> torch.device:
    """`auto` picks cuda:0 when a GPU is visible, else the CPU."""
    if name == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: no CUDA GPU is visible; use --device cpu or auto")
    return device


def parameter_groups(
    model: nn.Module, weight_decay: float, *, decay_norms_and_biases: bool = False
) -> list[dict[str, Any]]:
    """AdamW groups: decay on weight matrices and conv kernels, none on norms and biases (v2's
    `no_decay_bn_filter_bias: true`); with `decay_norms_and_biases` (v1's recipe) every
    parameter decays and the second group is empty."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for parameter in model.parameters():
        if not parameter.requires_grad:
            continue
        # 1-D parameters are exactly the biases and the norm scales/shifts.
        exempt = parameter.ndim <= 1 and not decay_norms_and_biases
        (no_decay if exempt else decay).append(parameter)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def adamw_implementation(device: torch.device) -> dict[str, bool]:
    """AdamW's kernels: one fused kernel per step on CUDA, else the multi-tensor (foreach) path.

    At batch 64 a MobileViT step is launch-bound on a GPU: the per-parameter loop of the default
    implementation launches several kernels per tensor, the fused one a handful in all.
    """
    if device.type == "cuda":
        return {"fused": True}
    return {"foreach": True}


class ModelEma:
    """Exponential moving average of a model's parameters and floating-point buffers.

    Integer buffers (BatchNorm's `num_batches_tracked`) are counters, not weights: they are
    copied from the live model, all in one multi-tensor call, never averaged.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        for parameter in self.module.parameters():
            parameter.requires_grad_(False)
        ema_state = self.module.state_dict()
        live_state = model.state_dict()
        self._float_pairs = [
            (ema_state[k], live_state[k]) for k in ema_state if ema_state[k].is_floating_point()
        ]
        self._other_pairs = [
            (ema_state[k], live_state[k]) for k in ema_state if not ema_state[k].is_floating_point()
        ]
        self._ema_other = [pair[0] for pair in self._other_pairs]
        self._live_other = [pair[1] for pair in self._other_pairs]
        self.updates = 0

    @torch.no_grad()
    def update(self) -> None:
        self.updates += 1
        t = self.updates
        decay = min(self.decay, (1 + t) / (10 + t))
        ema = [pair[0] for pair in self._float_pairs]
        live = [pair[1] for pair in self._float_pairs]
        torch._foreach_lerp_(ema, live, 1.0 - decay)
        if self._ema_other:
            torch._foreach_copy_(self._ema_other, self._live_other)


def train(
    model: nn.Module,
    data: ImageDataset,
    *,
    resolution: int,
    config: TrainingConfig,
    seed: int,
    device: torch.device,
    control: Control | None = None,
    listener: TrainingListener | None = None,
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
    control = control or Control()
    listener = listener or TrainingListener()
    config = _resolved(config, model, data)
    digest = recipe_digest(config.model_dump(mode="json"), seed)
    arch = getattr(model, "arch", None)
    arch_dict = arch.to_dict() if arch is not None and hasattr(arch, "to_dict") else None
    if resume is not None:
        check_resumable(resume, arch=arch_dict, digest=digest, epochs=config.epochs)
    end_epoch = config.epochs if to_epoch is None else to_epoch
    resumed_at = int(resume["epoch"]) if resume is not None else 0
    if not resumed_at < end_epoch <= config.epochs:
        raise ValueError(
            f"to_epoch must be after the checkpoint's epoch {resumed_at} and at most "
            f"training.epochs = {config.epochs}, got {to_epoch}"
        )
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True  # a handful of input shapes, each tuned once
    amp = config.amp == "bf16" or (config.amp == "auto" and cuda)
    channels_last = config.channels_last if config.channels_last is not None else cuda
    resolutions = (
        multiscale_resolutions(
            resolution,
            min_scale=config.multiscale_min,
            max_scale=config.multiscale_max,
            n_scales=config.multiscale_n,
        )
        if config.multiscale
        else [resolution]
    )
    # Image folders load each batch at the size its crop needs, from the host's decode cache.
    requested = config.num_workers if "num_workers" in config.model_fields_set else None
    workers = (
        host_loader_workers(device, requested=requested)
        if isinstance(data.train, FolderSplit)
        else 0
    )
    # An interrupt (SIGTERM: preemption) ends a long first decode too, not only training.
    # Training crops may reach any part of an image (whole images, with their aspect ratios);
    # evaluation takes the centre crop, as the references do.
    train_loader = BatchLoader(
        data.train,
        device,
        resolutions=resolutions,
        fit="whole",
        num_workers=workers,
        check=control.check,
    )
    val_loader = BatchLoader(
        data.val,
        device,
        resolutions=[resolution],
        crop_fraction=data.val_crop_fraction,
        num_workers=workers,
        resident=True,
        check=control.check,
    )
    if len(train_loader) < 2:
        raise ValueError(
            f"dataset {data.name!r} has {len(train_loader)} training images; need >= 2"
        )

    plan_generator = torch.Generator().manual_seed(seed)
    augment = TrainAugment(
        _augment_options(config), num_classes=_output_classes(model, data), seed=seed + 1
    )
    if channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    ema = ModelEma(model, config.ema_decay)
    optimizer = torch.optim.AdamW(
        parameter_groups(
            model,
            config.weight_decay or 0.0,
            decay_norms_and_biases=bool(config.decay_norms_and_biases),
        ),
        lr=config.lr_at(0.0),
        betas=(0.9, 0.999),
        **adamw_implementation(device),
    )
    if resume is not None:
        _restore_weights(resume, model, ema, optimizer, device)
    step_model: Callable[[torch.Tensor], torch.Tensor] = (
        torch.compile(model) if config.compile else model
    )
    params = [p for p in model.parameters() if p.requires_grad]
    n_train = len(train_loader)
    # Evaluation batches shrink with the split too (their size changes no result).
    eval_batch = max(1, (config.eval_batch_size or 2 * config.batch_size) // micro_batches)

    def evaluate_ema() -> tuple[float, float]:
        """Top-1 and top-5 of the EMA weights (the model that is reported) on the val split."""
        return evaluate(
            ema.module,
            val_loader,
            resolution=resolution,
            batch_size=eval_batch,
            crop_fraction=data.val_crop_fraction,
            amp=amp,
            channels_last=channels_last,
        )

    def plan_epoch() -> list[Batch]:
        if config.multiscale:
            plan = variable_plan(
                n_train, config.batch_size, resolution, resolutions, generator=plan_generator
            )
        else:
            plan = fixed_plan(
                n_train, config.batch_size, resolution, generator=plan_generator, drop_last=True
            )
        return plan[: config.max_steps_per_epoch] if config.max_steps_per_epoch else plan

    steps_per_epoch = _expected_steps(config, n_train)
    listener.on_start(epochs=config.epochs, steps_per_epoch=steps_per_epoch, train_images=n_train)

    curve: list[dict[str, float]] = []
    best: EpochReport | None = None
    best_state: dict[str, torch.Tensor] | None = None
    train_seconds = 0.0
    train_images = 0
    start_epoch = 0
    start_step = 0
    partial: Mapping[str, Any] = {}
    if resume is not None:
        start_epoch, start_step = int(resume["epoch"]), int(resume["step"])
        curve = [dict(point) for point in resume.get("curve") or []]
        best, best_state = _restore_best(resume, ema)
        train_seconds = float(resume.get("train_seconds", 0.0))
        train_images = int(resume.get("train_images", 0))
        partial = resume.get("partial_epoch") or {}
        rng = resume["rng"]
        plan_generator.set_state(rng["plan_epoch_start"])
        augment.generator.set_state(rng["augment"])
        if rng.get("augment_python") is not None:
            _set_python_rng_state(augment.rng, rng["augment_python"])
        torch.set_rng_state(rng["torch"])
        if cuda and rng.get("cuda") is not None:
            torch.cuda.set_rng_state(rng["cuda"], device)
    stopped = False
    epochs_trained = 0.0
    steps_this_run = 0
    # Where a checkpoint taken now resumes: completed epochs, steps into the next, and the plan
    # generator's state before that epoch's plan was drawn.
    done_epochs, done_steps = start_epoch, start_step
    plan_start_state = plan_generator.get_state()
    loss_sum = torch.zeros((), device=device)
    loss_count = 0
    epoch_images = 0
    epoch_seconds_before = 0.0  # of an epoch begun by an earlier run

    def state() -> dict[str, Any]:
        """The checkpoint of this moment (`workers.checkpoint` names the keys)."""
        mid_epoch = done_steps > 0
        best_dict: dict[str, Any] | None = None
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
            if best_state is not None and (mid_epoch or best.epoch != done_epochs):
                best_dict["ema"] = best_state
        elapsed = time.perf_counter() - epoch_start if mid_epoch else 0.0
        return {
            "format": CHECKPOINT_FORMAT,
            "arch": arch_dict,
            "epoch": done_epochs,
            "step": done_steps,
            "model": _cpu_state(model.state_dict()),
            "ema": _cpu_state(ema.module.state_dict()),
            "ema_updates": ema.updates,
            "optimizer": _cpu_optimizer_state(optimizer.state_dict()),
            "scaler": None,  # bf16 autocast needs no GradScaler
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state(device) if cuda else None,
                "plan": plan_generator.get_state(),
                "plan_epoch_start": plan_start_state,
                "augment": augment.generator.get_state(),
                "augment_python": _python_rng_state(augment.rng),  # Mixup/CutMix draws
            },
            "curve": [dict(point) for point in curve],
            "best": best_dict,
            "train_seconds": train_seconds + (epoch_seconds_before + elapsed if mid_epoch else 0.0),
            "train_images": train_images + (epoch_images if mid_epoch else 0),
            "partial_epoch": {
                "loss_sum": loss_sum.detach().to("cpu", copy=True) if mid_epoch else 0.0,
                "loss_count": loss_count if mid_epoch else 0,
                "epoch_images": epoch_images if mid_epoch else 0,
                "epoch_seconds": epoch_seconds_before + elapsed if mid_epoch else 0.0,
                "lr": lr if mid_epoch else 0.0,
            },
            "micro_batches": micro_batches,
            "recipe_digest": digest,
        }

    epoch_start = time.perf_counter()
    try:
        for epoch in range(start_epoch, end_epoch):
            model.train()
            plan_start_state = plan_generator.get_state()
            plan = plan_epoch()
            plan_images = max(1, sum(len(batch.indices) for batch in plan))
            first_step = start_step if epoch == start_epoch else 0
            if first_step:
                # The interrupted epoch: its plan again, less the steps already done.
                loss_sum = torch.as_tensor(partial.get("loss_sum", 0.0)).to(device).reshape(())
                loss_count = int(partial.get("loss_count", 0))
                epoch_images = int(partial.get("epoch_images", 0))
                epoch_seconds_before = float(partial.get("epoch_seconds", 0.0))
                train_seconds -= epoch_seconds_before  # counted again at this epoch's end
                train_images -= epoch_images
            else:
                loss_sum = torch.zeros((), device=device)
                loss_count = 0
                epoch_images = 0
                epoch_seconds_before = 0.0
            done_epochs, done_steps = epoch, first_step
            epoch_start = time.perf_counter()
            lr = config.lr_at(epoch + epoch_images / plan_images)
            if first_step:
                lr = float(partial.get("lr", lr))  # the epoch's last step's, if all were done
            rest = plan[first_step:]
            for step, ((images, labels), batch) in enumerate(
                zip(train_loader.iterate(rest), rest, strict=True), start=first_step
            ):
                control.check()
                if control.stop.is_set():
                    stopped = True
                    break
                lr = config.lr_at(epoch + epoch_images / plan_images)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                # Crop + flip, RandAugment, RandomErasing, Mixup/CutMix as the recipe says;
                # targets are the labels, or soft targets once Mixup/CutMix mixed them.
                inputs, targets = augment(
                    images, labels, batch.resolution, aspect=train_loader.aspects(batch)
                )
                if channels_last:
                    inputs = inputs.contiguous(memory_format=torch.channels_last)
                optimizer.zero_grad(set_to_none=True)
                loss = accumulate_gradients(
                    step_model,
                    inputs,
                    targets,
                    lambda logits, targets: F.cross_entropy(
                        logits.float(), targets, label_smoothing=config.label_smoothing
                    ),
                    micro_batches=micro_batches,
                    amp=amp,
                )
                if config.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
                optimizer.step()
                ema.update()
                loss_sum += loss.detach()
                loss_count += 1
                epoch_images += labels.shape[0]
                done_steps = step + 1
                steps_this_run += 1
                epochs_trained += 1.0 / len(plan)
                if step % 10 == 0 or step == len(plan) - 1:
                    # Reading the loss synchronises the device: only every few steps.
                    mean_loss = float(loss_sum) / loss_count
                    if not math.isfinite(mean_loss):
                        raise TrainingDiverged(
                            f"training loss became {mean_loss} in epoch {epoch + 1}: lower "
                            f"training.lr (now {config.lr}) or keep training.grad_clip > 0"
                        )
                    elapsed = time.perf_counter() - epoch_start
                    listener.on_step(
                        epoch=epoch + 1,
                        step=step + 1,
                        loss=mean_loss,
                        images_per_s=epoch_images / max(elapsed, 1e-9),
                        lr=lr,
                    )
            if cuda:
                torch.cuda.synchronize(device)
            if loss_count == 0:
                break  # stopped before a single step of this epoch: report the earlier epochs
            control.check()
            top1, top5 = evaluate_ema()
            epoch_seconds = epoch_seconds_before + time.perf_counter() - epoch_start
            train_seconds += epoch_seconds
            train_images += epoch_images
            report = EpochReport(
                epoch=epoch + 1,
                train_loss=float(loss_sum) / loss_count,
                val_top1=top1,
                val_top5=top5,
                lr=lr,
                images_per_s=epoch_images / max(epoch_seconds, 1e-9),
            )
            curve.append(
                {
                    "epoch": report.epoch,
                    "val_top1": report.val_top1,
                    "val_top5": report.val_top5,
                    "train_loss": report.train_loss,
                    "lr": report.lr,
                    "epoch_time_s": epoch_seconds,
                }
            )
            if best is None or report.val_top1 > best.val_top1:
                best = report
                best_state = _cpu_state(ema.module.state_dict())
            done_epochs, done_steps = epoch + 1, 0
            plan_start_state = plan_generator.get_state()
            listener.on_epoch(report)
            if stopped or control.stop.is_set():
                stopped = True
                break
            segment_end = epoch + 1 == end_epoch  # and more epochs follow, in a later lease
            if (
                checkpoints is not None
                and epoch + 1 < config.epochs
                and (segment_end or checkpoints.due())
            ):
                checkpoints.save(state)
    except TrainingAborted as aborted:
        # Preempted: keep what this run trained, at the step boundary it stopped at.
        if aborted.reason == "interrupted" and checkpoints is not None and steps_this_run:
            checkpoints.save(state)
        train_loader.close()
        val_loader.close()
        raise

    if best is None:
        # Stopped before the first epoch ended: evaluate the EMA weights once so there is a result.
        top1, top5 = evaluate_ema()
        best = EpochReport(0, float("nan"), top1, top5, 0.0, 0.0)
    if best_state is None:
        best_state = _cpu_state(ema.module.state_dict())
    train_loader.close()
    val_loader.close()
    return TrainResult(
        top1=best.val_top1,
        top5=best.val_top5,
        best_epoch=best.epoch,
        curve=curve,
        images_per_s=train_images / train_seconds if train_seconds > 0 else 0.0,
        stopped=stopped,
        model=ema.module,
        best_state=best_state,
        resumed_from_epoch=start_epoch if resume is not None else None,
        epochs_trained=round(epochs_trained, 6),
        epoch_images=steps_per_epoch * config.batch_size,
    )


def _python_rng_state(rng: random.Random) -> list[Any]:
    """A `random.Random` state as lists and ints (what `torch.load(weights_only=True)` reads)."""
    version, internal, gauss_next = rng.getstate()
    return [version, list(internal), gauss_next]


def _set_python_rng_state(rng: random.Random, saved: Any) -> None:
    try:
        version, internal, gauss_next = saved
        rng.setstate((int(version), tuple(int(v) for v in internal), gauss_next))
    except (TypeError, ValueError) as error:
        raise CheckpointError(
            f"the checkpoint's augmentation RNG state is damaged: {error}"
        ) from None


def _cpu_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A CPU copy of a state dict (contiguous: a channels_last model loads anywhere)."""
    return {key: value.detach().to("cpu", copy=True).contiguous() for key, value in state.items()}


def _cpu_optimizer_state(state: dict[str, Any]) -> dict[str, Any]:
    """The optimizer's state dict with its tensors copied to the CPU."""

    def cpu(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return value.detach().to("cpu", copy=True)
        if isinstance(value, dict):
            return {key: cpu(item) for key, item in value.items()}
        return value

    return {"state": cpu(state["state"]), "param_groups": state["param_groups"]}


def _restore_weights(
    resume: Mapping[str, Any],
    model: nn.Module,
    ema: ModelEma,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
) -> None:
    """Load a checkpoint's model, EMA and AdamW state in place; CheckpointError if they do not
    fit this network (the EMA keeps its tensors, so its update pairs stay valid)."""
    try:
        model.load_state_dict(resume["model"])
        ema.module.load_state_dict(resume["ema"])
        ema.updates = int(resume.get("ema_updates", 0))
        optimizer.load_state_dict(resume["optimizer"])
        best = resume.get("best")
        if isinstance(best, dict) and best.get("ema") is not None:
            ema.module.load_state_dict(best["ema"])  # shapes checked now, not at the end
            ema.module.load_state_dict(resume["ema"])
    except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as error:
        first = (str(error).splitlines() or [type(error).__name__])[0][:300]
        raise CheckpointError(
            f"the checkpoint's weights do not fit the trial's network: {first}"
        ) from None
    # The saved groups carry the saving device's kernel choice (fused on CUDA): use this one's.
    implementation = adamw_implementation(device)
    for group in optimizer.param_groups:
        group["fused"] = implementation.get("fused")
        group["foreach"] = implementation.get("foreach")


def _restore_best(
    resume: Mapping[str, Any], ema: ModelEma
) -> tuple[EpochReport | None, dict[str, torch.Tensor] | None]:
    best = resume.get("best")
    if not isinstance(best, dict):
        return None, None
    report = EpochReport(
        epoch=int(best["epoch"]),
        train_loss=float(best["train_loss"]),
        val_top1=float(best["val_top1"]),
        val_top5=float(best["val_top5"]),
        lr=float(best["lr"]),
        images_per_s=float(best["images_per_s"]),
    )
    weights = best.get("ema")
    return report, dict(weights) if weights is not None else _cpu_state(ema.module.state_dict())


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
    listener: TrainingListener | None = None,
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


def _resolved(config: TrainingConfig, model: nn.Module, data: ImageDataset) -> TrainingConfig:
    """The recipe resolved for the network's family (`model.arch`, as `build_model` sets it;
    the generic family's recipe for any other module) and the dataset; a resolved recipe, as
    every lease carries, comes back unchanged."""
    arch = getattr(model, "arch", None)
    family = getattr(arch, "family", GENERIC_FAMILY)
    size = getattr(getattr(arch, "base", None), "size", None)
    return config.resolved(family=family, size=size, dataset=data.name)


def _output_classes(model: nn.Module, data: ImageDataset) -> int:
    """Logits per image: the network's class count (it may exceed the dataset's)."""
    return int(getattr(getattr(model, "arch", None), "num_classes", data.num_classes))


def _augment_options(config: TrainingConfig) -> AugmentOptions:
    """The augmentation keys of a resolved recipe."""
    defaults = AugmentOptions()
    return AugmentOptions(
        crop_scale=config.crop_scale or defaults.crop_scale,
        hflip=defaults.hflip if config.hflip is None else config.hflip,
        crop_interpolation=config.crop_interpolation or defaults.crop_interpolation,
        antialias=config.antialias,
        rand_augment=bool(config.rand_augment),
        rand_augment_ops=config.rand_augment_ops,
        rand_augment_magnitude=config.rand_augment_magnitude,
        random_erase_p=config.random_erase_p or 0.0,
        mixup_alpha=config.mixup_alpha or 0.0,
        cutmix_alpha=config.cutmix_alpha or 0.0,
    )


def _expected_steps(config: TrainingConfig, n_train: int) -> int:
    steps = max(1, n_train // config.batch_size)
    return min(steps, config.max_steps_per_epoch) if config.max_steps_per_epoch else steps


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    loader: BatchLoader,
    *,
    resolution: int,
    batch_size: int,
    crop_fraction: float = 1.0,
    amp: bool = False,
    channels_last: bool = False,
) -> tuple[float, float]:
    """Top-1 and top-5 accuracy (fractions) of `model` on a whole split."""
    model.eval()
    plan = fixed_plan(len(loader), batch_size, resolution, generator=None, drop_last=False)
    correct1 = torch.zeros((), dtype=torch.long, device=loader.device)
    correct5 = torch.zeros((), dtype=torch.long, device=loader.device)
    seen = 0
    for images, labels in loader.iterate(plan):
        inputs = center_resize(images, resolution, crop_fraction=crop_fraction)
        if channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        with torch.autocast(loader.device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(inputs)
        k = min(5, logits.shape[1])
        top = logits.float().topk(k, dim=1).indices  # [B, k]
        hits = top.eq(labels[:, None])
        correct1 += hits[:, 0].sum()
        correct5 += hits.any(dim=1).sum()
        seen += labels.shape[0]
    return float(correct1) / seen, float(correct5) / seen


@torch.inference_mode()
def measure_latency_ms(
    model: nn.Module,
    resolution: int,
    device: torch.device,
    *,
    amp: bool = False,
    channels_last: bool = False,
    warmup: int = 5,
    runs: int = 30,
    max_seconds: float = 10.0,
) -> float:
    """Median wall time (ms) of one batch-1 forward pass after `warmup` untimed passes."""
    model.eval()
    x = torch.rand(1, 3, resolution, resolution, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    cuda = device.type == "cuda"
    timings: list[float] = []
    deadline = time.perf_counter() + max_seconds
    for i in range(warmup + runs):
        if cuda:
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            model(x)
        if cuda:
            torch.cuda.synchronize(device)
        if i >= warmup:
            timings.append((time.perf_counter() - start) * 1000.0)
            if time.perf_counter() > deadline and len(timings) >= 3:
                break
    return statistics.median(timings)


@dataclass(frozen=True)
class Latency:
    """A batch-1 forward latency and what measured it, e.g. `NVIDIA H200, bf16, CUDA graph`."""

    ms: float
    device: str


def measure_latency(
    model: nn.Module,
    resolution: int,
    device: torch.device,
    *,
    amp: bool = False,
    channels_last: bool = False,
) -> Latency:
    """Batch-1 latency of `model` as deployed on `device`, and the device's name with it.

    On CUDA a bf16 copy (fp32 when the trial trained without AMP) is timed with CUDA events,
    replayed from a CUDA graph where capture works: a batch-1 pass of a small network is
    otherwise mostly the host launching kernels. On the CPU: wall-clock time of eager passes.
    """
    if device.type == "cuda":
        return _cuda_latency(
            model,
            resolution,
            device,
            dtype=torch.bfloat16 if amp else torch.float32,
            channels_last=channels_last,
        )
    ms = measure_latency_ms(model, resolution, device, amp=amp, channels_last=channels_last)
    precision = "bf16 autocast" if amp else "fp32"
    threads = torch.get_num_threads()
    return Latency(ms, f"CPU {platform.machine()} ({threads} threads), {precision}, wall clock")


@torch.no_grad()
def _cuda_latency(
    model: nn.Module,
    resolution: int,
    device: torch.device,
    *,
    dtype: torch.dtype,
    channels_last: bool,
    warmup: int = 10,
    runs: int = 50,
) -> Latency:
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    deployed = copy.deepcopy(model).to(device=device, dtype=dtype).eval()
    deployed = deployed.to(memory_format=memory_format)  # type: ignore[call-overload]
    x = torch.rand(1, 3, resolution, resolution, device=device, dtype=dtype)
    x = x.contiguous(memory_format=memory_format)
    # Warm up on a side stream, as graph capture requires (cuDNN picks its kernels here too).
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(warmup):
            deployed(x)
    torch.cuda.current_stream(device).wait_stream(side)
    torch.cuda.synchronize(device)

    def run_eager() -> object:
        return deployed(x)

    run: Callable[[], object] = run_eager
    method = "eager"
    try:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            deployed(x)
        graph.replay()
        torch.cuda.synchronize(device)
        run, method = graph.replay, "CUDA graph"
    except RuntimeError:  # an op that cannot be captured: time eager passes instead
        torch.cuda.synchronize(device)
    timings: list[float] = []
    for _ in range(runs):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        end.synchronize()
        timings.append(start.elapsed_time(end))
    precision = "bf16" if dtype == torch.bfloat16 else "fp32"
    name = torch.cuda.get_device_name(device)
    return Latency(statistics.median(timings), f"{name}, {precision}, {method}, CUDA events")


@dataclass
class TrialOutcome:
    """Everything a worker reports for a finished (or stopped) trial."""

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

    def report(self) -> dict[str, Any]:
        """The metrics part of the complete body (the README's REST API table)."""
        return {
            "latency_onnx_ms": self.latency_onnx_ms,
            "latency_onnx_device": self.latency_onnx_device,
            "resumed_from_epoch": self.resumed_from_epoch,
            "epochs_trained": self.epochs_trained,
            "train_images": self.train_images,
            "top1": self.top1,
            "top5": self.top5,
            "params": self.params,
            "macs": self.macs,
            "latency_ms": self.latency_ms,
            "latency_device": self.latency_device,
            "images_per_s": self.images_per_s,
            "curve": self.curve,
        }


def run_trial(
    arch_dict: Mapping[str, Any],
    data: ImageDataset,
    *,
    config: TrainingConfig,
    seed: int,
    device: torch.device,
    control: Control | None = None,
    listener: TrainingListener | None = None,
    log: Callable[[str], None] | None = None,
    resume: Mapping[str, Any] | None = None,
    checkpoints: CheckpointSink | None = None,
    onnx_latency: bool = True,
    to_epoch: int | None = None,
) -> TrialOutcome:
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
    return TrialOutcome(
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


ONNX_LATENCY_MAX_S = 3.0


def onnx_cpu_latency(
    model: nn.Module,
    resolution: int,
    *,
    log: Callable[[str], None] | None = None,
    max_seconds: float = ONNX_LATENCY_MAX_S,
) -> Latency | None:
    """Batch-1 latency of the network exported to ONNX, under ONNX Runtime on this CPU
    (`vitcube.models.export.onnxruntime_latency`), on an fp32 CPU copy; None, and a log line,
    when anything about the export or the runtime fails."""
    import inspect

    try:
        from vitcube.models.export import onnxruntime_latency

        cpu_model = copy.deepcopy(model).to("cpu", torch.float32)
        cpu_model = cpu_model.to(memory_format=torch.contiguous_format).eval()  # type: ignore[call-overload]
        options: dict[str, Any] = {}
        accepted = inspect.signature(onnxruntime_latency).parameters
        for name in ("max_seconds", "max_s", "time_budget_s"):
            if name in accepted:
                options[name] = max_seconds  # time-boxed: at most a few seconds per trial
                break
        measured = onnxruntime_latency(cpu_model, resolution, **options)
        return Latency(float(measured.ms), str(measured.device))
    except Exception as error:  # an op the exporter lacks, a missing runtime: no ONNX figure
        if log is not None:
            first = (str(error).splitlines() or [""])[0][:300]
            log(f"ONNX Runtime latency not measured ({type(error).__name__}: {first})")
        return None
