"""build_model: every preset runs, the grid-resize path of MobileViT blocks behaves as the
reference implementations do, and the hook profiler counts what runs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vitcube.models import ArchConfig, build_model, count_macs, count_params
from vitcube.models.mobilevit import MobileViTBlock
from vitcube.models.mobilevit_v2 import MobileViTV2Block
from vitcube.models.profile import hook_macs


@pytest.mark.parametrize("name", ArchConfig.presets())
def test_every_preset_runs_a_forward_pass(name: str) -> None:
    config = ArchConfig.preset(name, num_classes=7, resolution=64)
    model = build_model(config).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 64, 64))
    assert logits.shape == (2, 7)
    assert torch.isfinite(logits).all()


def test_a_scaled_arch_trains_one_step() -> None:
    arch = ArchConfig.preset("mobilevit_xxs", num_classes=5).scale(r=0.25, d_i=1.5, d_m=0.5, w=0.5)
    model = build_model(arch)
    images, labels = torch.randn(4, 3, arch.resolution, arch.resolution), torch.tensor([0, 1, 2, 3])
    loss = nn.functional.cross_entropy(model(images), labels)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def _block_shapes(model: nn.Module, block_type: type, resolution: int) -> list[tuple[int, int]]:
    """(input side, output side) of every `block_type` call."""
    shapes: list[tuple[int, int]] = []

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        shapes.append((inputs[0].shape[-1], output.shape[-1]))

    for module in model.modules():
        if isinstance(module, block_type):
            module.register_forward_hook(hook)
    with torch.no_grad():
        model.eval()(torch.randn(1, 3, resolution, resolution))
    return shapes


def test_v1_resizes_an_odd_token_grid_for_the_transformer_and_back() -> None:
    # 80 px: stage 3 sees 10×10, stage 4 sees 5×5 (odd: resized to 6×6 and back), stage 5 3×3
    arch = ArchConfig.preset("mobilevit_xxs", num_classes=3, resolution=80).baseline()
    model = build_model(arch)
    assert _block_shapes(model, MobileViTBlock, 80) == [(10, 10), (5, 5), (3, 3)]
    hooked, calls = hook_macs(model, 80)
    assert count_macs(arch) == hooked
    # the attention of stage 4 ran on the 6×6 grid: P = 4 positions of N = 9 patches, d = 80
    stage4 = [c.macs for c in calls if c.kind == "attention" and c.name.startswith("stages.3.")]
    assert stage4 == [2 * 4 * 9 * 9 * 80] * 4  # one per transformer layer


def test_v2_resizes_an_odd_grid_at_the_block_input_and_keeps_it() -> None:
    # 80 px: stage 4 gets 5×5, resized to 6×6 and kept; stage 5 gets 3×3 -> 4×4
    arch = ArchConfig.preset("mobilevitv2_050", num_classes=3, resolution=80).baseline()
    model = build_model(arch)
    assert _block_shapes(model, MobileViTV2Block, 80) == [(10, 10), (5, 6), (3, 4)]
    assert count_macs(arch) == hook_macs(model, 80)[0]
    # the enlarged grids cost more than the same network would on the unresized ones
    assert count_macs(arch) > count_macs(
        ArchConfig.preset("mobilevitv2_050", num_classes=3, resolution=96).baseline()
    ) * (80 * 80) / (96 * 96)


def test_build_model_accepts_a_config_and_rejects_anything_else() -> None:
    config = ArchConfig.preset("mobilenet_v3_small", num_classes=4)
    assert sum(p.numel() for p in build_model(config).parameters()) == count_params(config)
    with pytest.raises(ValueError, match="ArchConfig or Arch"):
        build_model({"preset": "mobilevit_s"})  # type: ignore[arg-type]


def test_exshortcut_head_feeds_pooled_stage_outputs_to_the_classifier() -> None:
    arch = ArchConfig.preset("exmobilevit_576", num_classes=10, resolution=64).baseline()
    model = build_model(arch)
    assert [conv[0].in_channels for conv in model.shortcuts] == [96, 128, 160]
    assert [conv[0].out_channels for conv in model.shortcuts] == [144, 192, 240]
    assert model.classifier[-1].in_features == 640 + 576


def test_hook_profiler_counts_a_single_convolution() -> None:
    conv = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1, groups=1))
    total, calls = hook_macs(conv, 32)
    assert total == 9 * 3 * 8 * 16 * 16
    assert [(c.name, c.kind) for c in calls] == [("0", "conv")]


@pytest.mark.parametrize("name", ["mobilevit_xs", "mobilevitv2_100"])
def test_weights_start_as_the_references_initialise_them(name: str) -> None:
    model = build_model(ArchConfig.preset(name))
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    norms = [
        m for m in model.modules() if isinstance(m, (nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm))
    ]
    assert convs and norms
    for conv in convs:  # kaiming normal, fan_out = C_out · k² (torch's, groups or not)
        fan_out = conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
        if conv.weight.numel() >= 2000:
            assert conv.weight.std().item() == pytest.approx((2 / fan_out) ** 0.5, rel=0.1)
            assert abs(conv.weight.mean().item()) < 0.1 * (2 / fan_out) ** 0.5
    weights = torch.cat([linear.weight.flatten() for linear in linears])
    assert weights.std().item() == pytest.approx(0.02, rel=0.05)
    assert abs(weights.mean().item()) < 0.001
    biases = [m.bias for m in [*convs, *linears, *norms] if m.bias is not None]
    assert biases and all(bool((bias == 0).all()) for bias in biases)
    assert all(bool((norm.weight == 1).all()) for norm in norms)


@pytest.mark.parametrize("name", ["mobilevit_xxs", "mobilevitv2_050"])
def test_transformer_dropout_reaches_every_transformer_layer_and_costs_nothing(name: str) -> None:
    config = ArchConfig.preset(name, num_classes=10, resolution=64)
    arch = config.baseline()
    plain, dropped = build_model(arch), build_model(arch, transformer_dropout=0.3)
    rates = [m.p for m in dropped.stages.modules() if isinstance(m, nn.Dropout)]
    assert rates and set(rates) == {0.3}
    assert {m.p for m in plain.stages.modules() if isinstance(m, nn.Dropout)} == {0.0}
    x = torch.randn(2, 3, 64, 64)
    dropped.load_state_dict(plain.state_dict())  # same weights: only dropout differs
    with torch.no_grad():
        assert torch.equal(plain.eval()(x), dropped.eval()(x))  # inactive in evaluation
        assert not torch.allclose(plain.train()(x), dropped.train()(x))
    assert sum(p.numel() for p in dropped.parameters()) == count_params(arch)
    assert hook_macs(dropped, 64)[0] == count_macs(arch)
    with pytest.raises(ValueError, match="transformer_dropout must be in"):
        build_model(arch, transformer_dropout=1.0)
