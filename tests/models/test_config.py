"""ArchConfig: the preset registry, JSON round trips, validation, and the cube's scaling."""

from __future__ import annotations

import json
import math

import pytest

from vitcube.models import ArchConfig, make_divisible, register_preset
from vitcube.models.config import FAMILIES

ALL_PRESETS = [
    "efficientvit_m0",
    "efficientvit_m1",
    "efficientvit_m2",
    "efficientvit_m3",
    "efficientvit_m4",
    "efficientvit_m5",
    "exmobilevit_576",
    "exmobilevit_640",
    "exmobilevit_928",
    "mobilenet_v1",
    "mobilenet_v2",
    "mobilenet_v3_large",
    "mobilenet_v3_small",
    "mobilevit_s",
    "mobilevit_xs",
    "mobilevit_xxs",
    "mobilevitv2_050",
    "mobilevitv2_075",
    "mobilevitv2_100",
    "mobilevitv2_125",
    "mobilevitv2_150",
    "mobilevitv2_175",
    "mobilevitv2_200",
]


def test_presets_lists_every_registered_name() -> None:
    assert ArchConfig.presets() == ALL_PRESETS


def test_unknown_preset_names_the_valid_ones() -> None:
    with pytest.raises(
        ValueError, match=r"unknown preset 'mobilevit_m'.*mobilevit_s.*mobilevitv2_100"
    ):
        ArchConfig.preset("mobilevit_m")


def test_registry_refuses_duplicates() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_preset("mobilevit_s", ArchConfig("mobilevit_v1", size="s"))


def test_preset_fields_and_defaults() -> None:
    assert ArchConfig.preset("mobilevit_s") == ArchConfig("mobilevit_v1", size="s")
    assert ArchConfig.preset("mobilevitv2_075").width == 0.75
    assert ArchConfig.preset("mobilevit_xs", num_classes=10, resolution=64).num_classes == 10
    assert ArchConfig.preset("mobilevit_xs", resolution=64).resolution == 64
    assert ArchConfig.preset("mobilenet_v2").resolution == 224
    assert ArchConfig.preset("mobilevit_xxs").resolution == 256


@pytest.mark.parametrize("name", ALL_PRESETS)
def test_to_dict_round_trips_through_json(name: str) -> None:
    config = ArchConfig.preset(name, num_classes=37)
    assert ArchConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_from_dict_accepts_the_three_documented_forms() -> None:
    assert ArchConfig.from_dict({"preset": "mobilevitv2_050"}) == ArchConfig.preset(
        "mobilevitv2_050"
    )
    v2 = ArchConfig.from_dict({"family": "mobilevit_v2", "width": 1.0, "resolution": 256})
    assert v2 == ArchConfig.preset("mobilevitv2_100")
    assert ArchConfig.from_dict({"family": "mobilevit_v1", "size": "s"}) == ArchConfig.preset(
        "mobilevit_s"
    )
    tiny = ArchConfig.from_dict(
        {"preset": "mobilevit_xxs", "num_classes": 200, "resolution": 64, "dropped_stages": [4, 5]}
    )
    assert (tiny.num_classes, tiny.resolution, tiny.dropped_stages) == (200, 64, (4, 5))
    ex = ArchConfig.from_dict(
        {
            "family": "mobilevit_v2",
            "width": 0.5,
            "head": "exshortcut",
            "exshortcut_ratios": [1, 2, 3],
        }
    )
    assert ex.exshortcut_ratios == (1, 2, 3)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("mobilevit_s", "must be a JSON object"),
        ({}, "needs a 'preset' or a 'family'"),
        ({"preset": "nope"}, "unknown preset 'nope'; valid presets: efficientvit_m0, "),
        ({"preset": 3}, "preset must be a string"),
        ({"preset": "mobilevit_s", "size": "xs"}, "either a preset or"),
        (
            {"family": "mobilevit_v1", "size": "s", "depth": 3},
            r"unknown arch config keys \['depth'\]",
        ),
        ({"family": "resnet50"}, "unknown family 'resnet50'; valid families: mobilevit_v1"),
        ({"family": "mobilevit_v1"}, "needs size one of xxs, xs, s"),
        ({"family": "mobilevit_v1", "size": "m"}, "needs size one of"),
        ({"family": "mobilevit_v1", "size": "s", "width": 1.0}, "not a width"),
        ({"family": "mobilevit_v2"}, r"needs a width \(α\) in \[0.5, 2.0\]"),
        ({"family": "mobilevit_v2", "width": 2.5}, r"out of range \[0.5, 2.0\]"),
        ({"family": "mobilevit_v2", "width": "1.0"}, "needs a width"),
        ({"family": "mobilevit_v2", "width": 1.0, "size": "s"}, "not a size"),
        ({"family": "mobilenet_v2", "width": 1.0}, "neither size nor width"),
        ({"preset": "mobilevit_s", "num_classes": 0}, "num_classes must be a positive integer"),
        ({"preset": "mobilevit_s", "num_classes": True}, "num_classes must be a positive integer"),
        ({"preset": "mobilevit_s", "resolution": 1}, "resolution must be ≥ 2 px"),
        ({"preset": "mobilevit_s", "resolution": 25.5}, "resolution must be a positive integer"),
        (
            {"preset": "mobilevit_s", "head": "mlp"},
            "unknown head 'mlp'; valid heads: standard, exshortcut",
        ),
        (
            {"preset": "mobilevit_s", "exshortcut_ratios": [1, 1, 1]},
            "only apply with head='exshortcut'",
        ),
        (
            {"preset": "mobilevit_s", "head": "exshortcut", "exshortcut_ratios": [1, 1]},
            "needs 3 ratios",
        ),
        (
            {"preset": "mobilevit_s", "head": "exshortcut", "exshortcut_ratios": [1, 0, 1]},
            r"in \(0, 16\]",
        ),
        ({"preset": "mobilevit_s", "head": "exshortcut", "exshortcut_ratios": 2}, "must be a list"),
        ({"preset": "mobilenet_v2", "head": "exshortcut"}, "for MobileViT families"),
        (
            {"preset": "mobilevit_s", "dropped_stages": [6]},
            r"stage numbers in 1..5 .*stem is stage 0",
        ),
        ({"preset": "mobilevit_s", "dropped_stages": [0]}, "in 1..5"),
        ({"preset": "mobilevit_s", "dropped_stages": [4, 4]}, "distinct"),
        ({"preset": "mobilevit_s", "dropped_stages": [5, 4]}, "must be sorted"),
        ({"preset": "mobilevit_s", "dropped_stages": [1, 2, 3, 4, 5]}, "leaves no stage"),
        ({"preset": "mobilevit_s", "dropped_stages": "45"}, "must be a list"),
        ({"preset": "mobilevit_s", "dropped_stages": ["4"]}, "list of stage numbers"),
        ({"preset": "exmobilevit_928", "dropped_stages": [3, 4, 5]}, "keeps only 2"),
    ],
)
def test_from_dict_rejects_bad_input_naming_the_problem(data: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ArchConfig.from_dict(data)  # type: ignore[arg-type]


def test_mobilenet_v7_stage_numbering_for_dropping() -> None:
    assert len(ArchConfig("mobilenet_v2", dropped_stages=(7,)).baseline().stages) == 6
    with pytest.raises(ValueError, match=r"in 1\.\.7"):
        ArchConfig("mobilenet_v2", dropped_stages=(8,))


# -- the cube --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("r", "pixels"), [(1.0, 256), (0.9, 224), (0.8, 208), (1.7, 432), (1.03, 256), (1.04, 272)]
)
def test_resolution_is_r_times_r0_rounded_to_16(r: float, pixels: int) -> None:
    assert ArchConfig.preset("mobilevit_s").scale(r=r).resolution == pixels


# efficientvit refuses d_i ≠ 1 (tests/models/test_efficientvit.py)
@pytest.mark.parametrize("family", [f for f in FAMILIES if f != "efficientvit"])
@pytest.mark.parametrize("d_i", [0.2, 0.5, 1.0, 1.3, 1.7, 2.3])
def test_mv2_blocks_are_ceil_of_d_i_times_n_and_extra_blocks_have_stride_1(
    family: str, d_i: float
) -> None:
    base = ArchConfig(family, size="s" if family == "mobilevit_v1" else None,
                      width=1.0 if family == "mobilevit_v2" else None)  # fmt: skip
    baseline, arch = base.baseline(), base.scale(d_i=d_i)
    for stage, base_stage in zip(arch.stages, baseline.stages, strict=True):
        n = len(base_stage.blocks)
        assert len(stage.blocks) == max(1, math.ceil(d_i * n))
        assert stage.blocks[0].stride == base_stage.blocks[0].stride
        assert all(block.stride == 1 for block in stage.blocks[n:])
        assert stage.stride == base_stage.stride


DEPTH_CASES = [(1.0, (2, 4, 3)), (0.8, (2, 4, 3)), (0.5, (1, 2, 2)), (0.1, (1, 1, 1)),
               (1.3, (3, 6, 4)), (1.6, (4, 7, 5))]  # fmt: skip


@pytest.mark.parametrize(("d_m", "depths"), DEPTH_CASES)
def test_transformer_depth_is_ceil_of_d_m_times_l(d_m: float, depths: tuple[int, ...]) -> None:
    for name in ("mobilevit_xxs", "mobilevitv2_100"):
        assert ArchConfig.preset(name).scale(d_m=d_m).transformer_depths == (0, 0, *depths)


def test_no_float_noise_in_ceil() -> None:
    # 1.1 · 10 is 11.000000000000002 in floating point; it must still give 11, not 12
    assert ArchConfig.preset("mobilevit_xxs").scale(d_i=1.1).mv2_blocks == (2, 4, 2, 2, 2)


@pytest.mark.parametrize("w", [0.4, 0.5, 0.75, 1.2])
def test_every_width_is_make_divisible_of_c_times_w(w: float) -> None:
    base = ArchConfig.preset("mobilevit_s")
    baseline, arch = base.baseline(), base.scale(w=w)
    assert arch.stem_channels == make_divisible(16 * w, 8)
    assert arch.channels == tuple(make_divisible(c * w, 8) for c in baseline.channels)
    assert arch.transformer_dims == tuple(
        make_divisible(d * w, 8) if d else 0 for d in baseline.transformer_dims
    )
    for stage, base_stage in zip(arch.stages, baseline.stages, strict=True):
        if stage.transformer and base_stage.transformer:
            assert stage.transformer.ffn_dim == make_divisible(
                base_stage.transformer.ffn_dim * w, 8
            )
    assert arch.head_channels == make_divisible(640 * w, 8)


def test_make_divisible_follows_the_reference_rule() -> None:
    assert make_divisible(18, 8) == 24  # never more than 10 % below the value
    assert make_divisible(30, 8) == 32
    assert make_divisible(3.2, 8) == 8  # never below the divisor
    assert make_divisible(100, 8) == 104
    assert make_divisible(96, 16) == 96


@pytest.mark.parametrize(
    ("name", "extra", "widths"),
    [
        ("exmobilevit_928", 928, (232, 312, 384)),
        ("exmobilevit_640", 640, (160, 216, 264)),
        ("exmobilevit_576", 576, (144, 192, 240)),
    ],
)
def test_exmobilevit_presets_add_their_number_of_classifier_channels(
    name: str, extra: int, widths: tuple[int, ...]
) -> None:
    arch = ArchConfig.preset(name).baseline()
    assert arch.exshortcut_channels == widths
    assert sum(arch.exshortcut_channels) == extra
    assert arch.channels == ArchConfig.preset("mobilevit_s").baseline().channels


def test_tinyimagenet_variant_drops_the_last_two_stages_and_the_fusion_conv() -> None:
    arch = ArchConfig("mobilevit_v1", size="s", resolution=64, num_classes=200,
                      dropped_stages=(4, 5)).baseline()  # fmt: skip
    assert [stage.number for stage in arch.stages] == [1, 2, 3]
    assert arch.stages[-1].transformer is not None
    assert arch.stages[-1].transformer.fusion is False
    assert arch.head_channels == 4 * 96
    full = ArchConfig.preset("mobilevit_s").baseline()
    assert all(s.transformer.fusion for s in full.stages if s.transformer)


@pytest.mark.parametrize("factor", ["r", "d_i", "d_m", "w"])
@pytest.mark.parametrize("value", [0, -1.0, math.nan, math.inf, 10.5])
def test_scale_rejects_factors_out_of_range(factor: str, value: float) -> None:
    with pytest.raises(ValueError, match=rf"factor {factor}=.* every factor must be in \(0, 10\]"):
        ArchConfig.preset("mobilevit_xs").scale(**{factor: value})


@pytest.mark.parametrize("value", ["1.0", True, None])
def test_scale_rejects_non_numbers(value: object) -> None:
    with pytest.raises(ValueError, match="factor w must be a number"):
        ArchConfig.preset("mobilevit_xs").scale(w=value)  # type: ignore[arg-type]


def test_scale_rejects_an_input_too_small_for_five_downsamplings() -> None:
    base = ArchConfig.preset("mobilevit_s")
    with pytest.raises(
        ValueError, match=r"16 px input .* 5 stride-2 downsamplings .* ≥ 32 px, i.e. r ≥ 0.09375"
    ):
        base.scale(r=0.07)
    assert base.scale(r=0.1).resolution == 32  # the smallest buildable
    tiny = ArchConfig("mobilevit_v1", size="s", dropped_stages=(4, 5), resolution=64)
    assert tiny.scale(r=0.25).resolution == 16  # three downsamplings fit in 16 px
    with pytest.raises(ValueError, match="too small for the 5 stride-2"):
        ArchConfig.preset("mobilevit_s", resolution=16).baseline()
