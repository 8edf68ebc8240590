"""Image augmentation done with torch on the training device (no torchvision).

Batches arrive as uint8 `B x 3 x H x W` tensors already on the device; pixels end up as floats
in [0, 1], as in the MobileViT reference training code (no mean/std normalisation).

- `random_resized_crop`: a crop box and flip per image over the whole image, resampled to
  `size x size` (bilinear or bicubic) by one `grid_sample` call; with `antialias`, crops that
  shrink (the multiscale sampler's small resolutions, large crops of large loads) are instead
  cut out and resized with a low-pass filter, one image at a time, as torchvision's
  antialiased resize does.
- `rand_augment`: RandAugment's 14 operations (torchvision's list and magnitude table), a few
  per image, batched by operation.
- `random_erasing`: RandomErasing, a box of 2-33 % of the area set to 0 per chosen image.
- `mix_batch`: Mixup or CutMix of each image with its mirror in the batch, with the matching
  soft targets (the loss takes them as class probabilities).
- `center_resize`: the deterministic evaluation transform.
- `TrainAugment`: the training pipeline of one trial in the reference order (crop + flip,
  RandAugment, RandomErasing, then Mixup/CutMix on the batch).

Every random decision is drawn on the CPU from a seeded generator (a handful of numbers per
image), so a seed gives the same augmentations on any device, and choosing which images take
which path never waits for the device.

Imports torch only.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

Interpolation = Literal["bilinear", "bicubic"]


def _on(values: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A small CPU tensor on `device` without stalling the host (pinned, asynchronous)."""
    if device.type == "cuda":
        return values.pin_memory().to(device, non_blocking=True)
    return values.to(device)


def random_resized_crop(
    images: torch.Tensor,
    size: int,
    *,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    hflip: bool = True,
    interpolation: Interpolation = "bilinear",
    antialias: bool = False,
    aspect: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Random-resized-crop (+ horizontal flip with p = 0.5) of every image.

    images: a `B x 3 x H x W` uint8 tensor; returns a `B x 3 x size x size` float tensor in
    [0, 1]. scale: the crop's share of the image area; ratio: its aspect ratio range (in the
    image's own pixels). aspect: a `B` tensor of each image's true width / height when the
    loader squeezed whole images into the tensor (the crop is then drawn in true pixels); None:
    the tensor's pixels are the image's. generator: a CPU generator (a CUDA one works but makes
    the host wait for the device every call).
    """
    batch, _, height, width = images.shape
    device = images.device
    uniform = torch.rand(batch, 5, generator=generator, device=_device_of(generator)).cpu()
    image_aspect = torch.full((batch,), width / height) if aspect is None else aspect.float().cpu()
    area = scale[0] + (scale[1] - scale[0]) * uniform[:, 0]
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    box_aspect = torch.exp(log_lo + (log_hi - log_lo) * uniform[:, 1])
    # Width and height as fractions of the image's sides; a box that does not fit is shrunk to
    # fit, keeping its aspect (torchvision retries and then falls back to a centre crop instead).
    box_w = torch.sqrt(area * box_aspect / image_aspect)
    box_h = torch.sqrt(area * image_aspect / box_aspect)
    overflow = torch.clamp(torch.maximum(box_w, box_h), min=1.0)
    box_w, box_h = box_w / overflow, box_h / overflow
    # Centre in normalised coordinates [-1, 1] such that the box stays inside the image.
    center_x = (1 - box_w) * (2 * uniform[:, 2] - 1)
    center_y = (1 - box_h) * (2 * uniform[:, 3] - 1)
    flip = (uniform[:, 4] < 0.5) & hflip
    pixels = images.float().div_(255.0)
    out = torch.empty(batch, 3, size, size, device=device)
    # Source pixels per output pixel along the longer side: above 1 the crop shrinks and
    # grid_sample's 2x2 (4x4) taps would skip pixels and alias.
    shrink = torch.maximum(box_w * width, box_h * height) / size
    filtered = (shrink > 1.0) & antialias
    sampled = torch.nonzero(~filtered).flatten()
    if len(sampled):
        theta = torch.zeros(len(sampled), 2, 3)
        theta[:, 0, 0] = box_w[sampled] * torch.where(flip[sampled], -1.0, 1.0)
        theta[:, 0, 2] = center_x[sampled]
        theta[:, 1, 1] = box_h[sampled]
        theta[:, 1, 2] = center_y[sampled]
        grid = F.affine_grid(_on(theta, device), [len(sampled), 3, size, size], align_corners=False)
        if len(sampled) == batch:  # the usual case: no gather and scatter of the whole batch
            out = F.grid_sample(
                pixels, grid, mode=interpolation, padding_mode="border", align_corners=False
            )
        else:
            index = _on(sampled, device)
            out[index] = F.grid_sample(
                pixels[index], grid, mode=interpolation, padding_mode="border", align_corners=False
            )
    for i in torch.nonzero(filtered).flatten().tolist():
        crop_w = max(1, min(width, round(float(box_w[i]) * width)))
        crop_h = max(1, min(height, round(float(box_h[i]) * height)))
        left = min(width - crop_w, max(0, round((float(center_x[i]) + 1) / 2 * width - crop_w / 2)))
        top = min(
            height - crop_h, max(0, round((float(center_y[i]) + 1) / 2 * height - crop_h / 2))
        )
        crop = pixels[i : i + 1, :, top : top + crop_h, left : left + crop_w]
        resized = F.interpolate(
            crop, size=(size, size), mode=interpolation, align_corners=False, antialias=True
        )
        out[i] = resized[0].flip(-1) if bool(flip[i]) else resized[0]
    if interpolation == "bicubic":
        out.clamp_(0.0, 1.0)  # bicubic overshoots at edges
    return out


def _device_of(generator: torch.Generator | None) -> torch.device:
    return torch.device("cpu") if generator is None else generator.device


# -- RandAugment ----------------------------------------------------------------------------

RAND_AUGMENT_OPS = (
    "identity",
    "shear_x",
    "shear_y",
    "translate_x",
    "translate_y",
    "rotate",
    "brightness",
    "color",
    "contrast",
    "sharpness",
    "posterize",
    "solarize",
    "autocontrast",
    "equalize",
)
"""torchvision's RandAugment operations; the first nine after identity take a random sign."""
_SIGNED = frozenset(RAND_AUGMENT_OPS[1:10])
MAGNITUDE_BINS = 31  # magnitudes 0..30, as torchvision's num_magnitude_bins


def _strength(op: str, magnitude: int) -> float:
    """torchvision's magnitude table at bin `magnitude` of 0..30 (unsigned)."""
    share = magnitude / (MAGNITUDE_BINS - 1)
    if op in ("shear_x", "shear_y"):
        return 0.3 * share
    if op in ("translate_x", "translate_y"):
        return 150.0 / 331.0 * share  # of the image side
    if op == "rotate":
        return 30.0 * share  # degrees
    if op in ("brightness", "color", "contrast", "sharpness"):
        return 0.9 * share
    if op == "posterize":
        return float(8 - round(magnitude / ((MAGNITUDE_BINS - 1) / 4)))  # bits kept
    if op == "solarize":
        return 1.0 - share  # threshold
    return 0.0


def _gray(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma: `B x 3 x H x W` -> `B x 1 x H x W`."""
    return (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)


def _blend(x: torch.Tensor, degenerate: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """degenerate + factor · (x - degenerate), clipped: factor 0 gives degenerate, 1 gives x."""
    return (degenerate + factor.view(-1, 1, 1, 1) * (x - degenerate)).clamp_(0.0, 1.0)


def _affine(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _equalize(x: torch.Tensor) -> torch.Tensor:
    """Per-channel histogram equalisation on 256 levels (PIL's / torchvision's algorithm)."""
    batch, channels, height, width = x.shape
    levels = (x * 255).round_().long().view(batch * channels, -1)  # [B*3, HW]
    hist = torch.zeros(batch * channels, 256, device=x.device).scatter_add_(
        1, levels, torch.ones_like(levels, dtype=torch.float)
    )
    last_nonzero = 255 - (hist.flip(1) > 0).float().argmax(dim=1, keepdim=True)
    step = torch.div(height * width - hist.gather(1, last_nonzero), 255, rounding_mode="floor")
    lut = torch.div(hist.cumsum(1) + step // 2, step.clamp(min=1), rounding_mode="floor")
    lut = torch.cat([torch.zeros_like(lut[:, :1]), lut[:, :-1]], dim=1).clamp_(0, 255)
    equalised = lut.gather(1, levels) / 255.0
    # A channel of one level (step 0) is left as it is.
    out = torch.where(step > 0, equalised, x.reshape(batch * channels, -1))
    return out.view(batch, channels, height, width)


def _apply_op(op: str, x: torch.Tensor, strength: torch.Tensor) -> torch.Tensor:
    """One RandAugment operation on `x` (`n x 3 x H x W` floats in [0, 1]); strength: `n`."""
    n = x.shape[0]
    if op in ("shear_x", "shear_y", "translate_x", "translate_y", "rotate"):
        theta = torch.zeros(n, 2, 3, device=x.device)
        theta[:, 0, 0] = theta[:, 1, 1] = 1.0
        if op == "shear_x":
            theta[:, 0, 1] = strength
        elif op == "shear_y":
            theta[:, 1, 0] = strength
        elif op == "translate_x":
            theta[:, 0, 2] = 2 * strength  # normalised coordinates span 2
        elif op == "translate_y":
            theta[:, 1, 2] = 2 * strength
        else:
            angle = torch.deg2rad(strength)
            theta[:, 0, 0] = theta[:, 1, 1] = torch.cos(angle)
            theta[:, 0, 1], theta[:, 1, 0] = -torch.sin(angle), torch.sin(angle)
        return _affine(x, theta)
    if op == "brightness":
        return _blend(x, torch.zeros_like(x), 1 + strength)
    if op == "color":
        return _blend(x, _gray(x).expand_as(x), 1 + strength)
    if op == "contrast":
        mean = _gray(x).mean(dim=(1, 2, 3), keepdim=True)
        return _blend(x, mean.expand_as(x), 1 + strength)
    if op == "sharpness":
        kernel = torch.ones(3, 1, 3, 3, device=x.device)
        kernel[:, :, 1, 1] = 5.0
        smooth = x.clone()
        smooth[:, :, 1:-1, 1:-1] = F.conv2d(x, kernel / 13.0, groups=3)  # borders untouched
        return _blend(x, smooth, 1 + strength)
    if op == "posterize":
        drop = (2 ** (8 - strength)).view(-1, 1, 1, 1)
        return torch.floor(torch.floor(x * 255) / drop) * drop / 255.0
    if op == "solarize":
        threshold = strength.view(-1, 1, 1, 1)
        return torch.where(x >= threshold, 1.0 - x, x)
    if op == "autocontrast":
        low = x.amin(dim=(2, 3), keepdim=True)
        high = x.amax(dim=(2, 3), keepdim=True)
        span = high - low
        return torch.where(span > 0, (x - low) / span.clamp(min=1e-12), x)
    if op == "equalize":
        return _equalize(x)
    return x


def rand_augment(
    x: torch.Tensor,
    *,
    num_ops: int = 2,
    magnitude: int = 9,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """RandAugment (Cubuk et al., 2020) as torchvision implements it: `num_ops` operations per
    image, drawn uniformly from `RAND_AUGMENT_OPS`, each at `magnitude` (of 0..30) with a
    random sign where the operation has one; geometric ones fill with black, as torchvision's
    default. x: a `B x 3 x H x W` float tensor in [0, 1]; returns a new one of the same shape.
    generator: a CPU generator.
    """
    if not 0 <= magnitude < MAGNITUDE_BINS:
        raise ValueError(f"magnitude must be in [0, {MAGNITUDE_BINS - 1}], got {magnitude}")
    batch = x.shape[0]
    choices = torch.randint(len(RAND_AUGMENT_OPS), (num_ops, batch), generator=generator)
    signs = torch.where(torch.rand(num_ops, batch, generator=generator) < 0.5, -1.0, 1.0)
    out = x.clone()
    for slot in range(num_ops):
        for code, op in enumerate(RAND_AUGMENT_OPS):
            if op == "identity":
                continue
            chosen = torch.nonzero(choices[slot] == code).flatten()
            if len(chosen) == 0:
                continue
            strength = torch.full((len(chosen),), _strength(op, magnitude))
            if op in _SIGNED:
                strength = strength * signs[slot, chosen]
            index = _on(chosen, x.device)
            out[index] = _apply_op(op, out[index], _on(strength, x.device))
    return out


# -- RandomErasing ---------------------------------------------------------------------------


def random_erasing(
    x: torch.Tensor,
    *,
    p: float,
    scale: tuple[float, float] = (0.02, 1 / 3),
    ratio: tuple[float, float] = (0.3, 3.3),
    value: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """RandomErasing (Zhong et al., 2020; torchvision's defaults): with probability `p` per
    image, a box covering a `scale` share of the area with aspect in `ratio` (log-uniform) is
    set to `value`. A box taller or wider than the image is cut to the image (torchvision
    redraws instead). x: a `B x 3 x H x W` float tensor; returns a new one.
    """
    batch, _, height, width = x.shape
    uniform = torch.rand(batch, 5, generator=generator)
    area = (scale[0] + (scale[1] - scale[0]) * uniform[:, 0]) * height * width
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * uniform[:, 1])
    box_h = torch.sqrt(area * aspect).round().clamp(1, height)
    box_w = torch.sqrt(area / aspect).round().clamp(1, width)
    top = torch.floor(uniform[:, 2] * (height - box_h + 1))
    left = torch.floor(uniform[:, 3] * (width - box_w + 1))
    erase = uniform[:, 4] < p
    box = _on(torch.stack([top, top + box_h, left, left + box_w, erase.float()], dim=1), x.device)
    rows = torch.arange(height, device=x.device).view(1, height, 1)
    cols = torch.arange(width, device=x.device).view(1, 1, width)
    inside = (
        (rows >= box[:, 0, None, None])
        & (rows < box[:, 1, None, None])
        & (cols >= box[:, 2, None, None])
        & (cols < box[:, 3, None, None])
        & (box[:, 4, None, None] > 0)
    )  # [B, H, W]
    return x.masked_fill(inside.unsqueeze(1), value)


# -- Mixup and CutMix ------------------------------------------------------------------------


def mix_batch(
    x: torch.Tensor,
    labels: torch.Tensor,
    *,
    num_classes: int,
    mixup_alpha: float,
    cutmix_alpha: float,
    rng: random.Random,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup (Zhang et al., 2018) or CutMix (Yun et al., 2019) of the batch with its mirror
    (image i with image B-1-i, as timm pairs them); when both alphas are above 0, each batch
    uses one of them with probability 1/2. λ ~ Beta(alpha, alpha); CutMix pastes a box of
    area share 1 - λ and corrects λ to the box it pasted.

    x: a `B x 3 x H x W` float tensor; labels: `B` class indices. Returns the mixed images and
    `B x num_classes` soft targets (each row sums to 1) for `F.cross_entropy`, which applies
    label smoothing to them as it does to indices.
    """
    targets = F.one_hot(labels, num_classes).float()
    modes = [mode for mode, alpha in (("mixup", mixup_alpha), ("cutmix", cutmix_alpha)) if alpha]
    if not modes:
        return x, targets
    mode = modes[0] if len(modes) == 1 else rng.choice(modes)
    alpha = mixup_alpha if mode == "mixup" else cutmix_alpha
    lam = rng.betavariate(alpha, alpha)
    partner = x.flip(0)
    if mode == "mixup":
        mixed = x * lam + partner * (1.0 - lam)
    else:
        height, width = x.shape[-2:]
        cut = math.sqrt(1.0 - lam)
        cut_h, cut_w = round(height * cut), round(width * cut)
        center_y, center_x = rng.randrange(height), rng.randrange(width)
        top, bottom = max(0, center_y - cut_h // 2), min(height, center_y + cut_h - cut_h // 2)
        left, right = max(0, center_x - cut_w // 2), min(width, center_x + cut_w - cut_w // 2)
        mixed = x.clone()
        mixed[:, :, top:bottom, left:right] = partner[:, :, top:bottom, left:right]
        lam = 1.0 - (bottom - top) * (right - left) / (height * width)
    return mixed, targets * lam + targets.flip(0) * (1.0 - lam)


# -- the training pipeline -------------------------------------------------------------------


@dataclass(frozen=True)
class AugmentOptions:
    """What `TrainAugment` does; the recipe keys of the same names (vitcube.contract)."""

    crop_scale: tuple[float, float] = (0.08, 1.0)
    hflip: bool = True
    crop_interpolation: Interpolation = "bilinear"
    antialias: bool = True
    rand_augment: bool = False
    rand_augment_ops: int = 2
    rand_augment_magnitude: int = 9
    random_erase_p: float = 0.0
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0


class TrainAugment:
    """One trial's training augmentation, seeded: `augment(images, labels, size, aspect=...)`
    gives the `B x 3 x size x size` inputs and the targets, class indices (`B`) or, with
    Mixup/CutMix, soft targets (`B x num_classes`); `F.cross_entropy` takes either. aspect: a
    `B` CPU tensor of each image's true width / height where the loader squeezed whole images
    into the square (`BatchLoader.aspects`), so the crop is drawn in the real image's geometry;
    None: the tensor's pixels are the image's."""

    def __init__(self, options: AugmentOptions, *, num_classes: int, seed: int) -> None:
        self.options = options
        self.num_classes = num_classes
        self.generator = torch.Generator().manual_seed(seed)
        self.rng = random.Random(seed)

    @property
    def mixes(self) -> bool:
        return bool(self.options.mixup_alpha or self.options.cutmix_alpha)

    def __call__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        size: int,
        *,
        aspect: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        o = self.options
        x = random_resized_crop(
            images,
            size,
            scale=o.crop_scale,
            hflip=o.hflip,
            interpolation=o.crop_interpolation,
            antialias=o.antialias,
            aspect=aspect,
            generator=self.generator,
        )
        if o.rand_augment:
            x = rand_augment(
                x,
                num_ops=o.rand_augment_ops,
                magnitude=o.rand_augment_magnitude,
                generator=self.generator,
            )
        if o.random_erase_p > 0:
            x = random_erasing(x, p=o.random_erase_p, generator=self.generator)
        if self.mixes:
            return mix_batch(
                x,
                labels,
                num_classes=self.num_classes,
                mixup_alpha=o.mixup_alpha,
                cutmix_alpha=o.cutmix_alpha,
                rng=self.rng,
            )
        return x, labels


def center_resize(images: torch.Tensor, size: int, *, crop_fraction: float = 1.0) -> torch.Tensor:
    """Centre crop `crop_fraction` of the side, then resize to `size x size` (antialiased).

    images: a `B x 3 x H x W` uint8 tensor; returns a `B x 3 x size x size` float tensor in [0, 1].
    """
    pixels = images.float().div_(255.0)
    height, width = pixels.shape[-2:]
    if crop_fraction < 1.0:
        crop_h = max(1, round(height * crop_fraction))
        crop_w = max(1, round(width * crop_fraction))
        top, left = (height - crop_h) // 2, (width - crop_w) // 2
        pixels = pixels[:, :, top : top + crop_h, left : left + crop_w]
    if pixels.shape[-2:] == (size, size):
        return pixels.contiguous()
    downscale = pixels.shape[-1] > size
    return F.interpolate(
        pixels, size=(size, size), mode="bilinear", align_corners=False, antialias=downscale
    )
