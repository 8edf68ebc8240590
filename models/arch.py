"""Concrete architectures: the value `ArchConfig.scale()` returns and `build_model` builds.

An `Arch` spells out one network completely — input resolution, stem width, every stage's
blocks (kind, widths, kernel, stride, squeeze-excite width, activation), the MobileViT block
ending a stage (transformer dim, depth, FFN dim, heads, patch size, fusion), the head — as
plain integers, so that it round-trips through JSON (trials store it, workers rebuild from it)
and so that the analytic cost model (`models.cost`) and the PyTorch builder
(`models.network`) read the same description. This module also holds the *templates* the
family files describe their variants with, and the scaling rule of the cube (README.md,
"How it works") that turns a template into an `Arch`.

Pure Python: must not import torch (the cost model and the search run on it thousands of
times per proposal), nor anything outside `models`.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vitcube.models.config import ArchConfig

FACTORS = ("r", "d_i", "d_m", "w")
"""The four global architecture factors: resolution, MV2 depth, transformer depth, width."""

BLOCK_KINDS = ("inverted_residual", "separable", "conv", "dw_ffn", "patch_merging")
TRANSFORMER_KINDS = ("mobilevit_v1", "mobilevit_v2", "efficientvit")
ACTIVATIONS = ("relu", "relu6", "hardswish", "silu", "none")
RESOLUTION_STEP = 16
"""`scale` rounds r·R0 to a multiple of this many pixels."""
MAX_FACTOR = 10.0
"""Upper bound on every factor: beyond it a network is a typo, not a search point."""


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round `value` to the nearest multiple of `divisor`, never below `min_value` (default
    `divisor`) and never more than 10 % below `value` — the rule of MobileNet v2, ml-cvnets
    and timm, so presets reproduce the reference channel counts.
    """
    floor = divisor if min_value is None else min_value
    rounded = max(floor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def conv_out(size: int, kernel_size: int, stride: int) -> int:
    """Spatial size after a convolution with padding kernel_size // 2 (all of ours)."""
    pad = kernel_size // 2
    return (size + 2 * pad - kernel_size) // stride + 1


# --------------------------------------------------------------------------------------
# Concrete description (what `Arch` holds)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConvBlock:
    """One convolutional block of a stage.

    kind "inverted_residual" (MobileNet v2 / MV2 / MobileNet v3 bneck): optional 1×1 expansion
    to `hidden_channels` (present iff hidden_channels differs from the block's input width),
    depthwise k×k with `stride`, optional squeeze-excite of width `se_channels` (0: none),
    linear 1×1 projection to `out_channels`; residual iff stride 1 and input == output width.
    kind "separable" (MobileNet v1): depthwise k×k with `stride` then 1×1 to `out_channels`,
    both followed by BN and the activation; `hidden_channels` equals the input width.
    EfficientViT's kinds (`models.efficientvit`): "conv", a plain k×k conv with `stride` + BN +
    the activation ("none": none), `hidden_channels` equal to the input width; "dw_ffn", the
    residual pair x + DW(x) (k×k depthwise + BN), x + FFN(x) (1×1 to `hidden_channels`, ReLU,
    1×1 back), stride 1 and `out_channels` equal to the input width; "patch_merging", an
    inverted residual whose squeeze-excite gate is a sigmoid (EfficientViT's subsample).
    """

    kind: str
    out_channels: int
    hidden_channels: int
    kernel_size: int = 3
    stride: int = 1
    se_channels: int = 0
    activation: str = "silu"


@dataclass(frozen=True)
class TransformerSpec:
    """The MobileViT block ending a stage.

    kind "mobilevit_v1": 3×3 conv, 1×1 to `dim`, unfold into 2×2-patch token sequences,
    `depth` pre-norm transformer layers (multi-head attention with `num_heads`, FFN of width
    `ffn_dim`), LayerNorm, fold, 1×1 back to the stage width, and (if `fusion`) a 3×3 conv
    over [input, output] concatenated.
    kind "mobilevit_v2": depthwise 3×3, 1×1 to `dim`, `depth` layers of separable linear
    self-attention + 1×1-conv FFN with GroupNorm(1) pre-norms, GroupNorm, 1×1 projection;
    no fusion, `num_heads` is 1.
    kind "efficientvit": `depth` EfficientViT blocks on the stage's own width (`dim` equals the
    stage's output width; FFNs of `ffn_dim`), cascaded group attention with `num_heads` heads
    of query/key width `key_dim`, value width dim / num_heads, windows of `window_size`
    pixels and one depthwise query kernel per head (`query_kernels`); patch size 1, no fusion.
    The last three fields are 0 / () for the MobileViT kinds and absent from their JSON.
    """

    kind: str
    dim: int
    depth: int
    ffn_dim: int
    num_heads: int = 4
    patch_size: int = 2
    fusion: bool = True
    key_dim: int = 0
    window_size: int = 0
    query_kernels: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.query_kernels, list):
            object.__setattr__(self, "query_kernels", tuple(self.query_kernels))


@dataclass(frozen=True)
class Stage:
    """A stage: `blocks` (the first carries the stage's stride) then an optional MobileViT
    block. `number` is the stage's 1-based position in its family's baseline (the stem is
    stage 0), kept when earlier stages are dropped so reports name stages consistently.
    """

    number: int
    blocks: tuple[ConvBlock, ...]
    transformer: TransformerSpec | None = None

    @property
    def out_channels(self) -> int:
        return self.blocks[-1].out_channels

    @property
    def stride(self) -> int:
        return math.prod(block.stride for block in self.blocks)


@dataclass(frozen=True)
class Arch:
    """One concrete network (see the module docstring). Build it with `build_model`, cost it
    with `count_macs` / `count_params`; `to_dict()` / `from_dict()` round-trip through JSON.

    Fields: `resolution` input pixels (square); `num_classes`; `base` the `ArchConfig` it was
    scaled from (effective factors are ratios to `base.scale()`); `stem_channels` width of the
    3×3 stride-2 stem; `stages`; `head_channels` width of the 1×1 conv before global pooling
    (0: none, as in MobileViT v2 and MobileNet v1); `classifier_hidden` width of the hidden
    linear layer of MobileNet v3's classifier (0: none); `exshortcut_channels` the widths of
    the ExMobileViT shortcut 1×1 convs on the outputs of the last len(...) stages (empty for
    the standard head).
    """

    resolution: int
    num_classes: int
    base: ArchConfig
    stem_channels: int
    stages: tuple[Stage, ...]
    head_channels: int = 0
    classifier_hidden: int = 0
    exshortcut_channels: tuple[int, ...] = field(default=())

    def __post_init__(self) -> None:
        _validate_arch(self)

    # -- readable per-stage views -------------------------------------------------------
    @property
    def family(self) -> str:
        return self.base.family

    @property
    def mv2_blocks(self) -> tuple[int, ...]:
        """Convolutional (MV2 / bneck / separable) blocks per stage."""
        return tuple(len(stage.blocks) for stage in self.stages)

    @property
    def channels(self) -> tuple[int, ...]:
        """Output width of each stage."""
        return tuple(stage.out_channels for stage in self.stages)

    @property
    def transformer_depths(self) -> tuple[int, ...]:
        """Transformer layers per stage (0 where a stage has no MobileViT block)."""
        return tuple(s.transformer.depth if s.transformer else 0 for s in self.stages)

    @property
    def transformer_dims(self) -> tuple[int, ...]:
        """Attention dim per stage (0 where a stage has no MobileViT block)."""
        return tuple(s.transformer.dim if s.transformer else 0 for s in self.stages)

    @property
    def downsamplings(self) -> int:
        """Number of stride-2 layers (stem included)."""
        return 1 + sum(int(math.log2(stage.stride)) for stage in self.stages)

    # -- factors, identity, JSON ----------------------------------------------------------
    def effective_factors(self) -> dict[str, float]:
        """What was built, as ratios to the baseline `self.base.scale()`:

        - ``r``: resolution / base resolution R0.
        - ``d_i``: the largest MV2 depth multiplier that builds these block counts,
          min over stages of (blocks / baseline blocks); every d_i in the interval that
          `ceil` maps to the same counts gives the same network, and this is its upper end,
          so ``scale(d_i=effective["d_i"])`` rebuilds exactly these counts.
        - ``d_m``: the same for transformer depths (1.0 for families without transformers).
        - ``w``: the mean, over every width the cube scales (stem, each stage's output,
          each MobileViT block's attention and FFN dims, head conv, classifier hidden layer,
          ExMobileViT shortcut convs), of built / baseline width.
        """
        baseline = _baseline(self.base)
        if len(baseline.stages) != len(self.stages):
            raise ValueError(
                f"this Arch has {len(self.stages)} stages but its base config builds "
                f"{len(baseline.stages)}: it was not scaled from {self.base.to_dict()}"
            )
        d_i = min(
            len(s.blocks) / len(b.blocks) for s, b in zip(self.stages, baseline.stages, strict=True)
        )
        depth_ratios = [
            s.transformer.depth / b.transformer.depth
            for s, b in zip(self.stages, baseline.stages, strict=True)
            if s.transformer is not None and b.transformer is not None
        ]
        built, base = _width_vector(self), _width_vector(baseline)
        width_ratios = [x / y for x, y in zip(built, base, strict=True) if y > 0]
        return {
            "r": self.resolution / self.base.resolution,
            "d_i": d_i,
            "d_m": min(depth_ratios) if depth_ratios else 1.0,
            "w": sum(width_ratios) / len(width_ratios),
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-able; `Arch.from_dict(arch.to_dict()) == arch`."""
        return {
            "resolution": self.resolution,
            "num_classes": self.num_classes,
            "base": self.base.to_dict(),
            **self._structure(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Arch:
        """Rebuild from `to_dict()` output; raises ValueError on malformed input."""
        from vitcube.models.config import ArchConfig

        if not isinstance(data, dict):
            raise ValueError(f"an Arch must be a JSON object, got {type(data).__name__}")
        expected = {
            "resolution",
            "num_classes",
            "base",
            "stem_channels",
            "stages",
            "head_channels",
            "classifier_hidden",
            "exshortcut_channels",
        }
        _check_keys("Arch", data, required=expected, optional=set())
        try:
            stages = tuple(_stage_from_dict(s) for s in data["stages"])
            return cls(
                resolution=_int(data["resolution"], "resolution"),
                num_classes=_int(data["num_classes"], "num_classes"),
                base=ArchConfig.from_dict(data["base"]),
                stem_channels=_int(data["stem_channels"], "stem_channels"),
                stages=stages,
                head_channels=_int(data["head_channels"], "head_channels"),
                classifier_hidden=_int(data["classifier_hidden"], "classifier_hidden"),
                exshortcut_channels=tuple(
                    _int(c, "exshortcut_channels") for c in data["exshortcut_channels"]
                ),
            )
        except (TypeError, KeyError) as exc:
            raise ValueError(f"malformed Arch: {exc}") from exc

    def key(self) -> str:
        """A short hash that is identical for identical networks (the base config and its R0
        do not enter: two bases that build the same network give the same key)."""
        payload = {
            "family": self.family,
            "resolution": self.resolution,
            "num_classes": self.num_classes,
            **self._structure(),
        }
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:20]

    def _structure(self) -> dict[str, Any]:
        return {
            "stem_channels": self.stem_channels,
            "stages": [_stage_to_dict(stage) for stage in self.stages],
            "head_channels": self.head_channels,
            "classifier_hidden": self.classifier_hidden,
            "exshortcut_channels": list(self.exshortcut_channels),
        }


def _baseline(config: ArchConfig) -> Arch:
    return config.baseline()


def _width_vector(arch: Arch) -> list[int]:
    widths = [arch.stem_channels]
    for stage in arch.stages:
        widths.append(stage.out_channels)
        if stage.transformer is not None:
            widths += [stage.transformer.dim, stage.transformer.ffn_dim]
    widths += [arch.head_channels, arch.classifier_hidden, *arch.exshortcut_channels]
    return widths


def _stage_to_dict(stage: Stage) -> dict[str, Any]:
    t = stage.transformer
    transformer: dict[str, Any] | None = None
    if t is not None:
        transformer = {
            "kind": t.kind,
            "dim": t.dim,
            "depth": t.depth,
            "ffn_dim": t.ffn_dim,
            "num_heads": t.num_heads,
            "patch_size": t.patch_size,
            "fusion": t.fusion,
        }
        if t.kind == "efficientvit":  # only here, so the MobileViT keys stay as they were
            transformer |= {
                "key_dim": t.key_dim,
                "window_size": t.window_size,
                "query_kernels": list(t.query_kernels),
            }
    return {
        "number": stage.number,
        "blocks": [
            {
                "kind": b.kind,
                "out_channels": b.out_channels,
                "hidden_channels": b.hidden_channels,
                "kernel_size": b.kernel_size,
                "stride": b.stride,
                "se_channels": b.se_channels,
                "activation": b.activation,
            }
            for b in stage.blocks
        ],
        "transformer": transformer,
    }


def _stage_from_dict(data: Any) -> Stage:
    if not isinstance(data, dict):
        raise ValueError(f"a stage must be a JSON object, got {data!r}")
    _check_keys("stage", data, required={"number", "blocks", "transformer"}, optional=set())
    blocks = []
    for b in data["blocks"]:
        if not isinstance(b, dict):
            raise ValueError(f"a block must be a JSON object, got {b!r}")
        keys = {"kind", "out_channels", "hidden_channels", "kernel_size", "stride"}
        _check_keys("block", b, required=keys, optional={"se_channels", "activation"})
        blocks.append(
            ConvBlock(
                kind=_str(b["kind"], "block kind"),
                out_channels=_int(b["out_channels"], "out_channels"),
                hidden_channels=_int(b["hidden_channels"], "hidden_channels"),
                kernel_size=_int(b["kernel_size"], "kernel_size"),
                stride=_int(b["stride"], "stride"),
                se_channels=_int(b.get("se_channels", 0), "se_channels"),
                activation=_str(b.get("activation", "silu"), "activation"),
            )
        )
    t = data["transformer"]
    transformer = None
    if t is not None:
        if not isinstance(t, dict):
            raise ValueError(f"a transformer must be a JSON object or null, got {t!r}")
        keys = {"kind", "dim", "depth", "ffn_dim"}
        optional = {"num_heads", "patch_size", "fusion", "key_dim", "window_size", "query_kernels"}
        _check_keys("transformer", t, required=keys, optional=optional)
        fusion = t.get("fusion", True)
        if not isinstance(fusion, bool):
            raise ValueError(f"transformer fusion must be true or false, got {fusion!r}")
        kernels = t.get("query_kernels", [])
        if not isinstance(kernels, list):
            raise ValueError(f"query_kernels must be a list, got {kernels!r}")
        transformer = TransformerSpec(
            kind=_str(t["kind"], "transformer kind"),
            dim=_int(t["dim"], "transformer dim"),
            depth=_int(t["depth"], "transformer depth"),
            ffn_dim=_int(t["ffn_dim"], "ffn_dim"),
            num_heads=_int(t.get("num_heads", 4), "num_heads"),
            patch_size=_int(t.get("patch_size", 2), "patch_size"),
            fusion=fusion,
            key_dim=_int(t.get("key_dim", 0), "key_dim"),
            window_size=_int(t.get("window_size", 0), "window_size"),
            query_kernels=tuple(_int(k, "query_kernels entry") for k in kernels),
        )
    return Stage(
        number=_int(data["number"], "stage number"), blocks=tuple(blocks), transformer=transformer
    )


def _check_keys(what: str, data: dict[str, Any], *, required: set[str], optional: set[str]) -> None:
    missing = sorted(required - data.keys())
    unknown = sorted(data.keys() - required - optional)
    if missing:
        raise ValueError(f"{what} is missing {missing}")
    if unknown:
        raise ValueError(
            f"{what} has unknown keys {unknown}; allowed: {sorted(required | optional)}"
        )


def _int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    return value


def _str(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string, got {value!r}")
    return value


def min_resolution(downsamplings: int) -> int:
    """Smallest input that survives `downsamplings` stride-2 layers with ≥ 1 pixel per step."""
    return 2**downsamplings


def _validate_efficientvit(t: TransformerSpec, where: str, channels: int) -> None:
    if t.dim != channels:
        raise ValueError(
            f"{where}: EfficientViT blocks run on the stage width {channels}, got dim {t.dim}"
        )
    if t.key_dim < 1 or t.window_size < 1:
        raise ValueError(
            f"{where}: key_dim and window_size must be ≥ 1, got {t.key_dim}, {t.window_size}"
        )
    if len(t.query_kernels) != t.num_heads or any(k not in (1, 3, 5, 7) for k in t.query_kernels):
        raise ValueError(
            f"{where}: query_kernels needs one kernel (1, 3, 5 or 7) per head ({t.num_heads}), "
            f"got {list(t.query_kernels)}"
        )


def _validate_arch(arch: Arch) -> None:
    def positive(value: int, name: str) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer (≥ 1), got {value!r}")

    positive(arch.num_classes, "num_classes")
    positive(arch.stem_channels, "stem_channels")
    if not arch.stages:
        raise ValueError("an Arch needs at least one stage")
    channels = arch.stem_channels
    for stage in arch.stages:
        where = f"stage {stage.number}"
        if not stage.blocks:
            raise ValueError(f"{where} has no blocks; every stage needs ≥ 1 block")
        for block in stage.blocks:
            if block.kind not in BLOCK_KINDS:
                raise ValueError(f"{where}: block kind {block.kind!r} not in {BLOCK_KINDS}")
            if block.activation not in ACTIVATIONS:
                raise ValueError(f"{where}: activation {block.activation!r} not in {ACTIVATIONS}")
            positive(block.out_channels, f"{where} block out_channels (zero channels?)")
            positive(block.hidden_channels, f"{where} block hidden_channels (zero channels?)")
            if block.kernel_size not in (1, 3, 5, 7):
                raise ValueError(
                    f"{where}: kernel_size must be 1, 3, 5 or 7, got {block.kernel_size}"
                )
            if block.stride not in (1, 2):
                raise ValueError(f"{where}: stride must be 1 or 2, got {block.stride}")
            if block.se_channels < 0:
                raise ValueError(f"{where}: se_channels must be ≥ 0, got {block.se_channels}")
            if block.kind == "dw_ffn" and (block.stride != 1 or block.out_channels != channels):
                raise ValueError(
                    f"{where}: a dw_ffn block is a residual pair: stride 1 and out_channels equal "
                    f"to its input width {channels}, got stride {block.stride} and "
                    f"{block.out_channels}"
                )
            channels = block.out_channels
        t = stage.transformer
        if t is not None:
            if t.kind not in TRANSFORMER_KINDS:
                raise ValueError(f"{where}: transformer kind {t.kind!r} not in {TRANSFORMER_KINDS}")
            positive(t.dim, f"{where} transformer dim (zero channels?)")
            positive(t.depth, f"{where} transformer depth")
            positive(t.ffn_dim, f"{where} ffn_dim (zero channels?)")
            positive(t.num_heads, f"{where} num_heads")
            positive(t.patch_size, f"{where} patch_size")
            if t.dim % t.num_heads:
                raise ValueError(
                    f"{where}: transformer dim {t.dim} is not divisible by num_heads {t.num_heads}"
                )
            if t.kind == "efficientvit":
                _validate_efficientvit(t, where, channels)
            elif t.key_dim or t.window_size or t.query_kernels:
                raise ValueError(
                    f"{where}: key_dim, window_size and query_kernels are EfficientViT's, not "
                    f"{t.kind}'s"
                )
    if arch.head_channels < 0 or arch.classifier_hidden < 0:
        raise ValueError("head_channels and classifier_hidden must be ≥ 0 (0: no such layer)")
    if len(arch.exshortcut_channels) > len(arch.stages):
        raise ValueError(
            f"{len(arch.exshortcut_channels)} ExMobileViT shortcuts but only "
            f"{len(arch.stages)} stages"
        )
    for c in arch.exshortcut_channels:
        positive(c, "exshortcut_channels entry (zero channels?)")
    need = min_resolution(arch.downsamplings)
    if isinstance(arch.resolution, bool) or not isinstance(arch.resolution, int):
        raise ValueError(f"resolution must be an integer, got {arch.resolution!r}")
    if arch.resolution < need:
        raise ValueError(
            f"a {arch.resolution} px input is too small for the {arch.downsamplings} stride-2 "
            f"downsamplings of this network; the resolution must be ≥ {need} px"
        )


# --------------------------------------------------------------------------------------
# Templates: how family files describe a baseline, and the scaling rule
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BlockTemplate:
    """A baseline block before scaling. The hidden width is either derived from the block's
    (scaled) input width, `make_divisible(round(in · expand_ratio), 8)` as MV2 does, or given
    explicitly (`hidden_channels`, MobileNet v3) and scaled like every width. `se` adds a
    squeeze-excite of width make_divisible(hidden // 4, 8) (MobileNet v3's rule)."""

    kind: str
    out_channels: int
    stride: int = 1
    kernel_size: int = 3
    expand_ratio: float | None = None
    hidden_channels: int | None = None
    se: bool = False
    activation: str = "silu"
    divisor: int = 8
    """`out_channels` scale to make_divisible(c · w, divisor) (EfficientViT: 8 · heads)."""


@dataclass(frozen=True)
class StageTemplate:
    """A baseline stage; `number` is its 1-based position in the family's full baseline."""

    number: int
    blocks: tuple[BlockTemplate, ...]
    transformer: TransformerSpec | None = None


@dataclass(frozen=True)
class FamilyTemplate:
    """A baseline network before scaling: the unit the cube's factors multiply."""

    stem_channels: int
    stages: tuple[StageTemplate, ...]
    head_channels: int = 0
    classifier_hidden: int = 0


def scaled_depth(count: int, factor: float) -> int:
    """n → max(1, ceil(factor · n)), guarded against float noise (1.1 · 10 = 11.000000000000002)."""
    return max(1, math.ceil(round(factor * count, 9)))


def scale_template(
    template: FamilyTemplate,
    *,
    d_i: float,
    d_m: float,
    w: float,
    exshortcut_ratios: tuple[float, ...] = (),
) -> tuple[int, tuple[Stage, ...], int, int, tuple[int, ...]]:
    """Apply the cube's depth and width rules (README.md) to `template`; resolution is the caller's.

    Returns (stem_channels, stages, head_channels, classifier_hidden, exshortcut_channels).
    Extra blocks repeat the stage's last block with stride 1; an EfficientViT transformer takes
    the stage's (scaled) output width as its dim; the
    ExMobileViT shortcut widths are make_divisible(ρ · C_base · w, 8) for the last
    len(exshortcut_ratios) stages, C_base the baseline output width of the stage.
    """

    def width(c: int) -> int:
        return make_divisible(c * w, 8)

    stem = width(template.stem_channels)
    in_channels = stem
    stages: list[Stage] = []
    for stage_t in template.stages:
        count = scaled_depth(len(stage_t.blocks), d_i)
        block_templates = list(stage_t.blocks)
        last = stage_t.blocks[-1]
        repeat = BlockTemplate(
            kind=last.kind,
            out_channels=last.out_channels,
            stride=1,
            kernel_size=last.kernel_size,
            expand_ratio=last.expand_ratio,
            hidden_channels=last.hidden_channels,
            se=last.se,
            activation=last.activation,
            divisor=last.divisor,
        )
        block_templates += [repeat] * (count - len(block_templates))
        blocks: list[ConvBlock] = []
        for bt in block_templates[:count]:
            out = make_divisible(bt.out_channels * w, bt.divisor)
            if bt.kind in ("separable", "conv"):
                hidden = in_channels
            elif bt.hidden_channels is not None:
                hidden = width(bt.hidden_channels)
            else:
                ratio = 1.0 if bt.expand_ratio is None else bt.expand_ratio
                hidden = make_divisible(round(in_channels * ratio), 8)
            se = make_divisible(hidden // 4, 8) if bt.se else 0
            blocks.append(
                ConvBlock(
                    kind=bt.kind,
                    out_channels=out,
                    hidden_channels=hidden,
                    kernel_size=bt.kernel_size,
                    stride=bt.stride,
                    se_channels=se,
                    activation=bt.activation,
                )
            )
            in_channels = out
        transformer = None
        if stage_t.transformer is not None:
            t = stage_t.transformer
            transformer = TransformerSpec(
                kind=t.kind,
                dim=in_channels if t.kind == "efficientvit" else width(t.dim),
                depth=scaled_depth(t.depth, d_m),
                ffn_dim=width(t.ffn_dim),
                num_heads=t.num_heads,
                patch_size=t.patch_size,
                fusion=t.fusion,
                key_dim=t.key_dim,
                window_size=t.window_size,
                query_kernels=t.query_kernels,
            )
        stages.append(Stage(number=stage_t.number, blocks=tuple(blocks), transformer=transformer))
    head = width(template.head_channels) if template.head_channels else 0
    hidden_fc = width(template.classifier_hidden) if template.classifier_hidden else 0
    shortcut_stages = template.stages[len(template.stages) - len(exshortcut_ratios) :]
    exshortcut = tuple(
        make_divisible(rho * st.blocks[-1].out_channels * w, 8)
        for rho, st in zip(exshortcut_ratios, shortcut_stages, strict=True)
    )
    return stem, tuple(stages), head, hidden_fc, exshortcut
