"""Evaluation: top-1 and top-5 of a network on a whole split, at its centre crop.

Imports torch and workers.augment / workers.batches.
"""

from __future__ import annotations

import torch
from torch import nn

from vitcube.workers.augment import center_resize
from vitcube.workers.batches import BatchLoader, fixed_plan


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
