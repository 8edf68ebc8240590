"""Building blocks shared by the families: conv-norm-activation, inverted residual (MV2 /
MobileNet v3 bneck, EfficientViT's patch merging), depthwise-separable (MobileNet v1),
squeeze-excite, and the attention matmul module whose MACs the forward-hook profiler
(`models.profile`) counts.

Imports torch and `models.arch` only. `models.cost` counts what these blocks compute by
arithmetic and never calls them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vitcube.models.arch import ConvBlock


def activation(name: str) -> nn.Module:
    """The activation module named in an `Arch` ("relu", "relu6", "hardswish", "silu", "none")."""
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "relu6":
        return nn.ReLU6(inplace=True)
    if name == "hardswish":
        return nn.Hardswish(inplace=True)
    if name == "silu":
        return nn.SiLU(inplace=True)
    if name == "none":
        return nn.Identity()
    raise ValueError(f"unknown activation {name!r}")


class ConvNormAct(nn.Sequential):
    """k×k conv (no bias, padding k // 2) + BatchNorm + optional activation."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        *,
        groups: int = 1,
        act: str | None = "silu",
    ) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                stride,
                padding=kernel_size // 2,
                groups=groups,
                bias=False,
            ),
            nn.BatchNorm2d(out_channels),
        ]
        if act is not None:
            layers.append(activation(act))
        super().__init__(*layers)

    @property
    def norm(self) -> nn.BatchNorm2d:
        norm = self[1]
        assert isinstance(norm, nn.BatchNorm2d)
        return norm


class SqueezeExcite(nn.Module):
    """Squeeze-excite: global pool, 1×1 conv (bias) + ReLU, 1×1 conv (bias), gate — MobileNet
    v3's hard sigmoid, or the plain sigmoid of EfficientViT's subsample (timm's SEModule)."""

    def __init__(self, channels: int, squeeze_channels: int, gate: str = "hardsigmoid") -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, squeeze_channels, 1)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(squeeze_channels, channels, 1)
        gates: dict[str, nn.Module] = {"hardsigmoid": nn.Hardsigmoid(), "sigmoid": nn.Sigmoid()}
        if gate not in gates:
            raise ValueError(f"unknown squeeze-excite gate {gate!r}; valid: {', '.join(gates)}")
        self.gate = gates[gate]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = F.adaptive_avg_pool2d(x, 1)  # [B, C, H, W] -> [B, C, 1, 1]
        scale = self.gate(self.fc2(self.act(self.fc1(scale))))
        return x * scale


class InvertedResidual(nn.Module):
    """MV2 / MobileNet v2 / MobileNet v3 block (see `models.arch.ConvBlock`); `gate` is the
    squeeze-excite's ("sigmoid" for EfficientViT's patch merging)."""

    def __init__(self, in_channels: int, spec: ConvBlock, *, gate: str = "hardsigmoid") -> None:
        super().__init__()
        hidden = spec.hidden_channels
        self.expand = (
            ConvNormAct(in_channels, hidden, 1, act=spec.activation)
            if hidden != in_channels
            else nn.Identity()
        )
        self.depthwise = ConvNormAct(
            hidden, hidden, spec.kernel_size, spec.stride, groups=hidden, act=spec.activation
        )
        self.se = (
            SqueezeExcite(hidden, spec.se_channels, gate) if spec.se_channels else nn.Identity()
        )
        self.project = ConvNormAct(hidden, spec.out_channels, 1, act=None)
        self.residual = spec.stride == 1 and in_channels == spec.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # [B, C_in, H, W] -> [B, hidden, H, W] -> [B, hidden, H/s, W/s] -> [B, C_out, H/s, W/s]
        out = self.project(self.se(self.depthwise(self.expand(x))))
        return x + out if self.residual else out


class SeparableBlock(nn.Sequential):
    """MobileNet v1: depthwise k×k + BN + act, pointwise 1×1 + BN + act."""

    def __init__(self, in_channels: int, spec: ConvBlock) -> None:
        super().__init__(
            ConvNormAct(
                in_channels,
                in_channels,
                spec.kernel_size,
                spec.stride,
                groups=in_channels,
                act=spec.activation,
            ),
            ConvNormAct(in_channels, spec.out_channels, 1, act=spec.activation),
        )


def conv_block(in_channels: int, spec: ConvBlock) -> nn.Module:
    """The module for one `ConvBlock`."""
    if spec.kind == "separable":
        return SeparableBlock(in_channels, spec)
    return InvertedResidual(in_channels, spec)


class AttentionMatmul(nn.Module):
    """softmax(Q·Kᵀ / sqrt(d_key) + bias)·V, the two matrix products of multi-head attention.

    A module of its own so the forward-hook profiler sees it: for q, k of shape
    [B, heads, N_q | N_k, d_key] and v of shape [B, heads, N_k, d_value] it performs
    B·heads·N_q·N_k·(d_key + d_value) multiply-accumulates. `bias` (optional, broadcast to
    [B, heads, N_q, N_k]) is added to the scores (EfficientViT's positional biases).
    """

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        # [B, h, N, d_key] x 2, [B, h, N, d_value] -> [B, h, N, d_value]
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
