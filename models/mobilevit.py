"""MobileViT v1 (Mehta & Rastegari, ICLR 2022): the XXS / XS / S variants as data, and the
MobileViT block with multi-head attention, 2×2 patch unfold/fold and fusion conv.

Faithful to apple/ml-cvnets and timm's byobnet-based `mobilevit`: stem 3×3/2 conv; five
stages (stage 1: MV2, stage 2: three MV2 with the first strided, stages 3–5: one strided
MV2 then a MobileViT block); 1×1 head conv to min(4·C5, 960) channels; global pooling;
dropout; linear classifier. MV2 hidden width is make_divisible(C_in · expansion, 8) with
expansion 2 (XXS) or 4 (XS, S); attention FFNs are 2× the transformer dim; 4 heads.

Stage numbering is ml-cvnets' layer_1..layer_5 (the stem is stage 0), so the TinyImageNet
study's variant that removes the last two MobileViT stages is `dropped_stages=(4, 5)`;
dropping stages also removes the fusion conv of the remaining MobileViT blocks (the study
removes both together) and the head conv is recomputed as min(4·C_last, 960).

Imports torch and `models.arch` / `models.layers` only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vitcube.models.arch import BlockTemplate, FamilyTemplate, StageTemplate, TransformerSpec
from vitcube.models.layers import AttentionMatmul, ConvNormAct


@dataclass(frozen=True)
class MobileViTV1Variant:
    """One size of MobileViT v1: per-stage output widths (stages 1–5), transformer dims
    (stages 3–5) and MV2 expansion."""

    stem_channels: int
    channels: tuple[int, int, int, int, int]
    transformer_dims: tuple[int, int, int]
    expand_ratio: float


VARIANTS: dict[str, MobileViTV1Variant] = {
    "xxs": MobileViTV1Variant(16, (16, 24, 48, 64, 80), (64, 80, 96), expand_ratio=2.0),
    "xs": MobileViTV1Variant(16, (32, 48, 64, 80, 96), (96, 120, 144), expand_ratio=4.0),
    "s": MobileViTV1Variant(16, (32, 64, 96, 128, 160), (144, 192, 240), expand_ratio=4.0),
}
MV2_BLOCKS = (1, 3, 1, 1, 1)
"""MV2 blocks per stage, the first of each stage strided (stage 1 has stride 1)."""
STRIDES = (1, 2, 2, 2, 2)
TRANSFORMER_DEPTHS = (2, 4, 3)
"""Transformer layers of the MobileViT blocks of stages 3, 4, 5."""
FFN_MULTIPLIER = 2
NUM_HEADS = 4
PATCH_SIZE = 2
HEAD_EXPANSION, HEAD_MAX = 4, 960
CLASSIFIER_DROPOUT = 0.1


def template(size: str, dropped_stages: tuple[int, ...] = ()) -> FamilyTemplate:
    """The baseline of MobileViT v1 `size` ("xxs" | "xs" | "s") without `dropped_stages`."""
    variant = VARIANTS[size]
    stages = []
    for index in range(5):
        number = index + 1
        if number in dropped_stages:
            continue
        out = variant.channels[index]
        blocks = tuple(
            BlockTemplate(
                kind="inverted_residual",
                out_channels=out,
                stride=STRIDES[index] if i == 0 else 1,
                expand_ratio=variant.expand_ratio,
            )
            for i in range(MV2_BLOCKS[index])
        )
        transformer = None
        if index >= 2:
            dim = variant.transformer_dims[index - 2]
            transformer = TransformerSpec(
                kind="mobilevit_v1",
                dim=dim,
                depth=TRANSFORMER_DEPTHS[index - 2],
                ffn_dim=FFN_MULTIPLIER * dim,
                num_heads=NUM_HEADS,
                patch_size=PATCH_SIZE,
                fusion=not dropped_stages,
            )
        stages.append(StageTemplate(number=number, blocks=blocks, transformer=transformer))
    last = stages[-1].blocks[-1].out_channels
    return FamilyTemplate(
        stem_channels=variant.stem_channels,
        stages=tuple(stages),
        head_channels=min(HEAD_EXPANSION * last, HEAD_MAX),
    )


class TransformerLayer(nn.Module):
    """Pre-norm transformer layer: x + Drop(MHA(LN(x))); x + Drop(FFN(LN(x))), FFN =
    Linear-SiLU-Linear. `dropout` is ml-cvnets' `mit.dropout` (at the same two places); it has
    no parameters and no MACs."""

    def __init__(self, dim: int, ffn_dim: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.attend = AttentionMatmul()
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, ffn_dim)
        self.act = nn.SiLU()
        self.fc2 = nn.Linear(ffn_dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape  # [B*P, N, d]
        qkv = self.qkv(self.norm1(x))  # [B*P, N, 3d]
        qkv = qkv.reshape(batch, tokens, 3, self.num_heads, dim // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x [B*P, h, N, d/h]
        attended = self.attend(q, k, v).transpose(1, 2).reshape(batch, tokens, dim)
        x = x + self.dropout(self.proj(attended))  # [B*P, N, d]
        return x + self.dropout(self.fc2(self.act(self.fc1(self.norm2(x)))))  # [B*P, N, d]


class MobileViTBlock(nn.Module):
    """MobileViT v1 block: local 3×3 conv, 1×1 to d, unfold to patches, transformer, fold,
    1×1 back to C, and fusion 3×3 conv over [input, output] (when `fusion`).

    A feature map whose side is not a multiple of the patch size is resized (bilinear) up to
    the next multiple before unfolding and back after folding, as ml-cvnets and timm do: the
    transformer runs on the resized grid, the convolutions on the original one.
    """

    def __init__(
        self,
        channels: int,
        dim: int,
        depth: int,
        ffn_dim: int,
        num_heads: int,
        patch_size: int,
        fusion: bool,
        *,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.conv_kxk = ConvNormAct(channels, channels, 3)
        self.conv_1x1 = nn.Conv2d(channels, dim, 1, bias=False)
        self.transformer = nn.Sequential(
            *(TransformerLayer(dim, ffn_dim, num_heads, dropout) for _ in range(depth))
        )
        self.norm = nn.LayerNorm(dim)
        self.conv_proj = ConvNormAct(dim, channels, 1)
        self.conv_fusion = ConvNormAct(2 * channels, channels, 3) if fusion else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        batch, _, height, width = x.shape  # [B, C, H, W]
        y = self.conv_1x1(self.conv_kxk(x))  # [B, d, H, W]
        p = self.patch_size
        new_h, new_w = math.ceil(height / p) * p, math.ceil(width / p) * p
        resized = (new_h, new_w) != (height, width)
        if resized:
            y = F.interpolate(y, size=(new_h, new_w), mode="bilinear", align_corners=False)
        dim, grid_h, grid_w = y.shape[1], new_h // p, new_w // p
        # unfold: [B, d, H', W'] -> [B*P, N, d] with P = p*p pixels per patch, N patches
        y = y.reshape(batch, dim, grid_h, p, grid_w, p).permute(0, 3, 5, 2, 4, 1)
        y = y.reshape(batch * p * p, grid_h * grid_w, dim)
        y = self.norm(self.transformer(y))  # [B*P, N, d]
        # fold: [B*P, N, d] -> [B, d, H', W']
        y = y.reshape(batch, p, p, grid_h, grid_w, dim).permute(0, 5, 3, 1, 4, 2)
        y = y.reshape(batch, dim, new_h, new_w)
        if resized:
            y = F.interpolate(y, size=(height, width), mode="bilinear", align_corners=False)
        y = self.conv_proj(y)  # [B, C, H, W]
        if self.conv_fusion is not None:
            y = self.conv_fusion(torch.cat((shortcut, y), dim=1))  # [B, 2C, H, W] -> [B, C, H, W]
        return y
