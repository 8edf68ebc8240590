"""MobileNet v1, v2, v3-large and v3-small as reference baselines, each as a table of stages.

The tables follow the papers and torchvision's layouts (MobileNet v1, which torchvision lacks,
follows the paper with the usual stride-1 last block), so at 1000 classes the parameter counts
are exactly 4,231,976 / 3,504,872 / 5,483,032 / 2,542,856. A "stage" is a run of blocks
sharing an output width (the first may stride); the cube's d_i repeats a stage's last block
with stride 1, w scales every width with make_divisible(c·w, 8) (squeeze-excite widths are
re-derived as make_divisible(hidden // 4, 8), torchvision's rule), d_m has no effect.

Imports `models.arch` only (the blocks are in `models.layers`).
"""

from __future__ import annotations

from vitcube.models.arch import BlockTemplate, FamilyTemplate, StageTemplate


def _ir(out: int, stride: int, *, t: float, act: str = "relu6") -> BlockTemplate:
    return BlockTemplate("inverted_residual", out, stride, 3, expand_ratio=t, activation=act)


def _bneck(k: int, hidden: int, out: int, se: bool, act: str, stride: int = 1) -> BlockTemplate:
    act_name = {"RE": "relu", "HS": "hardswish"}[act]
    return BlockTemplate(
        "inverted_residual", out, stride, k, hidden_channels=hidden, se=se, activation=act_name
    )


def _sep(out: int, stride: int = 1) -> BlockTemplate:
    return BlockTemplate("separable", out, stride, 3, activation="relu")


def _stages(*stages: tuple[BlockTemplate, ...]) -> tuple[StageTemplate, ...]:
    return tuple(StageTemplate(number=i, blocks=b) for i, b in enumerate(stages, start=1))


def _mobilenet_v2_stages() -> tuple[StageTemplate, ...]:
    # (t, c, n, s) of the paper's Table 2
    table = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
             (6, 160, 3, 2), (6, 320, 1, 1))  # fmt: skip
    return _stages(
        *(tuple(_ir(c, s if i == 0 else 1, t=t) for i in range(n)) for t, c, n, s in table)
    )


TEMPLATES: dict[str, FamilyTemplate] = {
    "mobilenet_v1": FamilyTemplate(
        stem_channels=32,
        stages=_stages(
            (_sep(64),),
            (_sep(128, 2), _sep(128)),
            (_sep(256, 2), _sep(256)),
            (_sep(512, 2), *(_sep(512) for _ in range(5))),
            (_sep(1024, 2), _sep(1024)),
        ),
    ),
    "mobilenet_v2": FamilyTemplate(
        stem_channels=32, stages=_mobilenet_v2_stages(), head_channels=1280
    ),
    "mobilenet_v3_large": FamilyTemplate(
        stem_channels=16,
        stages=_stages(
            (_bneck(3, 16, 16, False, "RE"),),
            (_bneck(3, 64, 24, False, "RE", 2), _bneck(3, 72, 24, False, "RE")),
            (
                _bneck(5, 72, 40, True, "RE", 2),
                _bneck(5, 120, 40, True, "RE"),
                _bneck(5, 120, 40, True, "RE"),
            ),
            (
                _bneck(3, 240, 80, False, "HS", 2),
                _bneck(3, 200, 80, False, "HS"),
                _bneck(3, 184, 80, False, "HS"),
                _bneck(3, 184, 80, False, "HS"),
            ),
            (_bneck(3, 480, 112, True, "HS"), _bneck(3, 672, 112, True, "HS")),
            (
                _bneck(5, 672, 160, True, "HS", 2),
                _bneck(5, 960, 160, True, "HS"),
                _bneck(5, 960, 160, True, "HS"),
            ),
        ),
        head_channels=960,
        classifier_hidden=1280,
    ),
    "mobilenet_v3_small": FamilyTemplate(
        stem_channels=16,
        stages=_stages(
            (_bneck(3, 16, 16, True, "RE", 2),),
            (_bneck(3, 72, 24, False, "RE", 2), _bneck(3, 88, 24, False, "RE")),
            (
                _bneck(5, 96, 40, True, "HS", 2),
                _bneck(5, 240, 40, True, "HS"),
                _bneck(5, 240, 40, True, "HS"),
            ),
            (_bneck(5, 120, 48, True, "HS"), _bneck(5, 144, 48, True, "HS")),
            (
                _bneck(5, 288, 96, True, "HS", 2),
                _bneck(5, 576, 96, True, "HS"),
                _bneck(5, 576, 96, True, "HS"),
            ),
        ),
        head_channels=576,
        classifier_hidden=1024,
    ),
}
DEFAULT_RESOLUTION = 224
"""The resolution the MobileNet papers report at (their presets default to it)."""


def template(family: str, dropped_stages: tuple[int, ...] = ()) -> FamilyTemplate:
    """The baseline of MobileNet `family` without `dropped_stages`."""
    full = TEMPLATES[family]
    return FamilyTemplate(
        stem_channels=full.stem_channels,
        stages=tuple(s for s in full.stages if s.number not in dropped_stages),
        head_channels=full.head_channels,
        classifier_hidden=full.classifier_hidden,
    )
