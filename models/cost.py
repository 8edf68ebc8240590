"""The analytic cost model: `count_macs` and `count_params` of an `Arch` by arithmetic alone.

MACs are for one image: every convolution (k²·C_in·C_out·H_out·W_out / groups), every linear
layer (in·out per token), and the two matrix products of MobileViT v1 and EfficientViT
attention (Q·Kᵀ and A·V: N²·d each per patch position for v1; N²·key_dim and N²·C/heads per
head and window for EfficientViT, whose attention convs also run on the zero-padded windows).
Bias additions, normalisations, activations, pooling, resizing, residual additions and the
elementwise products of v2's separable attention (softmax-weighted key sum, ReLU(V)⊙context)
count zero. The walk below follows
`models.network` layer for layer, including the grid resize of MobileViT blocks (v1: the
transformer runs on the patch-multiple grid, convolutions on the original; v2: the block and
everything after it run on the enlarged grid); tests check both counts against a forward-hook
count and `sum(p.numel())` of the built network.

Pure Python: must not import torch.
"""

from __future__ import annotations

from vitcube.models.arch import Arch, TransformerSpec, conv_out
from vitcube.models.config import NORMED_CLASSIFIER_FAMILIES, ArchConfig


def count_macs(cfg_or_arch: ArchConfig | Arch) -> int:
    """Multiply-accumulates of one forward pass of one image (see the module docstring)."""
    return _walk(_arch(cfg_or_arch))[0]


def count_params(cfg_or_arch: ArchConfig | Arch) -> int:
    """Trainable parameters; equals `sum(p.numel() for p in build_model(a).parameters())`."""
    return _walk(_arch(cfg_or_arch))[1]


def _arch(cfg_or_arch: ArchConfig | Arch) -> Arch:
    if isinstance(cfg_or_arch, ArchConfig):
        return cfg_or_arch.baseline()
    if isinstance(cfg_or_arch, Arch):
        return cfg_or_arch
    raise ValueError(f"expected an ArchConfig or Arch, got {type(cfg_or_arch).__name__}")


def _walk(arch: Arch) -> tuple[int, int]:
    # conv+BN: weights k²·cin·cout/groups, BN 2·cout; the MACs are weights × output pixels
    size = conv_out(arch.resolution, 3, 2)
    channels = arch.stem_channels
    macs = 27 * channels * size * size
    params = 27 * channels + 2 * channels
    taps: list[tuple[int, int]] = []  # (channels, side) of every stage output
    for stage in arch.stages:
        for block in stage.blocks:
            k2 = block.kernel_size * block.kernel_size
            out = block.out_channels
            if block.kind == "conv":
                after = conv_out(size, block.kernel_size, block.stride)
                weights = k2 * channels * out
                macs += weights * after * after
                params += weights + 2 * out
            elif block.kind == "dw_ffn":  # x + DW(x), x + FFN(x) at the block's own width
                after, hidden = size, block.hidden_channels
                macs += (k2 * channels + 2 * channels * hidden) * size * size
                params += k2 * channels + 2 * channels  # depthwise + BN
                params += 2 * channels * hidden + 2 * hidden + 2 * out  # FFN + BNs
            elif block.kind == "separable":
                after = conv_out(size, block.kernel_size, block.stride)
                area = after * after
                macs += k2 * channels * area + channels * out * area
                params += k2 * channels + 2 * channels + channels * out + 2 * out
            else:
                hidden = block.hidden_channels
                if hidden != channels:  # 1×1 expansion
                    macs += channels * hidden * size * size
                    params += channels * hidden + 2 * hidden
                after = conv_out(size, block.kernel_size, block.stride)
                area = after * after
                macs += k2 * hidden * area  # depthwise
                params += k2 * hidden + 2 * hidden
                se = block.se_channels
                if se:  # two 1×1 convs with bias on the pooled [hidden, 1, 1] vector
                    macs += 2 * hidden * se
                    params += 2 * hidden * se + se + hidden
                macs += hidden * out * area  # linear projection
                params += hidden * out + 2 * out
            size, channels = after, out
        t = stage.transformer
        if t is not None and t.kind == "efficientvit":
            block_macs, block_params = _efficientvit_block(t, size)
            macs += t.depth * block_macs
            params += t.depth * block_params
        elif t is not None:
            c, d, f, depth = channels, t.dim, t.ffn_dim, t.depth
            p = t.patch_size
            grid = -(-size // p)  # patches per side after resizing to a multiple of p
            side = grid * p  # the resized side
            if t.kind == "mobilevit_v1":
                area, tokens, n = size * size, side * side, grid * grid
                macs += 9 * c * c * area + c * d * area  # conv_kxk, conv_1x1
                params += 9 * c * c + 2 * c + c * d
                # per layer: qkv, Q·Kᵀ + A·V (P·N²·d each, P·N = tokens), proj, fc1, fc2
                layer_macs = tokens * (3 * d * d + 2 * n * d + d * d + 2 * d * f)
                layer_params = 4 * d * d + 4 * d + 2 * d * f + f + d + 4 * d
                macs += depth * layer_macs
                params += depth * layer_params + 2 * d  # + final LayerNorm
                macs += d * c * area  # conv_proj at the original size
                params += d * c + 2 * c
                if t.fusion:
                    macs += 9 * 2 * c * c * area
                    params += 18 * c * c + 2 * c
            else:
                size = side  # v2 resizes its input and keeps the larger grid
                tokens = side * side
                macs += 9 * c * tokens + c * d * tokens  # depthwise 3×3, conv_1x1
                params += 9 * c + 2 * c + c * d
                # per layer: qkv conv d→1+2d, out_proj d→d, ffn d→f→d (1×1 convs with bias)
                layer_macs = tokens * (d * (1 + 2 * d) + d * d + 2 * d * f)
                layer_params = d * (1 + 2 * d) + 1 + 2 * d + d * d + d + 2 * d * f + f + d + 4 * d
                macs += depth * layer_macs
                params += depth * layer_params + 2 * d  # + final GroupNorm
                macs += d * c * tokens  # conv_proj
                params += d * c + 2 * c
        taps.append((channels, size))
    first_tap = len(taps) - len(arch.exshortcut_channels)
    for (c, side), extra in zip(taps[first_tap:], arch.exshortcut_channels, strict=True):
        macs += c * extra * side * side
        params += c * extra + 2 * extra
    features = channels
    if arch.head_channels:
        macs += channels * arch.head_channels * size * size
        params += channels * arch.head_channels + 2 * arch.head_channels
        features = arch.head_channels
    features += sum(arch.exshortcut_channels)
    if arch.classifier_hidden:
        macs += features * arch.classifier_hidden
        params += features * arch.classifier_hidden + arch.classifier_hidden
        features = arch.classifier_hidden
    if arch.family in NORMED_CLASSIFIER_FAMILIES:  # BatchNorm1d: scale and shift
        params += 2 * features
    macs += features * arch.num_classes
    params += features * arch.num_classes + arch.num_classes
    return macs, params


def _efficientvit_block(t: TransformerSpec, size: int) -> tuple[int, int]:
    """(MACs, params) of one EfficientViT block on a `size`×`size` map of width t.dim."""
    c, f, heads, kd = t.dim, t.ffn_dim, t.num_heads, t.key_dim
    dv = c // heads  # each head's input split and value width
    area = size * size
    # dw0, ffn0, dw1, ffn1: 3×3 depthwise + BN, 1×1 c→f + BN, 1×1 f→c + BN
    macs = 2 * (9 * c + 2 * c * f) * area
    params = 2 * (9 * c + 2 * c + 2 * c * f + 2 * f + 2 * c)
    window = min(t.window_size, size)
    side = -(-size // window) * window  # padded to whole windows
    tokens, n = side * side, window * window
    qkv = 2 * kd + dv
    for k in t.query_kernels:  # per head: qkv 1×1, query depthwise k×k, Q·Kᵀ, A·V
        macs += tokens * (dv * qkv + k * k * kd + n * kd + n * dv)
        params += dv * qkv + 2 * qkv + k * k * kd + 2 * kd
    macs += tokens * dv * heads * c  # projection over the concatenated heads
    params += dv * heads * c + 2 * c + heads * n  # + one bias per head and window offset
    return macs, params
