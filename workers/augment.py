"""Image augmentation done with torch on the training device (no torchvision).

Batches arrive as uint8 `B x 3 x H x W` tensors already on the device. `random_resized_crop`
draws one crop box and flip per image and resamples the whole batch to `size x size` with a
single `grid_sample` call, so the crop, the flip and the resize to the trial's resolution
cost one kernel. `center_resize` is the deterministic evaluation transform. Pixels end up as
floats in [0, 1], as in the MobileViT reference training code (no mean/std normalisation).

Imports torch only.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def random_resized_crop(
    images: torch.Tensor,
    size: int,
    *,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    hflip: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Random-resized-crop (+ horizontal flip with p = 0.5) of every image.

    images: a `B x 3 x H x W` uint8 tensor; returns a `B x 3 x size x size` float tensor in
    [0, 1]. scale: the crop's share of the image area; ratio: its aspect ratio range.
    """
    batch = images.shape[0]
    device = images.device
    uniform = torch.rand(batch, 5, device=device, generator=generator)
    area = scale[0] + (scale[1] - scale[0]) * uniform[:, 0]
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * uniform[:, 1])
    # Width and height as fractions of the image side; a box that does not fit is shrunk to fit,
    # keeping its aspect (torchvision retries and then falls back to a centre crop instead).
    width = torch.sqrt(area * aspect)
    height = torch.sqrt(area / aspect)
    overflow = torch.clamp(torch.maximum(width, height), min=1.0)
    width, height = width / overflow, height / overflow
    # Centre in normalised coordinates [-1, 1] such that the box stays inside the image.
    center_x = (1 - width) * (2 * uniform[:, 2] - 1)
    center_y = (1 - height) * (2 * uniform[:, 3] - 1)
    flip = torch.where(uniform[:, 4] < 0.5, -1.0, 1.0) if hflip else torch.ones_like(width)
    theta = torch.zeros(batch, 2, 3, device=device)
    theta[:, 0, 0] = width * flip
    theta[:, 0, 2] = center_x
    theta[:, 1, 1] = height
    theta[:, 1, 2] = center_y
    pixels = images.float().div_(255.0)
    grid = F.affine_grid(theta, [batch, 3, size, size], align_corners=False)
    return F.grid_sample(pixels, grid, mode="bilinear", padding_mode="border", align_corners=False)


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
