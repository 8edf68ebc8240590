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
params, MACs and batch-1 latency.

Imports torch, models and workers.*.
"""

from __future__ import annotations

import copy
import gc
import math
import platform
import statistics
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

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
) -> TrainResult:
    """Train `model` (already on `device`) on `data` at `resolution` px; return the EMA result.

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
    train_seconds = 0.0
    train_images = 0
    stopped = False
    for epoch in range(config.epochs):
        model.train()
        plan = plan_epoch()
        plan_images = max(1, sum(len(batch.indices) for batch in plan))
        epoch_images = 0
        loss_sum = torch.zeros((), device=device)
        loss_count = 0
        epoch_start = time.perf_counter()
        lr = config.lr_at(epoch)
        for step, ((images, labels), batch) in enumerate(
            zip(train_loader.iterate(plan), plan, strict=True)
        ):
            control.check()
            if control.stop.is_set():
                stopped = True
                break
            lr = config.lr_at(epoch + epoch_images / plan_images)
            for group in optimizer.param_groups:
                group["lr"] = lr
            # Crop + flip, RandAugment, RandomErasing, Mixup/CutMix as the recipe says; targets
            # are the labels, or soft targets once Mixup/CutMix mixed them.
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
            if step % 10 == 0 or step == len(plan) - 1:
                # Reading the loss synchronises the device: only every few steps.
                mean_loss = float(loss_sum) / loss_count
                if not math.isfinite(mean_loss):
                    raise TrainingDiverged(
                        f"training loss became {mean_loss} in epoch {epoch + 1}: lower training.lr "
                        f"(now {config.lr}) or keep training.grad_clip > 0"
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
        epoch_seconds = time.perf_counter() - epoch_start
        train_seconds += epoch_seconds
        train_images += epoch_images
        if loss_count == 0:
            break  # stopped before a single step of this epoch: report what earlier epochs had
        control.check()
        top1, top5 = evaluate_ema()
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
        listener.on_epoch(report)
        if stopped or control.stop.is_set():
            stopped = True
            break

    if best is None:
        # Stopped before the first epoch ended: evaluate the EMA weights once so there is a result.
        top1, top5 = evaluate_ema()
        best = EpochReport(0, float("nan"), top1, top5, 0.0, 0.0)
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
    )


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
) -> TrainResult:
    """`train` a fresh `build()` (seeded); on a CUDA OOM, free the memory and start again with
    twice the micro-batches, up to `max_micro_batches` (and never pieces under one image).

    An OOM from a smaller card or a neighbour process then costs a restart, not the trial. The
    restart trains from scratch with the same seed, so the run is the recipe's, only split.
    Raises the last torch.OutOfMemoryError when even the finest split does not fit.
    """
    log = log or (lambda message: None)
    micro_batches = 1
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

    def report(self) -> dict[str, Any]:
        """The metrics part of the complete body (the README's REST API table)."""
        return {
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
) -> TrialOutcome:
    """Build the trial's architecture with models/, train it (restarting with micro-batches
    after a CUDA OOM, `train_splitting_on_oom`), measure params/MACs/latency."""
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
    )
    cuda = device.type == "cuda"
    amp = config.amp == "bf16" or (config.amp == "auto" and cuda)
    channels_last = config.channels_last if config.channels_last is not None else cuda
    latency = measure_latency(
        result.model, arch.resolution, device, amp=amp, channels_last=channels_last
    )
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
    )
