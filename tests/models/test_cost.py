"""count_macs / count_params: published numbers, exact agreement with the built network
(forward hooks, parameter numel), and agreement with thop on convolutions and linears."""

from __future__ import annotations

import random
from collections import defaultdict

import pytest
import thop
import torch
from torch import nn

from vitcube.models import ArchConfig, build_model, count_macs, count_params
from vitcube.models.config import FAMILIES
from vitcube.models.profile import hook_macs

# timm's parameter counts, in millions rounded to 2 decimals (MobileViT), and torchvision's
# exact counts (MobileNets; torchvision has no MobileNet v1, whose count is the paper net's).
PUBLISHED_PARAMS_M = {
    "mobilevit_xxs": 1.27,
    "mobilevit_xs": 2.32,
    "mobilevit_s": 5.58,
    "mobilevitv2_050": 1.37,
    "mobilevitv2_075": 2.87,
    "mobilevitv2_100": 4.90,
    "mobilevitv2_125": 7.48,
    "mobilevitv2_150": 10.59,
    "mobilevitv2_175": 14.25,
    "mobilevitv2_200": 18.45,
}
PUBLISHED_PARAMS_EXACT = {
    "mobilenet_v1": 4_231_976,
    "mobilenet_v2": 3_504_872,
    "mobilenet_v3_large": 5_483_032,
    "mobilenet_v3_small": 2_542_856,
}
# Published MACs (timm / the papers; MobileViT at 256 px, MobileNets at 224 px).
PUBLISHED_GMACS = {
    "mobilevit_xxs": 0.42,
    "mobilevit_xs": 1.05,
    "mobilevit_s": 2.03,
    "mobilevitv2_050": 0.48,
    "mobilevitv2_075": 1.05,
    "mobilevitv2_100": 1.84,
    "mobilevitv2_125": 2.86,
    "mobilevitv2_150": 4.09,
    "mobilevitv2_175": 5.54,
    "mobilevitv2_200": 7.22,
    "mobilenet_v1": 0.569,
    "mobilenet_v2": 0.300,
    "mobilenet_v3_large": 0.219,
    "mobilenet_v3_small": 0.056,
}
RANDOM_CONFIGS = {
    "mobilevit_v1": 60,
    "mobilevit_v2": 60,
    "mobilenet_v1": 15,
    "mobilenet_v2": 15,
    "mobilenet_v3_large": 15,
    "mobilenet_v3_small": 15,
    "efficientvit": 30,
}


def numel(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS_M))
def test_mobilevit_presets_have_the_published_parameter_counts(name: str) -> None:
    config = ArchConfig.preset(name)
    assert round(count_params(config) / 1e6, 2) == pytest.approx(PUBLISHED_PARAMS_M[name])
    assert count_params(config) == numel(build_model(config))


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS_EXACT))
def test_mobilenet_presets_have_torchvisions_exact_parameter_counts(name: str) -> None:
    config = ArchConfig.preset(name)
    assert count_params(config) == PUBLISHED_PARAMS_EXACT[name]
    assert numel(build_model(config)) == PUBLISHED_PARAMS_EXACT[name]


def test_mobilevit_s_parameter_count_is_timms_to_the_unit() -> None:
    assert count_params(ArchConfig.preset("mobilevit_s")) == 5_578_632


@pytest.mark.parametrize("name", sorted(PUBLISHED_GMACS))
def test_presets_are_within_a_few_percent_of_the_published_macs(name: str) -> None:
    macs = count_macs(ArchConfig.preset(name))
    assert macs / 1e9 == pytest.approx(PUBLISHED_GMACS[name], rel=0.04)


def test_headline_macs() -> None:
    assert count_macs(ArchConfig.preset("mobilevit_s")) / 1e9 == pytest.approx(2.0, rel=0.02)
    assert count_macs(ArchConfig.preset("mobilevitv2_100")) / 1e9 == pytest.approx(1.8, rel=0.02)


def test_macs_grow_with_every_factor() -> None:
    base = ArchConfig.preset("mobilevit_xs")
    m0 = count_macs(base)
    for factor in ("r", "d_i", "d_m", "w"):
        assert count_macs(base.scale(**{factor: 1.5})) > m0, factor


@pytest.mark.parametrize(
    ("family", "seed"),
    [(family, seed) for family in FAMILIES for seed in range(RANDOM_CONFIGS[family])],
)
def test_analytic_counts_equal_the_built_network(family: str, seed: int, arch_sampler) -> None:  # type: ignore[no-untyped-def]
    arch = arch_sampler(family, random.Random(f"{family}-{seed}"))
    model = build_model(arch)
    hooked, _ = hook_macs(model, arch.resolution)
    assert count_macs(arch) == hooked, arch.to_dict()
    assert count_params(arch) == numel(model), arch.to_dict()


@pytest.mark.parametrize(
    ("name", "resolution"),
    [
        ("mobilevit_xs", 80),
        ("mobilevitv2_075", 112),
        ("exmobilevit_640", 96),
        ("mobilenet_v3_small", 96),
        ("mobilenet_v1", 64),
    ],
)
def test_thop_agrees_on_every_convolution_and_linear_layer(name: str, resolution: int) -> None:
    arch = ArchConfig.preset(name, num_classes=10, resolution=resolution).baseline()
    model = build_model(arch)
    total, calls = hook_macs(model, arch.resolution)
    ours: dict[str, int] = defaultdict(int)
    for call in calls:
        ours[call.name] += call.macs
    _, _, layers = thop.profile(
        model, inputs=(torch.zeros(1, 3, resolution, resolution),), verbose=False,
        ret_layer_info=True,
    )  # fmt: skip
    theirs = dict(_flatten(layers))
    modules = dict(model.named_modules())
    compared = 0
    for module_name, ops in theirs.items():
        if isinstance(modules[module_name], nn.Conv2d | nn.Linear):
            assert int(ops) == ours[module_name], module_name
            compared += 1
    assert compared == sum(1 for call in calls if call.kind != "attention") > 0
    attention = sum(call.macs for call in calls if call.kind == "attention")
    assert sum(int(ops) for n, ops in theirs.items() if n in ours) == total - attention
    assert count_macs(arch) == total


def _flatten(layers: dict, prefix: str = "") -> list[tuple[str, float]]:  # type: ignore[type-arg]
    """thop's nested {child: (ops, params, children)} as [(dotted name, ops)] of leaves."""
    flat = []
    for name, (ops, _, children) in layers.items():
        full = f"{prefix}{name}"
        flat += _flatten(children, f"{full}.") if children else [(full, ops)]
    return flat


def test_v1_attention_matmuls_are_counted() -> None:
    arch = ArchConfig.preset("mobilevit_xxs", resolution=64).baseline()
    _, calls = hook_macs(build_model(arch), arch.resolution)
    attention = sum(call.macs for call in calls if call.kind == "attention")
    # stage 3 at 64 px: 8×8 grid, 2×2 patches -> P = 4 positions, N = 16 tokens, d = 64;
    # stage 4: 4×4 -> N = 4, d = 80; stage 5: 2×2 -> N = 1, d = 96 (Q·Kᵀ and A·V each P·N²·d)
    expected = 2 * (2 * 4 * 16 * 16 * 64 + 4 * 4 * 4 * 4 * 80 + 3 * 4 * 1 * 1 * 96)
    assert attention == expected


def test_count_functions_reject_other_objects() -> None:
    with pytest.raises(ValueError, match="ArchConfig or Arch"):
        count_macs("mobilevit_s")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ArchConfig or Arch"):
        count_params({"preset": "mobilevit_s"})  # type: ignore[arg-type]
