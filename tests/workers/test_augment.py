"""workers.augment: the reference augmentations in torch, seeded, with the label mixing and the
areas, crops and filtering they promise."""

from __future__ import annotations

import random
from typing import Any

import pytest
import torch

from vitcube.workers.augment import (
    RAND_AUGMENT_OPS,
    AugmentOptions,
    Interpolation,
    TrainAugment,
    _apply_op,
    mix_batch,
    rand_augment,
    random_erasing,
    random_resized_crop,
)

EVERYTHING = AugmentOptions(
    crop_interpolation="bicubic",
    rand_augment=True,
    random_erase_p=0.25,
    mixup_alpha=0.2,
    cutmix_alpha=1.0,
)


def _photos(batch: int = 8, side: int = 40, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, 3, side, side), dtype=torch.uint8, generator=generator)


def _checkerboard(side: int) -> torch.Tensor:
    rows, cols = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    return (((rows + cols) % 2) * 255).to(torch.uint8).expand(1, 3, side, side).contiguous()


def test_the_full_pipeline_gives_unit_range_images_and_soft_targets_that_sum_to_one() -> None:
    augment = TrainAugment(EVERYTHING, num_classes=10, seed=3)
    labels = torch.arange(8) % 10
    for _ in range(4):
        inputs, targets = augment(_photos(), labels, 32)
        assert inputs.shape == (8, 3, 32, 32) and inputs.dtype == torch.float32
        assert inputs.min() >= 0.0 and inputs.max() <= 1.0
        assert targets.shape == (8, 10) and targets.dtype == torch.float32
        assert torch.allclose(targets.sum(dim=1), torch.ones(8))
    plain = TrainAugment(AugmentOptions(), num_classes=10, seed=3)
    assert plain(_photos(), labels, 32)[1] is labels  # no mixing: the class indices


def test_a_seed_fixes_every_augmentation() -> None:
    labels = torch.arange(8)
    first = TrainAugment(EVERYTHING, num_classes=8, seed=5)(_photos(), labels, 24)
    again = TrainAugment(EVERYTHING, num_classes=8, seed=5)(_photos(), labels, 24)
    other = TrainAugment(EVERYTHING, num_classes=8, seed=6)(_photos(), labels, 24)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], other[0])


def test_mixup_mixes_pixels_and_labels_by_the_same_lambda() -> None:
    # Image i is the constant i / 10: a mixed pixel shows the weight of each partner.
    images = (torch.arange(6).float() / 10).view(6, 1, 1, 1).expand(6, 3, 4, 4)
    labels = torch.arange(6)
    mixed, targets = mix_batch(
        images, labels, num_classes=6, mixup_alpha=0.4, cutmix_alpha=0.0, rng=random.Random(1)
    )
    lam = float(targets[0, 0])
    assert 0.0 < lam < 1.0 and float(targets[0, 5]) == pytest.approx(1 - lam)
    assert torch.allclose(targets.sum(dim=1), torch.ones(6))
    assert mixed[0].unique().item() == pytest.approx(lam * 0.0 + (1 - lam) * 0.5)


def test_cutmix_pastes_the_share_of_pixels_its_targets_say() -> None:
    images = torch.zeros(4, 3, 32, 32)
    images[2:] = 1.0  # image 0's partner (image 3) is white
    for seed in range(10):
        mixed, targets = mix_batch(
            images,
            torch.arange(4),
            num_classes=4,
            mixup_alpha=0.0,
            cutmix_alpha=1.0,
            rng=random.Random(seed),
        )
        pasted = float(mixed[0, 0].mean())  # share of white pixels in image 0
        assert float(targets[0, 3]) == pytest.approx(pasted)
        assert float(targets[0, 0]) == pytest.approx(1 - pasted)
        assert torch.allclose(targets.sum(dim=1), torch.ones(4))


def test_with_both_on_each_batch_takes_mixup_or_cutmix() -> None:
    images = torch.rand(4, 3, 16, 16)
    rng = random.Random(0)
    kinds = set()
    for _ in range(20):
        mixed, _ = mix_batch(
            images, torch.arange(4), num_classes=4, mixup_alpha=0.2, cutmix_alpha=1.0, rng=rng
        )
        # CutMix leaves some pixels exactly as they were; Mixup changes (almost) all of them.
        kinds.add("cutmix" if bool((mixed == images).any()) else "mixup")
    assert kinds == {"mixup", "cutmix"}


def test_random_erasing_erases_the_stated_share_of_the_area() -> None:
    ones = torch.ones(64, 3, 100, 100)
    erased = random_erasing(ones, p=1.0, scale=(0.1, 0.1), ratio=(1.0, 1.0))
    shares = (erased[:, 0] == 0).float().mean(dim=(1, 2))
    assert torch.allclose(shares, torch.full((64,), 0.1), atol=0.003)  # a 32 x 32 box
    assert bool((erased[:, 0] == erased[:, 2]).all())  # every channel of the box
    generator = torch.Generator().manual_seed(0)
    some = random_erasing(ones, p=0.25, generator=generator)
    hit = (some[:, 0] == 0).flatten(1).any(dim=1).float().mean().item()
    assert 0.1 < hit < 0.45
    areas = (some[:, 0] == 0).float().mean(dim=(1, 2))
    assert float(areas.max()) <= 1 / 3 + 0.02 and float(areas[areas > 0].min()) >= 0.015


def test_the_crop_reaches_past_the_centre_square_of_a_wide_image() -> None:
    # A 2:1 image squeezed into a 32 x 32 tensor (as a loader keeping the whole image would):
    # its centre square is the middle half of the columns; mark the outer quarters.
    squeezed = torch.zeros(256, 3, 32, 32, dtype=torch.uint8)
    squeezed[..., :8] = 255
    squeezed[..., 24:] = 255
    generator = torch.Generator().manual_seed(0)
    crops = random_resized_crop(
        squeezed,
        16,
        scale=(0.3, 1.0),
        ratio=(1.0, 1.0),
        hflip=False,
        interpolation="bicubic",
        aspect=torch.full((256,), 2.0),
        generator=generator,
    )
    outside = (crops[:, 0] > 0.5).flatten(1).any(dim=1)
    assert 0.3 < float(outside.float().mean()) < 1.0
    # The largest square crop in true pixels is the full height and half the width.
    full = random_resized_crop(
        squeezed[:1],
        16,
        scale=(1.0, 1.0),
        ratio=(1.0, 1.0),
        hflip=False,
        aspect=torch.tensor([2.0]),
    )
    assert full.shape == (1, 3, 16, 16)


def test_bicubic_crops_stay_in_range_and_differ_from_bilinear() -> None:
    images = _photos(4, 24)
    bilinear = random_resized_crop(images, 40, generator=torch.Generator().manual_seed(1))
    bicubic = random_resized_crop(
        images, 40, interpolation="bicubic", generator=torch.Generator().manual_seed(1)
    )
    assert bicubic.min() >= 0.0 and bicubic.max() <= 1.0
    assert not torch.allclose(bilinear, bicubic)


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_antialiased_shrinking_averages_a_checkerboard_that_plain_sampling_aliases(
    interpolation: Interpolation,
) -> None:
    board = _checkerboard(64)  # the highest frequency there is: its true average is grey
    whole: dict[str, Any] = {"scale": (1.0, 1.0), "ratio": (1.0, 1.0), "hflip": False}
    filtered = random_resized_crop(board, 20, interpolation=interpolation, antialias=True, **whole)
    sampled = random_resized_crop(board, 20, interpolation=interpolation, antialias=False, **whole)
    assert float(filtered.std()) < 0.02 and float(filtered.mean()) == pytest.approx(0.5, abs=0.01)
    assert float(sampled.std()) > 0.1  # moiré: sparse taps hit black and white unevenly
    # Upscaling needs no filter: both paths agree.
    small = _photos(2, 12)
    assert torch.allclose(
        random_resized_crop(small, 24, antialias=True, **whole),
        random_resized_crop(small, 24, antialias=False, **whole),
    )


def test_antialiased_crops_flip_like_sampled_ones() -> None:
    images = torch.zeros(64, 3, 32, 32, dtype=torch.uint8)
    images[..., :16] = 255  # left half white
    generator = torch.Generator().manual_seed(0)
    crops = random_resized_crop(
        images, 8, scale=(1.0, 1.0), ratio=(1.0, 1.0), antialias=True, generator=generator
    )
    left_white = crops[:, 0, 4, 0] > 0.5
    assert 10 < int(left_white.sum()) < 54
    assert bool(((crops[:, 0, 4, 0] > 0.5) != (crops[:, 0, 4, 7] > 0.5)).all())


def test_rand_augment_is_seeded_in_range_and_changes_images() -> None:
    x = _photos(16, 32).float() / 255
    first = rand_augment(x, generator=torch.Generator().manual_seed(0))
    again = rand_augment(x, generator=torch.Generator().manual_seed(0))
    assert torch.equal(first, again) and first.shape == x.shape
    assert first.min() >= 0.0 and first.max() <= 1.0
    changed = (first - x).abs().flatten(1).amax(dim=1) > 1e-3
    assert int(changed.sum()) >= 12  # two ops of 14 rarely both leave an image as it is
    with pytest.raises(ValueError, match="magnitude must be in"):
        rand_augment(x, magnitude=31)


@pytest.mark.parametrize("op", RAND_AUGMENT_OPS)
def test_each_rand_augment_op_keeps_shape_and_range(op: str) -> None:
    x = _photos(3, 16).float() / 255
    strength = torch.tensor([-0.5, 0.0, 0.5]) if op not in ("posterize", "solarize") else None
    if op == "posterize":
        strength = torch.tensor([8.0, 4.0, 1.0])
    if op == "solarize":
        strength = torch.tensor([1.0, 0.5, 0.0])
    assert strength is not None
    out = _apply_op(op, x, strength)
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert out.min() >= 0.0 and out.max() <= 1.0 + 1e-6


def test_rand_augment_ops_do_what_their_names_say() -> None:
    x = _photos(2, 16).float() / 255
    assert torch.allclose(_apply_op("solarize", x, torch.zeros(2)), 1 - x)  # threshold 0: all
    posterized = _apply_op("posterize", x, torch.tensor([1.0, 1.0]))
    assert set(torch.unique(posterized * 255).round().tolist()) <= {0.0, 128.0}
    grey = _apply_op("color", x, torch.tensor([-1.0, -1.0]))  # saturation 0
    assert torch.allclose(grey[:, 0], grey[:, 1], atol=1e-6)
    low_contrast = (x * 0.5 + 0.25) - (x * 0.5 + 0.25).amin(dim=(2, 3), keepdim=True)
    stretched = _apply_op("autocontrast", low_contrast + 0.2, torch.zeros(2))
    assert torch.allclose(stretched.amin(dim=(2, 3)), torch.zeros(2, 3), atol=1e-6)
    assert torch.allclose(stretched.amax(dim=(2, 3)), torch.ones(2, 3), atol=1e-6)
    dark = (x * 0.3).mul(255).round().div(255)
    equalised = _apply_op("equalize", dark, torch.zeros(2))
    assert float(equalised.amax()) > 0.9 and float(equalised.mean()) > float(dark.mean())
    shifted = _apply_op("translate_x", x, torch.tensor([0.25, 0.25]))
    assert torch.allclose(shifted[..., :-4], x[..., 4:], atol=1e-5)  # 0.25 of 16 px = 4 px
    assert bool((shifted[..., -4:] == 0).all())  # filled with black
