"""`build_model`: turn an `Arch` (or an `ArchConfig`, built at its baseline) into a PyTorch
module taking [B, 3, arch.resolution, arch.resolution] images and returning [B, classes]
logits. One generic network — stem, stages, head — reads every family's `Arch`; the
family-specific parts (activations of stem and head, classifier dropout, EfficientViT's
BatchNorm1d before the classifier) are in `FAMILY_HEADS`. Transformer dropout is a training
choice, not part of the architecture: it is a keyword of `build_model` and changes neither
the parameters nor the MACs.

Weights start as in ml-cvnets' MobileViT configs (`conv_init: kaiming_normal`, `linear_init:
trunc_normal`, std 0.02), for every family: `init_weights`; EfficientViT then zeroes the BN
scales that end its residual branches, as its official code does. `fuse` folds every
BatchNorm into the conv or linear layer next to it for inference.

Imports torch and `models` modules only.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from vitcube.models import efficientvit, mobilevit, mobilevit_v2
from vitcube.models.arch import Arch, ConvBlock, conv_out
from vitcube.models.config import NORMED_CLASSIFIER_FAMILIES, ArchConfig
from vitcube.models.layers import ConvNormAct, activation, conv_block
from vitcube.models.mobilevit import MobileViTBlock
from vitcube.models.mobilevit_v2 import MobileViTV2Block


@dataclass(frozen=True)
class FamilyHead:
    """Per-family details an `Arch` leaves implicit: stem/head activations, dropout, and
    whether a BatchNorm1d normalises the pooled features before the classifier."""

    stem_activation: str
    head_activation: str
    dropout: float
    classifier_norm: bool = False


FAMILY_HEADS = {
    "mobilevit_v1": FamilyHead("silu", "silu", mobilevit.CLASSIFIER_DROPOUT),
    "mobilevit_v2": FamilyHead("silu", "silu", mobilevit_v2.CLASSIFIER_DROPOUT),
    "mobilenet_v1": FamilyHead("relu", "relu", 0.0),
    "mobilenet_v2": FamilyHead("relu6", "relu6", 0.2),
    "mobilenet_v3_large": FamilyHead("hardswish", "hardswish", 0.2),
    "mobilenet_v3_small": FamilyHead("hardswish", "hardswish", 0.2),
    "efficientvit": FamilyHead("relu", "relu", 0.0, classifier_norm=True),
}
assert {f for f, h in FAMILY_HEADS.items() if h.classifier_norm} == set(NORMED_CLASSIFIER_FAMILIES)


class Network(nn.Module):
    """Stem → stages → [head 1×1 conv] → global average pool → [ExMobileViT shortcuts
    concatenated] → [hidden linear] → [BatchNorm1d] → dropout → linear classifier."""

    def __init__(self, arch: Arch, *, transformer_dropout: float = 0.0) -> None:
        super().__init__()
        self.arch = arch
        family = FAMILY_HEADS[arch.family]
        self.stem = ConvNormAct(3, arch.stem_channels, 3, 2, act=family.stem_activation)
        channels = arch.stem_channels
        size = conv_out(arch.resolution, 3, 2)  # feature side: EfficientViT sizes its windows
        stages: list[nn.Module] = []
        for stage in arch.stages:
            layers: list[nn.Module] = []
            for block in stage.blocks:
                layers.append(_block(channels, block))
                channels = block.out_channels
                size = conv_out(size, block.kernel_size, block.stride)
            t = stage.transformer
            if t is not None and t.kind == "efficientvit":
                blocks = efficientvit.efficientvit_blocks(t, size, dropout=transformer_dropout)
                layers.append(blocks)
            elif t is not None and t.kind == "mobilevit_v1":
                layers.append(
                    MobileViTBlock(
                        channels,
                        t.dim,
                        t.depth,
                        t.ffn_dim,
                        t.num_heads,
                        t.patch_size,
                        t.fusion,
                        dropout=transformer_dropout,
                    )
                )
            elif t is not None:
                size = -(-size // t.patch_size) * t.patch_size  # v2 keeps the resized grid
                layers.append(
                    MobileViTV2Block(
                        channels,
                        t.dim,
                        t.depth,
                        t.ffn_dim,
                        t.patch_size,
                        dropout=transformer_dropout,
                    )
                )
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)
        # ExMobileViT: 1×1 conv + BN + SiLU on each tapped stage output, then pooled
        tapped = arch.stages[len(arch.stages) - len(arch.exshortcut_channels) :]
        self.shortcuts = nn.ModuleList(
            ConvNormAct(stage.out_channels, extra, 1, act=family.head_activation)
            for stage, extra in zip(tapped, arch.exshortcut_channels, strict=True)
        )
        self.head_conv: nn.Module = nn.Identity()
        if arch.head_channels:
            self.head_conv = ConvNormAct(
                channels, arch.head_channels, 1, act=family.head_activation
            )
            channels = arch.head_channels
        features = channels + sum(arch.exshortcut_channels)
        hidden: list[nn.Module] = []
        if arch.classifier_hidden:
            hidden = [
                nn.Linear(features, arch.classifier_hidden),
                activation(family.head_activation),
            ]
            features = arch.classifier_hidden
        norm: list[nn.Module] = [nn.BatchNorm1d(features)] if family.classifier_norm else []
        self.classifier = nn.Sequential(
            *hidden, *norm, nn.Dropout(family.dropout), nn.Linear(features, arch.num_classes)
        )
        init_weights(self)
        if arch.family == "efficientvit":
            efficientvit.zero_init_residual_norms(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)  # [B, 3, R, R] -> [B, C0, R/2, R/2]
        outputs = []
        for stage in self.stages:
            x = stage(x)  # [B, C_i, H_i, W_i]
            outputs.append(x)
        pooled = [self.head_conv(x).mean(dim=(2, 3))]  # [B, C_head]
        first_tap = len(outputs) - len(self.shortcuts)
        for conv, tap in zip(self.shortcuts, outputs[first_tap:], strict=True):
            pooled.append(conv(tap).mean(dim=(2, 3)))  # [B, E_i]
        return self.classifier(torch.cat(pooled, dim=1))  # [B, C_head + ΣE_i] -> [B, classes]


def _block(in_channels: int, spec: ConvBlock) -> nn.Module:
    if spec.kind in efficientvit.BLOCK_KINDS:
        return efficientvit.conv_block(in_channels, spec)
    return conv_block(in_channels, spec)


LINEAR_INIT_STD = 0.02


@torch.no_grad()
def init_weights(model: nn.Module) -> None:
    """ml-cvnets' initialisation: every convolution kaiming-normal with fan_out (gain sqrt 2),
    every linear layer truncated-normal with std 0.02, every bias zero, every norm scale one and
    shift zero. The truncation bounds are ±2 (absolute, as ml-cvnets' and timm's
    `trunc_normal_(std=0.02)` calls leave them), so the draw is a plain N(0, 0.02²) in effect.
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=LINEAR_INIT_STD, a=-2.0, b=2.0)
        elif isinstance(module, (nn.BatchNorm2d, nn.BatchNorm1d, nn.LayerNorm, nn.GroupNorm)):
            if module.weight is not None:
                nn.init.ones_(module.weight)
        else:
            continue
        if module.bias is not None:
            nn.init.zeros_(module.bias)


@torch.no_grad()
def fuse(model: Network) -> Network:
    """An inference copy of `model` (eval mode) with every BatchNorm folded into the layer before
    it: each conv + BN of a `ConvNormAct` becomes one conv with a bias, and EfficientViT's
    classifier BatchNorm1d folds into the linear classifier. Logits equal the eval-mode model's
    up to float rounding; MACs are unchanged, the parameters are no longer `count_params`'s."""
    fused = copy.deepcopy(model).eval()
    for module in fused.modules():
        if isinstance(module, ConvNormAct):
            conv, norm = module[0], module.norm
            assert isinstance(conv, nn.Conv2d)
            scale, shift = _norm_affine(norm)  # [C_out] each
            folded = nn.Conv2d(
                conv.in_channels,
                conv.out_channels,
                conv.kernel_size,  # type: ignore[arg-type]
                conv.stride,  # type: ignore[arg-type]
                conv.padding,  # type: ignore[arg-type]
                groups=conv.groups,
                bias=True,
            ).to(conv.weight)
            folded.weight.copy_(conv.weight * scale[:, None, None, None])
            bias = conv.bias if conv.bias is not None else torch.zeros_like(scale)
            assert folded.bias is not None
            folded.bias.copy_(shift + bias * scale)
            module[0], module[1] = folded, nn.Identity()
    layers = list(fused.classifier)
    for i, layer in enumerate(layers):
        if isinstance(layer, nn.BatchNorm1d):
            linear = next(m for m in layers[i + 1 :] if isinstance(m, nn.Linear))
            scale, shift = _norm_affine(layer)  # [features] each
            linear.bias.add_(linear.weight @ shift)  # W·(s⊙x + t) + b = (W·diag s)·x + (W·t + b)
            linear.weight.mul_(scale[None, :])
            fused.classifier[i] = nn.Identity()
    return fused


def _norm_affine(norm: nn.BatchNorm1d | nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """(s, t) with BN(x) = s·x + t in eval mode."""
    mean, var = norm.running_mean, norm.running_var
    assert mean is not None and var is not None, "fuse needs BatchNorm running statistics"
    scale = norm.weight / torch.sqrt(var + norm.eps)
    return scale, norm.bias - mean * scale


def build_model(cfg_or_arch: ArchConfig | Arch, *, transformer_dropout: float = 0.0) -> Network:
    """The PyTorch network for an `Arch` (an `ArchConfig` is built at its baseline), initialised
    by `init_weights`. transformer_dropout: dropout after attention and after the FFN of every
    MobileViT transformer layer (training only; no parameters, no MACs)."""
    arch = cfg_or_arch.baseline() if isinstance(cfg_or_arch, ArchConfig) else cfg_or_arch
    if not isinstance(arch, Arch):
        raise ValueError(f"build_model needs an ArchConfig or Arch, got {type(arch).__name__}")
    if not 0.0 <= transformer_dropout < 1.0:
        raise ValueError(f"transformer_dropout must be in [0, 1), got {transformer_dropout}")
    return Network(arch, transformer_dropout=transformer_dropout)
