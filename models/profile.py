"""Forward-hook MAC counting of a built network: the ground truth `count_macs` must equal.

`hook_macs(model, resolution)` runs one image through `model` with hooks on every
`nn.Conv2d` (k²·C_in/groups per output element), `nn.Linear` (in_features per output
element) and `AttentionMatmul` (N_k·(d_key + d_value) per query row and head), reading the shapes of
the tensors that actually flow — so a resized token grid is counted as it runs. Used by the
tests and by benchmarks/bench_macs.py.

Imports torch and `models.layers` only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from vitcube.models.layers import AttentionMatmul

Hook = Callable[[Any, tuple[torch.Tensor, ...], torch.Tensor], None]


@dataclass(frozen=True)
class LayerMacs:
    """MACs of one module call, for one image."""

    name: str
    kind: str  # "conv" | "linear" | "attention"
    macs: int


def hook_macs(model: nn.Module, resolution: int) -> tuple[int, list[LayerMacs]]:
    """(total MACs, per-call breakdown) of one forward pass of a [1, 3, R, R] input."""
    calls: list[LayerMacs] = []

    def conv_hook(name: str) -> Hook:
        def hook(module: nn.Conv2d, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            kh, kw = module.kernel_size
            per_output = kh * kw * module.in_channels // module.groups
            calls.append(LayerMacs(name, "conv", output.numel() * per_output))

        return hook

    def linear_hook(name: str) -> Hook:
        def hook(module: nn.Linear, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            calls.append(LayerMacs(name, "linear", output.numel() * module.in_features))

        return hook

    def attention_hook(name: str) -> Hook:
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            q, k, v = inputs[:3]  # [B, h, N_q, d_key], [B, h, N_k, d_key], [B, h, N_k, d_value]
            # Q·Kᵀ: N_q·N_k·d_key per head; A·V: N_q·N_k·d_value
            macs = q.numel() * k.shape[-2] + v.numel() * q.shape[-2]
            calls.append(LayerMacs(name, "attention", macs))

        return hook

    handles = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(conv_hook(name)))
        elif isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(linear_hook(name)))
        elif isinstance(module, AttentionMatmul):
            handles.append(module.register_forward_hook(attention_hook(name)))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, resolution, resolution))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return sum(call.macs for call in calls), calls
