"""Arch: JSON round trips, dedupe keys, effective factors, and validation of hand-made input."""

from __future__ import annotations

import copy
import json
import random

import pytest

from vitcube.models import Arch, ArchConfig
from vitcube.models.config import FAMILIES


@pytest.mark.parametrize("family", FAMILIES)
def test_to_dict_round_trips_through_json(family: str, arch_sampler) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(family)
    for _ in range(10):
        arch = arch_sampler(family, rng)
        again = Arch.from_dict(json.loads(json.dumps(arch.to_dict())))
        assert again == arch
        assert again.key() == arch.key()


def test_to_dict_field_names() -> None:
    data = ArchConfig.preset("mobilevit_xxs").baseline().to_dict()
    assert list(data) == ["resolution", "num_classes", "base", "stem_channels", "stages",
                          "head_channels", "classifier_hidden", "exshortcut_channels"]  # fmt: skip
    stage = data["stages"][2]
    assert list(stage) == ["number", "blocks", "transformer"]
    assert stage["transformer"] == {"kind": "mobilevit_v1", "dim": 64, "depth": 2, "ffn_dim": 128,
                                    "num_heads": 4, "patch_size": 2, "fusion": True}  # fmt: skip
    assert stage["blocks"][0] == {"kind": "inverted_residual", "out_channels": 48,
                                  "hidden_channels": 48, "kernel_size": 3, "stride": 2,
                                  "se_channels": 0, "activation": "silu"}  # fmt: skip


def test_per_stage_views() -> None:
    arch = ArchConfig.preset("mobilevit_s").baseline()
    assert arch.mv2_blocks == (1, 3, 1, 1, 1)
    assert arch.channels == (32, 64, 96, 128, 160)
    assert arch.transformer_depths == (0, 0, 2, 4, 3)
    assert arch.transformer_dims == (0, 0, 144, 192, 240)
    assert arch.downsamplings == 5


def test_key_identifies_networks_not_requests() -> None:
    base = ArchConfig.preset("mobilevit_xs")
    assert base.scale(d_i=1.31, w=0.75).key() == base.scale(d_i=1.333, w=0.76).key()
    assert base.scale(d_i=1.3).key() != base.scale(d_i=1.4).key()
    assert base.scale(w=0.5).key() != base.scale(w=0.6).key()
    assert base.scale().key() != ArchConfig.preset("mobilevit_xs", num_classes=10).scale().key()
    # two baselines that build the same network share a key
    half_r0 = ArchConfig.preset("mobilevitv2_100", resolution=128)
    assert half_r0.scale(r=2.0).key() == ArchConfig.preset("mobilevitv2_100").baseline().key()


def test_effective_factors_of_a_baseline_are_one() -> None:
    for name in ArchConfig.presets():
        factors = ArchConfig.preset(name).baseline().effective_factors()
        assert factors == {"r": 1.0, "d_i": 1.0, "d_m": 1.0, "w": 1.0}, name


def test_effective_depths_are_the_largest_multiplier_that_builds_the_network() -> None:
    base = ArchConfig.preset("mobilevit_xxs")  # MV2 blocks (1, 3, 1, 1, 1), depths (2, 4, 3)
    factors = base.scale(d_i=1.3, d_m=1.3).effective_factors()
    assert factors["d_i"] == pytest.approx(4 / 3)  # (2, 4, 2, 2, 2): 4/3 is the tightest stage
    assert factors["d_m"] == pytest.approx(4 / 3)  # (3, 6, 4): 4/3 from the depth-3 block
    assert base.scale(d_i=0.2).effective_factors()["d_i"] == pytest.approx(1 / 3)


@pytest.mark.parametrize("family", ["mobilevit_v1", "mobilevit_v2", "mobilenet_v3_large"])
def test_scaling_by_the_effective_depths_rebuilds_the_same_network(
    family: str, arch_sampler
) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(family)
    for _ in range(30):
        arch = arch_sampler(family, rng)
        eff = arch.effective_factors()
        w_req = arch.base.scale(r=eff["r"], w=1.0)  # resolution: r is exact
        assert w_req.resolution == arch.resolution
        again = arch.base.scale(r=eff["r"], d_i=eff["d_i"], d_m=eff["d_m"], w=1.0)
        assert again.mv2_blocks == arch.mv2_blocks
        assert again.transformer_depths == arch.transformer_depths


def test_effective_width_is_the_mean_width_ratio() -> None:
    base = ArchConfig.preset("mobilevit_s")
    assert base.scale(w=0.5).effective_factors()["w"] == 0.5  # every width halves exactly
    arch = base.scale(w=0.4)
    built = [arch.stem_channels, *arch.channels, 56, 112, 80, 152, 96, 192, arch.head_channels]
    assert [s.transformer.dim for s in arch.stages if s.transformer] == [56, 80, 96]
    baseline = [16, 32, 64, 96, 128, 160, 144, 288, 192, 384, 240, 480, 640]
    expected = sum(b / c for b, c in zip(built, baseline, strict=True)) / len(baseline)
    assert arch.effective_factors()["w"] == pytest.approx(expected)
    assert 0.38 < expected < 0.45


def test_effective_factors_of_families_without_transformers() -> None:
    factors = ArchConfig.preset("mobilenet_v2").scale(r=1.5, d_i=2, d_m=1.7).effective_factors()
    assert factors == {"r": pytest.approx(336 / 224), "d_i": 2.0, "d_m": 1.0, "w": 1.0}


def test_effective_r_is_relative_to_r0() -> None:
    factors = ArchConfig.preset("mobilevit_xs", resolution=128).scale(r=1.5).effective_factors()
    assert factors["r"] == 1.5


def _base_dict() -> dict:  # type: ignore[type-arg]
    return ArchConfig.preset("mobilevit_xxs").baseline().to_dict()


def _with(path: tuple[object, ...], value: object) -> dict:  # type: ignore[type-arg]
    data = copy.deepcopy(_base_dict())
    target = data
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return data


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_with(("stages", 1, "blocks", 0, "out_channels"), 0), "out_channels .*zero channels"),
        (_with(("stages", 2, "transformer", "dim"), 0), "transformer dim .*zero channels"),
        (_with(("stages", 2, "transformer", "ffn_dim"), -8), "ffn_dim"),
        (_with(("stem_channels",), 0), "stem_channels must be a positive integer"),
        (_with(("exshortcut_channels",), [8, 0, 8]), "exshortcut_channels entry"),
        (_with(("stages", 2, "transformer", "num_heads"), 3), "not divisible by num_heads"),
        (_with(("stages", 1, "blocks"), []), "stage 2 has no blocks"),
        (_with(("stages",), []), "at least one stage"),
        (_with(("stages", 1, "blocks", 0, "stride"), 3), "stride must be 1 or 2"),
        (_with(("stages", 1, "blocks", 0, "kernel_size"), 4), "kernel_size must be"),
        (_with(("stages", 1, "blocks", 0, "kind"), "dense"), "block kind 'dense'"),
        (_with(("stages", 1, "blocks", 0, "activation"), "gelu"), "activation 'gelu'"),
        (_with(("stages", 2, "transformer", "kind"), "swin"), "transformer kind 'swin'"),
        (_with(("stages", 2, "transformer", "fusion"), "yes"), "fusion must be true or false"),
        (
            _with(("stages", 1, "blocks", 0, "out_channels"), 24.0),
            "out_channels must be an integer",
        ),
        (_with(("resolution",), 16), "16 px input is too small for the 5 stride-2 .* ≥ 32 px"),
        (_with(("resolution",), "256"), "resolution must be an integer"),
        (_with(("base",), {"family": "mobilevit_v9"}), "unknown family"),
        ({k: v for k, v in _base_dict().items() if k != "stages"}, r"missing \['stages'\]"),
        ({**_base_dict(), "extra": 1}, r"unknown keys \['extra'\]"),
        (_with(("stages", 0), {"number": 1, "blocks": []}), r"stage is missing \['transformer'\]"),
        (_with(("stages", 0, "blocks", 0), 5), "a block must be a JSON object"),
        ([], "must be a JSON object"),
    ],
)
def test_from_dict_rejects_malformed_architectures(data: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Arch.from_dict(data)  # type: ignore[arg-type]


def test_effective_factors_refuse_an_arch_not_scaled_from_its_base() -> None:
    data = _base_dict()
    data["base"] = {"family": "mobilevit_v1", "size": "xxs", "dropped_stages": [5]}
    with pytest.raises(ValueError, match="has 5 stages but its base config builds 4"):
        Arch.from_dict(data).effective_factors()
