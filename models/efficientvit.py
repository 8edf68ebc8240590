"""EfficientViT (Liu et al., "EfficientViT: Memory Efficient Vision Transformer with Cascaded
Group Attention", CVPR 2023): the M0–M5 variants as data, and its blocks — the dw-conv + FFN
residual pair, cascaded group attention in local windows, the "sandwich" block and the
subsample block.

Layout, as microsoft/Cream's classification code builds it (written afresh here): the stem
(3×3/2 conv to C₁/8, ReLU) and stage 1's three 3×3/2 convs (to C₁/4, C₁/2, C₁; ReLU after all
but the last) form the overlapping patch embedding to 1/16 of the input; stage 1 then runs
`depth₁` EfficientViT blocks. Stages 2 and 3 start with the subsample block — a dw-conv + FFN
pair at the old width, an inverted-residual "patch merging" (1×1 to 4·C, ReLU, 3×3/2 depthwise,
ReLU, squeeze-excite with a sigmoid gate, 1×1 to the new width; no residual), a dw-conv + FFN
pair at the new width — then their EfficientViT blocks. An EfficientViT block is a sandwich of
residuals: 3×3 depthwise conv (BN, no activation), FFN (1×1 to 2·C, ReLU, 1×1 back), cascaded
group attention, depthwise conv, FFN. Every convolution is followed by BatchNorm (no
LayerNorm anywhere); the head is global pooling, BatchNorm1d and a linear classifier (the
distillation head is left out).

Cascaded group attention on a [B, C, H, W] map with h heads: the map is cut into windows of
min(7, H) pixels a side (zero-padded at the bottom/right to a multiple of the window, the
padding cropped afterwards, as the official code does); in each window head i takes the i-th
C/h-channel split of the input plus head i−1's output, a 1×1 conv gives its query and key
(key_dim = 16 channels each) and value (C/h channels), a depthwise k_i×k_i conv refines the
query, softmax(q·kᵀ/√16 + b_i)·v is the head's output (b_i a learned bias per |Δy|, |Δx|
offset in the window); ReLU and a 1×1 conv project the concatenated heads back to C.

Published variants (the official `build.py`; widths C per stage, depths, heads; key dim 16 and
window 7 everywhere): the per-head query kernels are [5, 5, 5, 5] for M0 and M3 and
[7, 5, 3, 3] for M1, M2, M4 and M5 (the paper's Table 7 lists only widths, depths and heads).
At 224 px and 1000 classes the parameter counts are 2,349,436 / 2,980,560 / 4,187,554 /
6,900,722 / 8,804,228 / 12,473,772 — the official code's to the unit (with its weights loaded,
this network's logits equal the official model's); the paper rounds them to 2.3 / 3.0 / 4.2 /
6.9 / 8.8 / 12.4 M, so M0 reads 2.1 % above the paper's rounded figure and the others within
1 %. The attention biases make the count depend a little on the resolution (one per head and
window offset, min(7, side)² offsets).

MACs: `count_macs` counts every convolution and linear layer and both attention products
(q·kᵀ: N²·16 and A·v: N²·C/h per head and window of N tokens), all on the padded windows:
79.2 / 167.1 / 201.0 / 262.7 / 299.3 / 521.6 M at 224 px against the paper's 79 / 167 / 201 /
263 / 299 / 522 M "FLOPs", which are the same multiply-accumulates (within 0.25 %; BN, softmax,
biases, ReLU and residual additions count zero in both). At 224 px no window is padded
(14 = 2·7, and the 7×7 and 4×4 maps are one window each); at other resolutions the padded
tokens are counted, as they run.

Sizes: the network has six stride-2 layers, so the smallest input is 64 px (feature maps 4, 2
and 1 a side); with stage 3 dropped (`dropped_stages=(3,)`, five stride-2 layers) it is 32 px.
The attention biases are sized for the windows of the resolution the network is built for, so
a built network takes only that resolution. Scaling: d_m multiplies the EfficientViT blocks of
each stage, w every width (a stage width stays a multiple of 8·heads so the heads split it
evenly), r the resolution; d_i must be 1 (EfficientViT has no MV2-style blocks to repeat).
BatchNorm in training mode needs more than one value per channel, so a 64 px network, whose
last stage is 1×1, cannot train on a batch of one.

Imports torch and `models.arch` / `models.layers` only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vitcube.models.arch import (
    BlockTemplate,
    ConvBlock,
    FamilyTemplate,
    StageTemplate,
    TransformerSpec,
)
from vitcube.models.layers import AttentionMatmul, ConvNormAct, InvertedResidual

DEFAULT_RESOLUTION = 224
KEY_DIM = 16
WINDOW_SIZE = 7
FFN_RATIO = 2
MERGE_EXPANSION = 4
EMBED_DOWNSAMPLINGS = 4
"""The patch embedding's stride-2 convs (stem + stage 1): features start at 1/16."""
BLOCK_KINDS = ("conv", "dw_ffn", "patch_merging")
"""The `ConvBlock` kinds this family adds (built by `conv_block` below)."""


@dataclass(frozen=True)
class EfficientViTVariant:
    """One EfficientViT size: per-stage widths, EfficientViT blocks and heads, and the
    depthwise kernel of each head's query conv (head i uses query_kernels[i])."""

    embed_dims: tuple[int, int, int]
    depths: tuple[int, int, int]
    num_heads: tuple[int, int, int]
    query_kernels: tuple[int, int, int, int]


VARIANTS: dict[str, EfficientViTVariant] = {
    "m0": EfficientViTVariant((64, 128, 192), (1, 2, 3), (4, 4, 4), (5, 5, 5, 5)),
    "m1": EfficientViTVariant((128, 144, 192), (1, 2, 3), (2, 3, 3), (7, 5, 3, 3)),
    "m2": EfficientViTVariant((128, 192, 224), (1, 2, 3), (4, 3, 2), (7, 5, 3, 3)),
    "m3": EfficientViTVariant((128, 240, 320), (1, 2, 3), (4, 3, 4), (5, 5, 5, 5)),
    "m4": EfficientViTVariant((128, 256, 384), (1, 2, 3), (4, 4, 4), (7, 5, 3, 3)),
    "m5": EfficientViTVariant((192, 288, 384), (1, 3, 4), (3, 3, 4), (7, 5, 3, 3)),
}


def template(size: str, dropped_stages: tuple[int, ...] = ()) -> FamilyTemplate:
    """The baseline of EfficientViT `size` ("m0" … "m5") without `dropped_stages` (only
    trailing stages can go: each subsample block starts at the previous stage's width)."""
    variant = VARIANTS[size]
    stem = variant.embed_dims[0] // 8
    stages = []
    for index, (dim, depth, heads) in enumerate(
        zip(variant.embed_dims, variant.depths, variant.num_heads, strict=True)
    ):
        number = index + 1
        if number in dropped_stages:
            continue
        divisor = 8 * heads  # the stage width splits into `heads` value dims, multiples of 8
        if index == 0:  # the patch embedding's last three convs
            blocks: tuple[BlockTemplate, ...] = (
                BlockTemplate("conv", dim // 4, stride=2, activation="relu"),
                BlockTemplate("conv", dim // 2, stride=2, activation="relu"),
                BlockTemplate("conv", dim, stride=2, activation="none", divisor=divisor),
            )
        else:  # the subsample block from the previous width
            previous = variant.embed_dims[index - 1]
            before = 8 * variant.num_heads[index - 1]
            blocks = (
                _dw_ffn(previous, divisor=before),
                BlockTemplate(
                    "patch_merging",
                    dim,
                    stride=2,
                    expand_ratio=MERGE_EXPANSION,
                    se=True,
                    activation="relu",
                    divisor=divisor,
                ),
                _dw_ffn(dim, divisor=divisor),
            )
        transformer = TransformerSpec(
            kind="efficientvit",
            dim=dim,
            depth=depth,
            ffn_dim=FFN_RATIO * dim,
            num_heads=heads,
            patch_size=1,
            fusion=False,
            key_dim=KEY_DIM,
            window_size=WINDOW_SIZE,
            query_kernels=variant.query_kernels[:heads],
        )
        stages.append(StageTemplate(number=number, blocks=blocks, transformer=transformer))
    return FamilyTemplate(stem_channels=stem, stages=tuple(stages))


def _dw_ffn(channels: int, *, divisor: int) -> BlockTemplate:
    return BlockTemplate(
        "dw_ffn",
        channels,
        expand_ratio=FFN_RATIO,
        activation="relu",
        divisor=divisor,
    )


# --------------------------------------------------------------------------------------
# Modules
# --------------------------------------------------------------------------------------


class FFN(nn.Module):
    """1×1 conv + BN + ReLU to `hidden`, 1×1 conv + BN back."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.expand = ConvNormAct(channels, hidden, 1, act="relu")
        self.project = ConvNormAct(hidden, channels, 1, act=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.expand(x))  # [B, C, H, W] -> [B, hidden, H, W] -> [B, C, H, W]


class Residual(nn.Module):
    """x + Drop(branch(x))."""

    def __init__(self, branch: nn.Module, dropout: float = 0.0) -> None:
        super().__init__()
        self.branch = branch
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.dropout(self.branch(x))


class DepthwiseFFN(nn.Sequential):
    """The subsample block's halves: x + DW(x) (3×3 depthwise + BN), then x + FFN(x)."""

    def __init__(self, channels: int, hidden: int, kernel_size: int = 3) -> None:
        super().__init__(
            Residual(ConvNormAct(channels, channels, kernel_size, groups=channels, act=None)),
            Residual(FFN(channels, hidden)),
        )


class PlainConv(ConvNormAct):
    """A patch-embedding conv: k×k conv + BN + activation ("none": no activation)."""

    def __init__(self, in_channels: int, spec: ConvBlock) -> None:
        act = None if spec.activation == "none" else spec.activation
        super().__init__(in_channels, spec.out_channels, spec.kernel_size, spec.stride, act=act)


def conv_block(in_channels: int, spec: ConvBlock) -> nn.Module:
    """The module for one of this family's `ConvBlock` kinds (`BLOCK_KINDS`)."""
    if spec.kind == "conv":
        return PlainConv(in_channels, spec)
    if spec.kind == "dw_ffn":
        return DepthwiseFFN(in_channels, spec.hidden_channels, spec.kernel_size)
    if spec.kind == "patch_merging":
        return InvertedResidual(in_channels, spec, gate="sigmoid")
    raise ValueError(f"not an EfficientViT block kind: {spec.kind!r}")


class CascadedGroupAttention(nn.Module):
    """Cascaded group attention on windows [B', C, w, w] (see the module docstring).

    Head i: input split_i (+ head i−1's output), 1×1 conv + BN to q, k (key_dim each) and v
    (C/h), depthwise conv + BN on q, softmax(q·kᵀ/√key_dim + bias_i)·v. Then ReLU, 1×1 conv +
    BN over the concatenated heads back to C.
    """

    def __init__(
        self, dim: int, key_dim: int, num_heads: int, query_kernels: tuple[int, ...], window: int
    ) -> None:
        super().__init__()
        self.key_dim = key_dim
        self.head_dim = dim // num_heads
        qkv_dim = 2 * key_dim + self.head_dim
        self.qkvs = nn.ModuleList(
            ConvNormAct(self.head_dim, qkv_dim, 1, act=None) for _ in range(num_heads)
        )
        self.query_convs = nn.ModuleList(
            ConvNormAct(key_dim, key_dim, k, groups=key_dim, act=None) for k in query_kernels
        )
        self.proj_act = nn.ReLU()
        self.proj = ConvNormAct(self.head_dim * num_heads, dim, 1, act=None)
        self.matmul = AttentionMatmul()
        # one learned bias per head and per window offset (|Δy|, |Δx|): index |Δy|·w + |Δx|
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, window * window))
        rows = torch.arange(window).repeat_interleave(window)  # token n = (n // w, n % w)
        cols = torch.arange(window).repeat(window)
        dy, dx = (rows[:, None] - rows[None, :]).abs(), (cols[:, None] - cols[None, :]).abs()
        self.bias_index: torch.Tensor
        self.register_buffer("bias_index", dy * window + dx, persistent=False)  # [N, N]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        windows, _, height, width = x.shape  # [B', C, w, w]
        bias = self.attention_biases[:, self.bias_index]  # [h, N, N]
        splits = x.chunk(len(self.qkvs), dim=1)  # h × [B', C/h, w, w]
        outputs = []
        feat = splits[0]
        for i, (qkv, query_conv) in enumerate(zip(self.qkvs, self.query_convs, strict=True)):
            if i > 0:  # the cascade: the previous head's output joins this head's input
                feat = feat + splits[i]
            q, k, v = qkv(feat).split([self.key_dim, self.key_dim, self.head_dim], dim=1)
            q = query_conv(q)
            # [B', c, w, w] -> [B', 1, N, c]
            q, k, v = (t.flatten(2).transpose(1, 2).unsqueeze(1) for t in (q, k, v))
            out = self.matmul(q, k, v, bias[i])  # [B', 1, N, C/h]
            feat = out.squeeze(1).transpose(1, 2).reshape(windows, self.head_dim, height, width)
            outputs.append(feat)
        return self.proj(self.proj_act(torch.cat(outputs, dim=1)))  # [B', C, w, w]


class LocalWindowAttention(nn.Module):
    """Cascaded group attention in windows of min(window_size, feature_size) pixels, with the
    map zero-padded at the bottom and right to a multiple of the window and cropped back."""

    def __init__(
        self,
        dim: int,
        key_dim: int,
        num_heads: int,
        query_kernels: tuple[int, ...],
        window_size: int,
        feature_size: int,
    ) -> None:
        super().__init__()
        self.feature_size = feature_size
        self.window = min(window_size, feature_size)
        self.attn = CascadedGroupAttention(dim, key_dim, num_heads, query_kernels, self.window)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape  # [B, C, H, W]
        if (height, width) != (self.feature_size, self.feature_size):
            raise ValueError(
                f"this EfficientViT stage was built for {self.feature_size}×{self.feature_size} "
                f"feature maps (its attention biases fit those windows), got {height}×{width}; "
                "build the network for the input resolution"
            )
        w = self.window
        pad_bottom, pad_right = -height % w, -width % w
        if pad_bottom or pad_right:
            x = F.pad(x, (0, pad_right, 0, pad_bottom))
        rows, cols = (height + pad_bottom) // w, (width + pad_right) // w
        # [B, C, rows·w, cols·w] -> [B·rows·cols, C, w, w]
        x = x.reshape(batch, channels, rows, w, cols, w).permute(0, 2, 4, 1, 3, 5)
        x = self.attn(x.reshape(batch * rows * cols, channels, w, w))
        # [B·rows·cols, C, w, w] -> [B, C, rows·w, cols·w] -> [B, C, H, W]
        x = x.reshape(batch, rows, cols, channels, w, w).permute(0, 3, 1, 4, 2, 5)
        x = x.reshape(batch, channels, rows * w, cols * w)
        return x[:, :, :height, :width]


class EfficientViTBlock(nn.Module):
    """The sandwich: residual DW, FFN, attention, DW, FFN on [B, C, H, W]."""

    def __init__(self, spec: TransformerSpec, feature_size: int, dropout: float = 0.0) -> None:
        super().__init__()
        dim = spec.dim

        self.dw0 = Residual(ConvNormAct(dim, dim, 3, groups=dim, act=None))
        self.ffn0 = Residual(FFN(dim, spec.ffn_dim), dropout)
        self.mixer = Residual(
            LocalWindowAttention(
                dim,
                spec.key_dim,
                spec.num_heads,
                spec.query_kernels,
                spec.window_size,
                feature_size,
            ),
            dropout,
        )
        self.dw1 = Residual(ConvNormAct(dim, dim, 3, groups=dim, act=None))
        self.ffn1 = Residual(FFN(dim, spec.ffn_dim), dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ffn1(self.dw1(self.mixer(self.ffn0(self.dw0(x)))))  # [B, C, H, W]


def efficientvit_blocks(
    spec: TransformerSpec, feature_size: int, *, dropout: float = 0.0
) -> nn.Sequential:
    """`spec.depth` EfficientViT blocks for feature maps of `feature_size` pixels a side;
    `dropout` acts on the attention and FFN branches (training only)."""
    return nn.Sequential(
        *(EfficientViTBlock(spec, feature_size, dropout) for _ in range(spec.depth))
    )


@torch.no_grad()
def zero_init_residual_norms(model: nn.Module) -> None:
    """The official initialisation of the BN scales that end residual branches: zero for every
    FFN's last BN, for the attention projection's and for the EfficientViT blocks' depthwise
    convs (the subsample block's depthwise convs keep scale 1), so each block starts near the
    identity."""
    for module in model.modules():
        convs: list[ConvNormAct] = []
        if isinstance(module, FFN):
            convs = [module.project]
        elif isinstance(module, CascadedGroupAttention):
            convs = [module.proj]
        elif isinstance(module, EfficientViTBlock):
            convs = [
                r.branch for r in (module.dw0, module.dw1) if isinstance(r.branch, ConvNormAct)
            ]
        for conv in convs:
            nn.init.zeros_(conv.norm.weight)
