"""MobileViT v2 (Mehta & Rastegari, "Separable Self-attention for Mobile Vision
Transformers", 2022): the width-multiplier rule α ∈ [0.5, 2.0] as data, and the MobileViT v2
block with separable linear self-attention and GroupNorm(1) ("LayerNorm2d") pre-norms.

Channel rules of ml-cvnets' `mobilevit_v2` config (timm's presets give the same numbers):
stem make_divisible(clamp(32α, 16, 64), 8, min 16); stage widths 64α (divisor 16), 128α,
256α, 384α, 512α (divisor 8); attention dims 128α, 192α, 256α (divisor 8); FFN
2·d rounded down to a multiple of 16; MV2 expansion 2; transformer depths 2, 4, 3; no fusion
and no head conv (the classifier reads the 512α-wide stage-5 output).

Unlike v1, a feature map whose side is not a multiple of the patch size is resized
(bilinear, align_corners=True) at the *input* of the block and stays resized: the whole block
and every later stage run on the larger grid, as in ml-cvnets and timm.

Imports torch and `models.arch` / `models.layers` only.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vitcube.models.arch import (
    BlockTemplate,
    FamilyTemplate,
    StageTemplate,
    TransformerSpec,
    make_divisible,
)
from vitcube.models.layers import ConvNormAct

MIN_WIDTH, MAX_WIDTH = 0.5, 2.0
PRESET_WIDTHS = {
    "050": 0.5,
    "075": 0.75,
    "100": 1.0,
    "125": 1.25,
    "150": 1.5,
    "175": 1.75,
    "200": 2.0,
}
BASE_CHANNELS = (64, 128, 256, 384, 512)
CHANNEL_DIVISORS = (16, 8, 8, 8, 8)
BASE_TRANSFORMER_DIMS = (128, 192, 256)
MV2_BLOCKS = (1, 2, 1, 1, 1)
STRIDES = (1, 2, 2, 2, 2)
TRANSFORMER_DEPTHS = (2, 4, 3)
EXPAND_RATIO = 2.0
FFN_MULTIPLIER = 2
PATCH_SIZE = 2
CLASSIFIER_DROPOUT = 0.0


def template(width: float, dropped_stages: tuple[int, ...] = ()) -> FamilyTemplate:
    """The baseline of MobileViT v2 at width multiplier `width`, without `dropped_stages`."""
    stem = make_divisible(min(max(32 * width, 16), 64), 8, min_value=16)
    stages = []
    for index in range(5):
        number = index + 1
        if number in dropped_stages:
            continue
        out = make_divisible(BASE_CHANNELS[index] * width, CHANNEL_DIVISORS[index])
        blocks = tuple(
            BlockTemplate(
                kind="inverted_residual",
                out_channels=out,
                stride=STRIDES[index] if i == 0 else 1,
                expand_ratio=EXPAND_RATIO,
            )
            for i in range(MV2_BLOCKS[index])
        )
        transformer = None
        if index >= 2:
            dim = make_divisible(BASE_TRANSFORMER_DIMS[index - 2] * width, 8)
            transformer = TransformerSpec(
                kind="mobilevit_v2",
                dim=dim,
                depth=TRANSFORMER_DEPTHS[index - 2],
                ffn_dim=FFN_MULTIPLIER * dim // 16 * 16,
                num_heads=1,
                patch_size=PATCH_SIZE,
                fusion=False,
            )
        stages.append(StageTemplate(number=number, blocks=blocks, transformer=transformer))
    return FamilyTemplate(stem_channels=stem, stages=tuple(stages))


class LinearSelfAttention(nn.Module):
    """Separable self-attention: one 1×1 conv gives a query score per token and keys and
    values; the context vector is the softmax(score)-weighted sum of keys over tokens; the
    output is ReLU(values) ⊙ context, then a 1×1 projection. Linear in the token count N."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.qkv_proj = nn.Conv2d(dim, 1 + 2 * dim, 1)
        self.out_proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = self.qkv_proj(x)  # [B, d, P, N] -> [B, 1 + 2d, P, N]
        query, key, value = qkv.split([1, self.dim, self.dim], dim=1)
        scores = F.softmax(query, dim=-1)  # [B, 1, P, N]
        context = (key * scores).sum(dim=-1, keepdim=True)  # [B, d, P, 1]
        out = F.relu(value) * context.expand_as(value)  # [B, d, P, N]
        return self.out_proj(out)  # [B, d, P, N]


class LinearTransformerLayer(nn.Module):
    """x + Drop(Attn(GN(x))); x + Drop(FFN(GN(x))), FFN = 1×1 conv-SiLU-1×1 conv, on
    [B, d, P, N]. `dropout` is ml-cvnets' `mitv2.dropout` (0 in its ImageNet recipe)."""

    def __init__(self, dim: int, ffn_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(1, dim)
        self.attn = LinearSelfAttention(dim)
        self.norm2 = nn.GroupNorm(1, dim)
        self.fc1 = nn.Conv2d(dim, ffn_dim, 1)
        self.act = nn.SiLU()
        self.fc2 = nn.Conv2d(ffn_dim, dim, 1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.dropout(self.attn(self.norm1(x)))  # [B, d, P, N]
        return x + self.dropout(self.fc2(self.act(self.fc1(self.norm2(x)))))  # [B, d, P, N]


class MobileViTV2Block(nn.Module):
    """MobileViT v2 block: (resize to a patch multiple), depthwise 3×3, 1×1 to d, unfold to
    [B, d, P, N], separable-attention layers, GroupNorm, fold, 1×1 projection (BN, no act)."""

    def __init__(
        self,
        channels: int,
        dim: int,
        depth: int,
        ffn_dim: int,
        patch_size: int,
        *,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.conv_kxk = ConvNormAct(channels, channels, 3, groups=channels)
        self.conv_1x1 = nn.Conv2d(channels, dim, 1, bias=False)
        self.transformer = nn.Sequential(
            *(LinearTransformerLayer(dim, ffn_dim, dropout) for _ in range(depth))
        )
        self.norm = nn.GroupNorm(1, dim)
        self.conv_proj = ConvNormAct(dim, channels, 1, act=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape  # [B, C, H, W]
        p = self.patch_size
        new_h, new_w = math.ceil(height / p) * p, math.ceil(width / p) * p
        if (new_h, new_w) != (height, width):
            x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=True)
        y = self.conv_1x1(self.conv_kxk(x))  # [B, d, H', W']
        dim, grid_h, grid_w = y.shape[1], new_h // p, new_w // p
        # unfold: [B, d, H', W'] -> [B, d, P, N]
        y = y.reshape(batch, dim, grid_h, p, grid_w, p).permute(0, 1, 3, 5, 2, 4)
        y = y.reshape(batch, dim, p * p, grid_h * grid_w)
        y = self.norm(self.transformer(y))  # [B, d, P, N]
        # fold: [B, d, P, N] -> [B, d, H', W']
        y = y.reshape(batch, dim, p, p, grid_h, grid_w).permute(0, 1, 4, 2, 5, 3)
        y = y.reshape(batch, dim, new_h, new_w)
        return self.conv_proj(y)  # [B, C, H', W']
