"""The training recipe as the epoch loop reads it: the schedule, AdamW's groups, the EMA.

The recipe follows the MobileViT reference training (Apple's ml-cvnets configs for MobileViT
v1/v2; the per-family values are `vitcube.contract.FAMILY_RECIPES`): AdamW (v1: decay 0.01 on
every parameter; v2: 0.05, never on norms or biases) with the peak LR scaled from batch 1024 by
the square-root rule, linear warm-up then cosine decay, and an exponential moving average (EMA)
of the weights that is the model evaluated and reported. `TrainingConfig.from_dict(training)`
validates a lease's recipe with the contract's `TrainingRecipe` (the server refused anything
else at POST) and adds the LR schedule; `augment_options` reads its augmentation keys.

Imports torch, vitcube.contract and workers.augment.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn

from vitcube.contract import GENERIC_FAMILY, TrainingRecipe
from vitcube.workers.augment import AugmentOptions


class TrainingConfig(TrainingRecipe):
    """A validated `training` block (vitcube.contract.TrainingRecipe: the keys, their ranges and
    defaults, shared with the server) plus the schedule arithmetic the training loop needs.

    `TrainingConfig.from_dict(lease.training)` raises InvalidRecipeError (a ValueError) naming
    every bad key and its allowed range, exactly where the server's POST would have said 422.
    `training.train` and `trial.run_trial` resolve it for the network's family and the dataset
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


def resolved_for(config: TrainingConfig, model: nn.Module, dataset: str) -> TrainingConfig:
    """The recipe resolved for the network's family (`model.arch`, as `build_model` sets it;
    the generic family's recipe for any other module) and the dataset; a resolved recipe, as
    every lease carries, comes back unchanged."""
    arch = getattr(model, "arch", None)
    family = getattr(arch, "family", GENERIC_FAMILY)
    size = getattr(getattr(arch, "base", None), "size", None)
    return config.resolved(family=family, size=size, dataset=dataset)


def augment_options(config: TrainingConfig) -> AugmentOptions:
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


def expected_steps(config: TrainingConfig, n_train: int) -> int:
    steps = max(1, n_train // config.batch_size)
    return min(steps, config.max_steps_per_epoch) if config.max_steps_per_epoch else steps
