"""Baselines (`ArchConfig`), the registry of named presets, and `ArchConfig.scale`, which
applies the cube (README.md, "How it works") to give a concrete `Arch`.

Families: "mobilevit_v1" (size "xxs" | "xs" | "s"), "mobilevit_v2" (width α in [0.5, 2.0]),
and the reference baselines "mobilenet_v1", "mobilenet_v2", "mobilenet_v3_large",
"mobilenet_v3_small", "efficientvit" (size "m0" … "m5"; d_i must be 1, only trailing stages
can be dropped; see `models.efficientvit`). Heads: "standard", or "exshortcut" (ExMobileViT,
MobileViT families only): each of the last three stages' outputs goes through a 1×1 conv
(+BN+SiLU) to ρᵢ·Cᵢ channels and global average pooling, and the pooled vectors are
concatenated with the main pooled feature in front of the classifier. The preset number of
ExMobileViT-928 / -640 / -576 is read as the total count of those extra classifier channels
(Σ make_divisible(ρ·Cᵢ, 8) over MobileViT-S's stages 3–5, Cᵢ = 96, 128, 160), with one ρ
per preset: 29/12, 5/3, 3/2. Caveat: the paper reports +5.16 % parameters for
ExMobileViT-928, which fits "928 = total classifier input, 640 + 288 extra" better than 928
extra channels (+18.9 % here); change the ratios ρ to model the other reading.

Pure Python: imports the family tables (`models.mobilevit`, `models.mobilevit_v2`,
`models.mobilenet`, `models.efficientvit`) and `models.arch`, never the builder or anything
outside `models`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from functools import lru_cache
from typing import Any

from vitcube.models import efficientvit, mobilenet, mobilevit, mobilevit_v2
from vitcube.models.arch import (
    MAX_FACTOR,
    RESOLUTION_STEP,
    Arch,
    FamilyTemplate,
    min_resolution,
    scale_template,
)

MOBILEVIT_FAMILIES = ("mobilevit_v1", "mobilevit_v2")
FAMILIES = (*MOBILEVIT_FAMILIES, *mobilenet.TEMPLATES, "efficientvit")
HEADS = ("standard", "exshortcut")
EXSHORTCUT_STAGES = 3
"""ExMobileViT taps the outputs of the last three (kept) stages."""
DEFAULT_EXSHORTCUT_RATIOS = (1.5, 1.5, 1.5)
STAGE_COUNTS = {
    "mobilevit_v1": 5,
    "mobilevit_v2": 5,
    **{name: len(t.stages) for name, t in mobilenet.TEMPLATES.items()},
    "efficientvit": 3,
}
NORMED_CLASSIFIER_FAMILIES = ("efficientvit",)
"""Families whose classifier is BatchNorm1d + linear on the pooled features."""


@dataclass(frozen=True)
class ArchConfig:
    """A baseline network: the point (r, d_i, d_m, w) = (1, 1, 1, 1) of the cube.

    `resolution` is R0 in pixels; `dropped_stages` lists 1-based stage numbers (stage 0 is
    the stem; MobileViT's stages 1–5 are ml-cvnets' layer_1..layer_5) to remove — the
    TinyImageNet variant is `dropped_stages=(4, 5)`; `exshortcut_ratios` are the ρᵢ of the
    ExMobileViT head (one per tapped stage, earliest first; default 1.5 each).
    """

    family: str
    size: str | None = None
    width: float | None = None
    resolution: int = 256
    num_classes: int = 1000
    head: str = "standard"
    exshortcut_ratios: tuple[float, ...] | None = None
    dropped_stages: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.exshortcut_ratios, list):
            object.__setattr__(self, "exshortcut_ratios", tuple(self.exshortcut_ratios))
        if isinstance(self.dropped_stages, list):
            object.__setattr__(self, "dropped_stages", tuple(self.dropped_stages))
        _validate_config(self)

    # -- presets -------------------------------------------------------------------------
    @classmethod
    def preset(
        cls, name: str, num_classes: int = 1000, resolution: int | None = None
    ) -> ArchConfig:
        """The named preset (see `presets()`); `resolution` defaults to the family's
        published one (256 for MobileViT, 224 for MobileNets and EfficientViT)."""
        if name not in _PRESETS:
            raise ValueError(f"unknown preset {name!r}; valid presets: {', '.join(cls.presets())}")
        config = _PRESETS[name]
        changes: dict[str, Any] = {"num_classes": num_classes}
        if resolution is not None:
            changes["resolution"] = resolution
        return replace(config, **changes)

    @classmethod
    def presets(cls) -> list[str]:
        """Every registered preset name, sorted."""
        return sorted(_PRESETS)

    # -- JSON --------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArchConfig:
        """Accepts `{"preset": name}` (plus optional overrides) or explicit fields:
        `{"family": "mobilevit_v2", "width": 1.0, "resolution": 256}`,
        `{"family": "mobilevit_v1", "size": "s"}`; optional keys num_classes, resolution,
        head, exshortcut_ratios, dropped_stages. Raises ValueError on bad input."""
        if not isinstance(data, dict):
            raise ValueError(f"an arch config must be a JSON object, got {type(data).__name__}")
        names = {f.name for f in fields(cls)}
        optional = {"resolution", "num_classes", "head", "exshortcut_ratios", "dropped_stages"}
        unknown = sorted(set(data) - names - {"preset"})
        if unknown:
            raise ValueError(
                f"unknown arch config keys {unknown}; allowed: preset, {', '.join(sorted(names))}"
            )
        values = {key: _parse_field(key, value) for key, value in data.items() if key != "preset"}
        if "preset" in data:
            name = data["preset"]
            if not isinstance(name, str):
                raise ValueError(f"preset must be a string, got {name!r}")
            clash = sorted(set(values) - optional)
            if clash:
                raise ValueError(f"give either a preset or {clash}, not both")
            base = cls.preset(name)
            return replace(base, **values)
        if "family" not in values:
            raise ValueError(
                f"an arch config needs a 'preset' or a 'family' (one of {', '.join(FAMILIES)})"
            )
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able; `ArchConfig.from_dict(c.to_dict()) == c`."""
        return {
            "family": self.family,
            "size": self.size,
            "width": self.width,
            "resolution": self.resolution,
            "num_classes": self.num_classes,
            "head": self.head,
            "exshortcut_ratios": None
            if self.exshortcut_ratios is None
            else list(self.exshortcut_ratios),
            "dropped_stages": list(self.dropped_stages),
        }

    # -- scaling ----------------------------------------------------------------------
    def scale(self, *, r: float = 1.0, d_i: float = 1.0, d_m: float = 1.0, w: float = 1.0) -> Arch:
        """The concrete network at factors (r, d_i, d_m, w) (the cube (README.md, "How it works")):
        resolution round(r·R0 / 16)·16; MV2 blocks per stage n → max(1, ceil(d_i·n));
        transformer depth L → max(1, ceil(d_m·L)); every width c → make_divisible(c·w, 8).
        Raises ValueError for factors outside (0, 10] or a resolution below what the
        network's stride-2 downsamplings need."""
        for name, value in (("r", r), ("d_i", d_i), ("d_m", d_m), ("w", w)):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"factor {name} must be a number, got {value!r}")
            if not math.isfinite(value) or value <= 0 or value > MAX_FACTOR:
                raise ValueError(
                    f"factor {name}={value!r} is out of range; every factor must be in "
                    f"(0, {MAX_FACTOR:g}]"
                )
        if self.family == "efficientvit" and d_i != 1:
            raise ValueError(
                f"efficientvit has no MV2-style blocks for d_i to repeat, so d_i must be 1, got "
                f"d_i={d_i:g}; its depth is d_m (EfficientViT blocks per stage)"
            )
        ratios = self.resolved_exshortcut_ratios()
        stem, stages, head, hidden, exshortcut = scale_template(
            _template(self), d_i=d_i, d_m=d_m, w=w, exshortcut_ratios=ratios
        )
        downsamplings = 1 + sum(1 for s in stages for b in s.blocks if b.stride == 2)
        need = min_resolution(downsamplings)
        resolution = _round_resolution(r * self.resolution)
        if resolution < need:
            r_min = (need - RESOLUTION_STEP / 2) / self.resolution
            raise ValueError(
                f"r={r:g} gives a {resolution} px input ({r:g} × {self.resolution} px rounded to a "
                f"multiple of {RESOLUTION_STEP}), too small for the {downsamplings} stride-2 "
                f"downsamplings of {self.family}; the input must be ≥ {need} px, i.e. "
                f"r ≥ {r_min:.4g}"
            )
        return Arch(
            resolution=resolution,
            num_classes=self.num_classes,
            base=self,
            stem_channels=stem,
            stages=stages,
            head_channels=head,
            classifier_hidden=hidden,
            exshortcut_channels=exshortcut,
        )

    def baseline(self) -> Arch:
        """`self.scale()` (cached): the network whose factors are all 1."""
        return _cached_baseline(self)

    def resolved_exshortcut_ratios(self) -> tuple[float, ...]:
        """The ρᵢ actually used: () for the standard head, else the given or default ones."""
        if self.head != "exshortcut":
            return ()
        return self.exshortcut_ratios or DEFAULT_EXSHORTCUT_RATIOS


@lru_cache(maxsize=256)
def _cached_baseline(config: ArchConfig) -> Arch:
    return config.scale()


def _round_resolution(pixels: float) -> int:
    return math.floor(pixels / RESOLUTION_STEP + 0.5) * RESOLUTION_STEP


@lru_cache(maxsize=256)
def _template(config: ArchConfig) -> FamilyTemplate:
    if config.family == "mobilevit_v1":
        assert config.size is not None
        return mobilevit.template(config.size, config.dropped_stages)
    if config.family == "mobilevit_v2":
        assert config.width is not None
        return mobilevit_v2.template(config.width, config.dropped_stages)
    if config.family == "efficientvit":
        assert config.size is not None
        return efficientvit.template(config.size, config.dropped_stages)
    return mobilenet.template(config.family, config.dropped_stages)


def _parse_field(key: str, value: Any) -> Any:
    if key in ("exshortcut_ratios", "dropped_stages"):
        if value is None and key == "exshortcut_ratios":
            return None
        if not isinstance(value, list | tuple):
            raise ValueError(f"{key} must be a list, got {value!r}")
        return tuple(value)
    return value


def _validate_config(c: ArchConfig) -> None:
    if c.family not in FAMILIES:
        raise ValueError(f"unknown family {c.family!r}; valid families: {', '.join(FAMILIES)}")
    if c.family == "mobilevit_v1":
        if c.size not in mobilevit.VARIANTS:
            raise ValueError(
                f"mobilevit_v1 needs size one of {', '.join(mobilevit.VARIANTS)}, got {c.size!r}"
            )
        if c.width is not None:
            raise ValueError("mobilevit_v1 takes a size, not a width (scale it with w)")
    elif c.family == "mobilevit_v2":
        lo, hi = mobilevit_v2.MIN_WIDTH, mobilevit_v2.MAX_WIDTH
        if isinstance(c.width, bool) or not isinstance(c.width, int | float):
            raise ValueError(f"mobilevit_v2 needs a width (α) in [{lo}, {hi}], got {c.width!r}")
        if not lo <= c.width <= hi:
            raise ValueError(f"mobilevit_v2 width α={c.width!r} is out of range [{lo}, {hi}]")
        if c.size is not None:
            raise ValueError("mobilevit_v2 takes a width α, not a size")
    elif c.family == "efficientvit":
        if c.size not in efficientvit.VARIANTS:
            raise ValueError(
                f"efficientvit needs size one of {', '.join(efficientvit.VARIANTS)}, got {c.size!r}"
            )
        if c.width is not None:
            raise ValueError("efficientvit takes a size, not a width (scale it with w)")
    elif c.size is not None or c.width is not None:
        raise ValueError(f"{c.family} takes neither size nor width (scale it with w)")
    for name, value in (("resolution", c.resolution), ("num_classes", c.num_classes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if c.head not in HEADS:
        raise ValueError(f"unknown head {c.head!r}; valid heads: {', '.join(HEADS)}")
    n_stages = STAGE_COUNTS[c.family]
    dropped = c.dropped_stages
    if not isinstance(dropped, tuple) or any(
        isinstance(s, bool) or not isinstance(s, int) for s in dropped
    ):
        raise ValueError(f"dropped_stages must be a list of stage numbers, got {dropped!r}")
    if any(not 1 <= s <= n_stages for s in dropped) or len(set(dropped)) != len(dropped):
        raise ValueError(
            f"dropped_stages {list(dropped)} must be distinct stage numbers in 1..{n_stages} "
            f"for {c.family} (the stem is stage 0 and cannot be dropped)"
        )
    if tuple(sorted(dropped)) != dropped:
        raise ValueError(f"dropped_stages must be sorted, got {list(dropped)}")
    if (
        c.family == "efficientvit"
        and dropped
        and dropped != tuple(range(n_stages - len(dropped) + 1, n_stages + 1))
    ):
        raise ValueError(
            f"efficientvit can drop only trailing stages ((3,) or (2, 3)): each subsample block "
            f"starts at the previous stage's width; got {list(dropped)}"
        )
    kept = n_stages - len(dropped)
    if kept < 1:
        raise ValueError(f"dropped_stages {list(dropped)} leaves no stage; keep at least one")
    if c.head == "exshortcut":
        if c.family not in MOBILEVIT_FAMILIES:
            raise ValueError(f"the exshortcut head is for MobileViT families, not {c.family}")
        if kept < EXSHORTCUT_STAGES:
            raise ValueError(
                f"the exshortcut head taps the last {EXSHORTCUT_STAGES} stages but "
                f"dropped_stages {list(dropped)} keeps only {kept}"
            )
    ratios = c.exshortcut_ratios
    if ratios is not None:
        if c.head != "exshortcut":
            raise ValueError("exshortcut_ratios only apply with head='exshortcut'")
        if not isinstance(ratios, tuple) or len(ratios) != EXSHORTCUT_STAGES:
            raise ValueError(
                f"exshortcut_ratios needs {EXSHORTCUT_STAGES} ratios ρ (one per tapped stage), "
                f"got {ratios!r}"
            )
        for rho in ratios:
            if isinstance(rho, bool) or not isinstance(rho, int | float) or not 0 < rho <= 16:
                raise ValueError(f"every exshortcut ratio ρ must be in (0, 16], got {rho!r}")
    if c.resolution < min_resolution(1):
        raise ValueError(f"resolution must be ≥ 2 px, got {c.resolution}")


# --------------------------------------------------------------------------------------
# Preset registry
# --------------------------------------------------------------------------------------

_PRESETS: dict[str, ArchConfig] = {}


def register_preset(name: str, config: ArchConfig) -> None:
    """Add a named preset; a name can be registered once."""
    if name in _PRESETS:
        raise ValueError(f"preset {name!r} is already registered")
    _PRESETS[name] = config


for _size in mobilevit.VARIANTS:
    register_preset(f"mobilevit_{_size}", ArchConfig("mobilevit_v1", size=_size))
for _suffix, _width in mobilevit_v2.PRESET_WIDTHS.items():
    register_preset(f"mobilevitv2_{_suffix}", ArchConfig("mobilevit_v2", width=_width))
# ExMobileViT on MobileViT-S: the number is the total count of extra classifier channels.
for _extra, _rho in ((928, 29 / 12), (640, 5 / 3), (576, 3 / 2)):
    register_preset(
        f"exmobilevit_{_extra}",
        ArchConfig(
            "mobilevit_v1", size="s", head="exshortcut", exshortcut_ratios=(_rho, _rho, _rho)
        ),
    )
for _family in mobilenet.TEMPLATES:
    register_preset(_family, ArchConfig(_family, resolution=mobilenet.DEFAULT_RESOLUTION))
for _size in efficientvit.VARIANTS:
    register_preset(
        f"efficientvit_{_size}",
        ArchConfig("efficientvit", size=_size, resolution=efficientvit.DEFAULT_RESOLUTION),
    )
