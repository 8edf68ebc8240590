"""EfficientViT M0–M5: the published parameter counts and FLOPs, exact analytic costs against the
built network, the window padding and cascade as they run, the cube's factors, the smallest
inputs, and the JSON round trip."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from vitcube.models import Arch, ArchConfig, build_model, count_macs, count_params
from vitcube.models.efficientvit import CascadedGroupAttention, LocalWindowAttention
from vitcube.models.network import fuse
from vitcube.models.profile import hook_macs

SIZES = ("m0", "m1", "m2", "m3", "m4", "m5")
# The paper's Table 7 (224 px, 1000 classes): params in millions, FLOPs (multiply-accumulates)
# in millions.
PAPER_PARAMS_M = {"m0": 2.3, "m1": 3.0, "m2": 4.2, "m3": 6.9, "m4": 8.8, "m5": 12.4}
PAPER_MFLOPS = {"m0": 79, "m1": 167, "m2": 201, "m3": 263, "m4": 299, "m5": 522}
# microsoft/Cream's EfficientViT classification code, counted with sum(p.numel()) at 224 px
# (the paper's figures are these rounded to 0.1 M: M0's 2.349 M reads as 2.3 M).
OFFICIAL_PARAMS = {
    "m0": 2_349_436,
    "m1": 2_980_560,
    "m2": 4_187_554,
    "m3": 6_900_722,
    "m4": 8_804_228,
    "m5": 12_473_772,
}


def numel(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("size", SIZES)
def test_parameter_counts_are_the_official_codes_and_the_papers(size: str) -> None:
    config = ArchConfig.preset(f"efficientvit_{size}")
    assert count_params(config) == numel(build_model(config)) == OFFICIAL_PARAMS[size]
    millions, paper = count_params(config) / 1e6, PAPER_PARAMS_M[size]
    # within 1 % of the paper, or within its rounding to 0.1 M (M0: 2.349 M against 2.3 M)
    assert abs(millions - paper) <= max(0.01 * paper, 0.05)


@pytest.mark.parametrize("size", SIZES)
def test_macs_are_the_papers_flops_and_the_hook_count(size: str) -> None:
    arch = ArchConfig.preset(f"efficientvit_{size}").baseline()
    assert count_macs(arch) / 1e6 == pytest.approx(PAPER_MFLOPS[size], rel=0.01)
    assert count_macs(arch) == hook_macs(build_model(arch), arch.resolution)[0]


@pytest.mark.parametrize(("size", "resolution"), [("m0", 96), ("m2", 128), ("m5", 256)])
def test_macs_equal_the_hook_count_where_windows_are_padded(size: str, resolution: int) -> None:
    arch = ArchConfig.preset(f"efficientvit_{size}", num_classes=10, resolution=resolution).scale()
    model = build_model(arch)
    assert count_macs(arch) == hook_macs(model, resolution)[0]
    assert count_params(arch) == numel(model)


def test_attention_runs_on_padded_windows_and_counts_both_products() -> None:
    # 256 px: stage 1 is 16×16, padded to 21×21 = 3×3 windows of 7×7; stage 2 is 8×8, padded
    # to 14×14 = 2×2 windows; stage 3 is 4×4, one window of 4×4
    arch = ArchConfig.preset("efficientvit_m0", num_classes=10, resolution=256).baseline()
    model = build_model(arch)
    windows: list[tuple[int, int]] = []  # (windows per image, window side) per attention call

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        windows.append((inputs[0].shape[0], inputs[0].shape[-1]))

    for module in model.modules():
        if isinstance(module, CascadedGroupAttention):
            module.register_forward_hook(hook)
    _, calls = hook_macs(model, 256)
    assert windows == [(9, 7), (4, 7), (4, 7), (1, 4), (1, 4), (1, 4)]
    attention = [c.macs for c in calls if c.kind == "attention"]
    # per head (4 heads, key dim 16, value dim C/4): windows · N² · (16 + C/4)
    stage1 = 9 * 49 * 49 * (16 + 16)
    stage2 = 4 * 49 * 49 * (16 + 32)
    stage3 = 1 * 16 * 16 * (16 + 48)
    assert attention == [stage1] * 4 + [stage2] * 8 + [stage3] * 12


def test_each_head_takes_its_split_plus_the_previous_heads_output() -> None:
    attention = CascadedGroupAttention(
        dim=32, key_dim=4, num_heads=2, query_kernels=(3, 5), window=4
    ).eval()
    seen: dict[str, torch.Tensor] = {}

    def keep(name: str):  # type: ignore[no-untyped-def]
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            seen.setdefault(name, inputs[0] if name == "head 1 input" else output)

        return hook

    attention.matmul.register_forward_hook(keep("head 0 output"))  # its first call is head 0
    attention.qkvs[1].register_forward_hook(keep("head 1 input"))
    x = torch.randn(1, 32, 4, 4)
    with torch.no_grad():
        attention(x)
    head0 = seen["head 0 output"].squeeze(1).transpose(1, 2).reshape(1, 16, 4, 4)
    assert torch.allclose(seen["head 1 input"], x[:, 16:] + head0)


@pytest.mark.parametrize("size", SIZES)
def test_every_size_runs_at_64_px_its_smallest_input(size: str) -> None:
    arch = ArchConfig.preset(f"efficientvit_{size}", num_classes=10, resolution=64).baseline()
    model = build_model(arch).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 64, 64))
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()
    assert count_macs(arch) == hook_macs(model, 64)[0]


def test_the_smallest_inputs_are_64_px_and_32_without_stage_3() -> None:
    config = ArchConfig.preset("efficientvit_m0", num_classes=10)
    with pytest.raises(ValueError, match=r"6 stride-2 downsamplings .* must be ≥ 64 px"):
        config.scale(r=48 / 224)
    digits = ArchConfig("efficientvit", size="m0", num_classes=10, resolution=32,
                        dropped_stages=(3,))  # fmt: skip
    arch = digits.scale()
    model = build_model(arch).train()
    loss = nn.functional.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.arange(4))
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    assert count_macs(arch) == hook_macs(model, 32)[0]
    with pytest.raises(ValueError, match="must be ≥ 32 px"):
        digits.scale(r=0.5)


def test_a_built_network_refuses_another_resolution() -> None:
    model = build_model(ArchConfig.preset("efficientvit_m0", num_classes=3, resolution=64))
    with pytest.raises(ValueError, match=r"built for 4×4 feature maps .* got 6×6"):
        model.eval()(torch.zeros(1, 3, 96, 96))


@pytest.mark.parametrize("resolution", [64, 112, 160, 224, 288])
def test_builds_at_every_multiple_of_16_the_cube_gives(resolution: int) -> None:
    base = ArchConfig("efficientvit", size="m2", resolution=224, num_classes=5)
    arch = base.scale(r=resolution / 224)
    assert arch.resolution == resolution
    model = build_model(arch)
    assert count_macs(arch) == hook_macs(model, resolution)[0]
    assert count_params(arch) == numel(model)


def test_scaling_d_m_and_w_and_refusing_d_i() -> None:
    base = ArchConfig.preset("efficientvit_m5")  # depths 1, 3, 4; heads 3, 3, 4
    assert base.scale(d_m=2.0).transformer_depths == (2, 6, 8)
    assert base.scale(d_m=0.5).transformer_depths == (1, 2, 2)
    narrow = base.scale(w=0.5)
    for stage in narrow.stages:
        t = stage.transformer
        assert t is not None and t.dim == stage.out_channels
        assert t.dim % (8 * t.num_heads) == 0  # heads split the width into multiples of 8
    assert narrow.channels == (96, 144, 192)
    factors = narrow.effective_factors()
    assert factors["w"] == pytest.approx(0.5, abs=0.06)
    assert (factors["d_i"], factors["d_m"]) == (1.0, 1.0)
    assert count_macs(narrow) == hook_macs(build_model(narrow), narrow.resolution)[0]
    with pytest.raises(ValueError, match=r"d_i must be 1, got d_i=1\.5"):
        base.scale(d_i=1.5)


def test_the_reference_network_as_the_search_service_builds_it() -> None:
    arch = ArchConfig.preset("efficientvit_m2", num_classes=17, resolution=160).scale()
    assert arch.effective_factors() == {"r": 1.0, "d_i": 1.0, "d_m": 1.0, "w": 1.0}
    assert arch.resolution == 160 and len(arch.key()) == 20
    rebuilt = Arch.from_dict(json.loads(json.dumps(arch.to_dict())))
    assert rebuilt == arch and rebuilt.key() == arch.key()
    model = build_model(rebuilt)
    assert numel(model) == count_params(arch)
    assert hook_macs(model, 160)[0] == count_macs(arch)
    transformer = arch.to_dict()["stages"][0]["transformer"]
    assert (transformer["key_dim"], transformer["window_size"]) == (16, 7)
    assert transformer["query_kernels"] == [7, 5, 3, 3]


def test_mobilevit_json_has_no_efficientvit_keys() -> None:
    # Arch.key() hashes this JSON: the MobileViT keys stored before EfficientViT must not change
    stage = ArchConfig.preset("mobilevit_xxs").baseline().to_dict()["stages"][2]
    assert set(stage["transformer"]) == {
        "kind", "dim", "depth", "ffn_dim", "num_heads", "patch_size", "fusion"
    }  # fmt: skip


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"dropped_stages": (2,)}, "can drop only trailing stages"),
        ({"dropped_stages": (1, 2, 3)}, "leaves no stage"),
        ({"size": "m9"}, "efficientvit needs size one of m0, m1"),
        ({"size": None, "width": 1.0}, "efficientvit needs size"),
        ({"head": "exshortcut"}, "exshortcut head is for MobileViT families"),
    ],
)
def test_bad_configs_are_refused(changes: dict[str, object], message: str) -> None:
    fields: dict[str, object] = {"family": "efficientvit", "size": "m0", **changes}
    with pytest.raises(ValueError, match=message):
        ArchConfig(**fields)  # type: ignore[arg-type]


def test_a_malformed_efficientvit_arch_is_refused() -> None:
    data = ArchConfig.preset("efficientvit_m1").baseline().to_dict()
    data["stages"][1]["transformer"]["query_kernels"] = [5, 5]  # stage 2 has 3 heads
    with pytest.raises(ValueError, match=r"one kernel .* per head \(3\)"):
        Arch.from_dict(data)
    data = ArchConfig.preset("efficientvit_m1").baseline().to_dict()
    data["stages"][1]["transformer"]["dim"] = 96
    with pytest.raises(ValueError, match="run on the stage width 144, got dim 96"):
        Arch.from_dict(data)


def test_residual_branches_start_at_zero_as_the_official_init() -> None:
    model = build_model(ArchConfig.preset("efficientvit_m0", num_classes=10, resolution=64))
    window = next(m for m in model.modules() if isinstance(m, LocalWindowAttention))
    assert bool((window.attn.proj.norm.weight == 0).all())
    classifier_norm = model.classifier[0]
    assert isinstance(classifier_norm, nn.BatchNorm1d) and classifier_norm.num_features == 192


@pytest.mark.parametrize(
    ("name", "resolution"),
    [
        ("efficientvit_m0", 128),
        ("efficientvit_m4", 64),
        ("mobilevit_xxs", 64),
        ("mobilenet_v3_small", 64),
    ],
)
def test_fuse_folds_every_batchnorm_and_keeps_the_logits(name: str, resolution: int) -> None:
    arch = ArchConfig.preset(name, num_classes=10, resolution=resolution).baseline()
    model = build_model(arch)
    with torch.no_grad():  # trained-looking norms: the defaults (mean 0, var 1, γ 1 or 0) hide bugs
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d | nn.BatchNorm1d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    model.train()
    fused = fuse(model)
    assert model.training  # the caller's model is left as it was
    assert not any(isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d) for m in fused.modules())
    x = torch.randn(3, 3, resolution, resolution)
    with torch.no_grad():
        expected, got = model.eval()(x), fused(x)
    assert (got - expected).abs().max().item() <= 1e-4 * max(1.0, expected.abs().max().item())
    assert hook_macs(fused, resolution)[0] == count_macs(arch)
