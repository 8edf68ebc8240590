"""Real training on the CPU: a tiny MobileViT v2 learns digits; the recipe's parts do their job."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pytest
import torch

from tests.factories import BAD_TRAINING_BLOCKS, GOOD_TRAINING_BLOCKS
from vitcube.contract import TrainingRecipe
from vitcube.models import ArchConfig, count_macs, count_params
from vitcube.workers.augment import center_resize, random_resized_crop
from vitcube.workers.batches import fixed_plan, multiscale_resolutions, variable_plan
from vitcube.workers.datasets import load_digits
from vitcube.workers.executors import Control
from vitcube.workers.recipe import TrainingConfig, parameter_groups
from vitcube.workers.runner import run_trial
from vitcube.workers.training import TrainingListener

# MobileViT v2-0.5 without its last two stages (the small-image variant), at 32 px: ~1 M MACs.
TINY_BASE = {
    "family": "mobilevit_v2",
    "width": 0.5,
    "resolution": 32,
    "num_classes": 10,
    "dropped_stages": [4, 5],
}


def tiny_arch() -> dict:
    return ArchConfig.from_dict(TINY_BASE).scale().to_dict()


class Recorder(TrainingListener):
    def __init__(self, stop_after_epoch: int | None = None, control: Control | None = None):
        self.epochs: list[tuple[int, dict[str, float]]] = []
        self.stop_after_epoch = stop_after_epoch
        self.control = control

    def on_epoch(self, epoch: int, metrics: Mapping[str, float]) -> None:
        self.epochs.append((epoch, dict(metrics)))
        if self.control is not None and epoch == self.stop_after_epoch:
            self.control.stop.set()


@pytest.mark.slow
def test_tiny_mobilevit_v2_learns_digits_on_cpu() -> None:
    data = load_digits()
    recorder = Recorder()
    outcome = run_trial(
        tiny_arch(),
        data,
        # Four epochs at the reference's full peak LR (its sqrt-scaled 0.0005 at batch 64 is for
        # long runs): from ml-cvnets' initialisation the EMA weights need them on digits.
        config=TrainingConfig.from_dict({"epochs": 4, "batch_size": 64, "lr": 0.002}),
        seed=0,
        device=torch.device("cpu"),
        listener=recorder,
    )
    assert outcome.top1 > 0.8  # chance is 0.1
    assert outcome.top5 is not None and outcome.top5 >= outcome.top1
    assert [p["epoch"] for p in outcome.curve] == [1, 2, 3, 4]
    assert outcome.top1 == max(p["val_top1"] for p in outcome.curve)
    assert outcome.curve[-1]["train_loss"] < outcome.curve[0]["train_loss"]
    arch = ArchConfig.from_dict(TINY_BASE).scale()
    assert outcome.macs == count_macs(arch) and outcome.params == count_params(arch)
    assert outcome.latency_ms is not None and outcome.latency_ms > 0
    assert outcome.images_per_s is not None and outcome.images_per_s > 0
    assert not outcome.stopped and len(recorder.epochs) == 4


@pytest.mark.slow
def test_stop_reports_the_partial_curve_and_seeds_repeat() -> None:
    data = load_digits()
    config = TrainingConfig.from_dict({"epochs": 5, "max_steps_per_epoch": 3})
    runs = []
    for _ in range(2):
        control = Control()
        outcome = run_trial(
            tiny_arch(),
            data,
            config=config,
            seed=7,
            device=torch.device("cpu"),
            control=control,
            listener=Recorder(stop_after_epoch=2, control=control),
        )
        runs.append(outcome)
    assert runs[0].stopped and [p["epoch"] for p in runs[0].curve] == [1, 2]
    # Same seed, same data order, same augmentation: the same numbers.
    assert runs[0].curve[1]["train_loss"] == pytest.approx(runs[1].curve[1]["train_loss"])


def test_training_block_defaults_and_schedule() -> None:
    config = TrainingConfig.from_dict({"epochs": 20, "batch_size": 32}).resolved(
        family="mobilevit_v2", dataset="digits"
    )
    peak = 0.002 * math.sqrt(32 / 1024)  # the reference's batch-1024 LR, square-root rule
    assert (config.lr, config.label_smoothing, config.grad_clip) == (pytest.approx(peak), 0.1, 10.0)
    assert config.warmup == pytest.approx(1.0)  # 5 % of 20 epochs
    assert config.lr_at(0) == pytest.approx(peak / 2000)  # v2 warms up from 1e-6 at 2e-3
    assert config.lr_at(1.0) == pytest.approx(peak)
    assert config.lr_at(20) == pytest.approx(peak / 10)
    floor = peak / 10
    assert config.lr_at(10.5) == pytest.approx(
        floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi / 2))
    )
    explicit = TrainingConfig.from_dict({"epochs": 10, "warmup_epochs": 0, "lr": 0.002})
    assert explicit.resolved(family="mobilevit_v1", dataset="digits").lr_at(0) == 0.002
    with pytest.raises(ValueError, match="resolve the recipe first"):
        TrainingConfig().lr_at(0)


@pytest.mark.parametrize(("block", "message"), BAD_TRAINING_BLOCKS)
def test_the_worker_refuses_exactly_the_recipes_the_contract_refuses(
    block: Any, message: str
) -> None:
    # A ValueError: the loop fails such a trial with retry false and this message.
    with pytest.raises(ValueError) as refused:
        TrainingConfig.from_dict(block)
    assert message in str(refused.value)


@pytest.mark.parametrize("block", GOOD_TRAINING_BLOCKS)
def test_the_worker_accepts_the_recipes_the_contract_accepts(block: dict[str, Any]) -> None:
    config = TrainingConfig.from_dict(block)
    assert config.model_dump() == TrainingRecipe.from_dict(block).model_dump()


def test_no_weight_decay_on_norms_and_biases() -> None:
    from vitcube.models import build_model

    model = build_model(ArchConfig.from_dict(TINY_BASE).scale())
    decay, no_decay = parameter_groups(model, 0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d | torch.nn.GroupNorm)]
    assert norms
    no_decay_ids = {id(p) for p in no_decay["params"]}
    assert all(id(m.weight) in no_decay_ids and id(m.bias) in no_decay_ids for m in norms)
    assert all(p.ndim > 1 for p in decay["params"])


def test_v1_decays_every_parameter() -> None:
    from vitcube.models import build_model

    model = build_model(ArchConfig.from_dict(TINY_BASE).scale())
    decay, no_decay = parameter_groups(model, 0.01, decay_norms_and_biases=True)
    assert decay["weight_decay"] == 0.01 and no_decay["params"] == []
    assert len(decay["params"]) == len(list(model.parameters()))


def _few_steps(**recipe: Any) -> TrainingConfig:
    return TrainingConfig.from_dict(
        {"epochs": 2, "batch_size": 16, "max_steps_per_epoch": 2, **recipe}
    )


EVERY_AUGMENTATION = {
    "rand_augment": True,
    "random_erase_p": 0.5,
    "mixup_alpha": 0.2,
    "cutmix_alpha": 1.0,
    "hflip": True,
    "crop_interpolation": "bicubic",
}


def test_the_same_seed_reproduces_a_cpu_run_bit_for_bit_with_every_augmentation() -> None:
    data = load_digits()
    runs = [
        run_trial(
            tiny_arch(),
            data,
            config=_few_steps(**EVERY_AUGMENTATION),
            seed=seed,
            device=torch.device("cpu"),
        )
        for seed in (4, 4, 5)
    ]
    losses = [[point["train_loss"] for point in run.curve] for run in runs]
    assert all(math.isfinite(loss) for loss in losses[0])
    assert losses[0] == losses[1]  # exactly: the CPU is deterministic
    assert losses[0] != losses[2]


def test_run_trial_builds_v1_with_its_recipes_transformer_dropout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import vitcube.models

    built: list[float] = []
    real_build = vitcube.models.build_model

    def recording_build(arch: Any, *, transformer_dropout: float = 0.0) -> Any:
        built.append(transformer_dropout)
        return real_build(arch, transformer_dropout=transformer_dropout)

    monkeypatch.setattr(vitcube.models, "build_model", recording_build)
    v1 = ArchConfig.from_dict(
        {"family": "mobilevit_v1", "size": "xxs", "resolution": 32, "num_classes": 10}
    )
    config = _few_steps(epochs=1, max_steps_per_epoch=1)
    run_trial(
        v1.scale().to_dict(), load_digits(), config=config, seed=0, device=torch.device("cpu")
    )
    run_trial(tiny_arch(), load_digits(), config=config, seed=0, device=torch.device("cpu"))
    explicit = _few_steps(epochs=1, max_steps_per_epoch=1, transformer_dropout=0.2)
    run_trial(tiny_arch(), load_digits(), config=explicit, seed=0, device=torch.device("cpu"))
    assert built == [0.05, 0.0, 0.2]  # v1 xxs's 0.05, v2's none, an explicit value


def test_random_resized_crop_on_device() -> None:
    images = torch.zeros(4, 3, 8, 8, dtype=torch.uint8)
    images[:, :, :, :4] = 255  # left half white
    generator = torch.Generator().manual_seed(0)
    full = random_resized_crop(images, 16, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=False)
    assert full.shape == (4, 3, 16, 16) and full.dtype == torch.float32
    assert full[:, :, :, :7].min() == 1.0 and full[:, :, :, 9:].max() == 0.0
    flipped = random_resized_crop(
        images[:1].expand(64, -1, -1, -1),
        16,
        scale=(1.0, 1.0),
        ratio=(1.0, 1.0),
        generator=generator,
    )
    left_white = flipped[:, 0, 8, 0] > 0.5
    assert 10 < int(left_white.sum()) < 54  # about half mirrored
    crops = random_resized_crop(images, 12, scale=(0.1, 0.3), generator=generator)
    assert crops.shape == (4, 3, 12, 12) and crops.min() >= 0.0 and crops.max() <= 1.0
    assert center_resize(images, 8).equal(images.float() / 255)


def test_variable_batch_sampler_keeps_pixels_per_batch_about_constant() -> None:
    resolutions = multiscale_resolutions(256)
    assert resolutions == [128, 192, 224, 256, 320]  # 0.5× … 1.25×, multiples of 32
    plan = variable_plan(5000, 64, 256, resolutions, generator=torch.Generator().manual_seed(0))
    assert {b.resolution for b in plan} <= set(resolutions) and len(
        {b.resolution for b in plan}
    ) > 3
    for batch in plan:
        pixels = len(batch.indices) * batch.resolution**2
        assert pixels <= 64 * 256**2 * 1.05
    seen = [i for b in plan for i in b.indices]
    assert len(seen) == len(set(seen)) and len(seen) > 4500
    fixed = fixed_plan(130, 64, 32, generator=None, drop_last=True)
    assert [len(b.indices) for b in fixed] == [64, 64]


@pytest.mark.slow
def test_multiscale_sampler_trains_at_several_resolutions() -> None:
    seen: set[int] = set()

    class Spy(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.training:
                seen.add(x.shape[-1])
            return self.inner(x)

    from vitcube.models import build_model
    from vitcube.workers.training import train

    arch = ArchConfig.from_dict({**TINY_BASE, "resolution": 64}).scale()
    result = train(
        Spy(build_model(arch)),
        load_digits(),
        resolution=64,
        config=TrainingConfig.from_dict(
            {"epochs": 1, "multiscale": True, "max_steps_per_epoch": 8, "batch_size": 16}
        ),
        seed=3,
        device=torch.device("cpu"),
    )
    assert seen == {32, 64}  # 0.5× … 1.25× of 64 px in multiples of 32
    assert len(result.curve) == 1
