"""What travels over the wire between the vitcube server and its workers, defined once.

The factor names and the default space, the trial and search states, the dataset names, the
training recipe (`TrainingRecipe`), the lease a worker receives (`TrialLease`) and the reports
it sends back (`TrialHeartbeat`, `TrialReport`, `TrialFailure`) with the server's replies, and
the views every reader gets (`SearchPublic`, `TrialPublic`, `SearchPlan`, `FormulaPublic`). The
server validates request bodies with these classes and the worker builds its requests and
parses its leases with the same ones, so the server refuses at `POST` exactly what a worker
would refuse, and every default lives here (Vizier's shared `study.proto` plays this role).

Numbers are strict wherever a worker or a user sends them: a JSON boolean is not a number, an
integer field takes only integers, a float field takes integers and floats, never NaN or ±inf.

Imports the standard library and pydantic only: nothing heavy (torch, numpy, fastapi,
sqlalchemy) and nothing of vitcube's, so a GPU box and the server both import it cheaply
(an import-linter contract holds this). `models/` and `search/` keep their own copies of the
factor names and the default space (they may not import this module); a test keeps them equal.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Annotated, Any, Literal, Self, get_args, get_origin

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    StrictBool,
    StrictFloat,
    StrictInt,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError

# -- the cube ---------------------------------------------------------------------------------

Factor = Literal["r", "d_i", "d_m", "w"]
FACTORS: tuple[Factor, ...] = get_args(Factor)

# The paper's sampling ranges (README.md, "How it works"); every search may set its own.
DEFAULT_SPACE: Mapping[str, tuple[float, float]] = MappingProxyType(
    {"r": (0.8, 1.7), "d_i": (1.3, 2.3), "d_m": (0.8, 1.6), "w": (0.4, 1.2)}
)

# -- states and kinds -------------------------------------------------------------------------

SearchState = Literal["running", "paused", "completed", "stopped", "failed"]
SEARCH_STATES: tuple[SearchState, ...] = get_args(SearchState)

# `paused`: a multi-fidelity trial waiting at a rung of its schedule (`queued` again when
# promoted); its top-1 so far is a partial result.
TrialState = Literal["queued", "running", "paused", "completed", "failed", "stopped"]
TRIAL_STATES: tuple[TrialState, ...] = get_args(TrialState)

# `reference:named`: a preset the create body names in `references` (EfficientViT-M2, a
# MobileNet, …), trained beside the search's own networks but never fitted on (another family).
TrialKind = Literal[
    "reference:width_only", "reference:compound", "reference:baseline", "reference:named", "search"
]
TRIAL_KINDS: tuple[TrialKind, ...] = get_args(TrialKind)

# -- datasets ---------------------------------------------------------------------------------

DatasetName = Literal["digits", "cifar10", "cifar100", "imagefolder", "shapes"]
DATASETS: tuple[DatasetName, ...] = get_args(DatasetName)

# Class counts of the datasets that have a fixed one; an imagefolder has as many as folders.
DATASET_CLASSES: Mapping[str, int] = MappingProxyType(
    {"digits": 10, "cifar10": 10, "cifar100": 100, "shapes": 10}
)

# The centre crop taken before resizing for evaluation (ImageNet-style 0.875 for image folders;
# the whole image elsewhere): what the worker evaluates with and what an exported network expects.
EVAL_CROP_FRACTION: Mapping[str, float] = MappingProxyType({"imagefolder": 0.875})

# How an imagefolder's files lie (`dataset.layout`): class folders, TinyImageNet as it unpacks, or
# whichever of the two is on disk (the default). The server refuses any other value at POST.
ImagefolderLayout = Literal["auto", "folders", "tinyimagenet"]
IMAGEFOLDER_LAYOUTS: tuple[ImagefolderLayout, ...] = get_args(ImagefolderLayout)


def preprocessing(dataset: str, resolution: int) -> dict[str, Any]:
    """How a trained network expects its input: the worker's evaluation path
    (`workers.augment.center_resize`), written beside every exported network."""
    return {
        "resolution": resolution,
        "layout": "NCHW float32, RGB",
        "scale": "pixels / 255 (values in [0, 1])",
        "mean": [0.0, 0.0, 0.0],
        "std": [1.0, 1.0, 1.0],
        "crop_fraction": EVAL_CROP_FRACTION.get(dataset, 1.0),
        "resize": "centre crop, then bilinear to resolution x resolution (antialiased down)",
    }


# -- trainers and metrics -----------------------------------------------------------------------

# A trainer label names what trains a search's trials: "builtin" (vitcube's recipe, or the
# surrogate landscape on a `--trainer surrogate` worker) or "command:LABEL", a script the
# operator of a worker box registered with `vitcube worker --command LABEL='…'`. A lease request
# lists the labels a worker can run; a trial is leased only to a worker that lists its search's.
BUILTIN_TRAINER = "builtin"
COMMAND_LABEL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,62}$"
METRIC_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.\-/]{0,63}$"
TRAINER_LABEL_PATTERN = r"^(builtin|command:[A-Za-z0-9][A-Za-z0-9_.\-]{0,62})$"
TrainerLabel = Annotated[str, Field(min_length=1, max_length=72, pattern=TRAINER_LABEL_PATTERN)]
MetricGoal = Literal["maximize", "minimize"]


class TrainerSpec(BaseModel):
    """`{"kind": "builtin"}` (the default) or `{"kind": "command", "name": LABEL}`.

    The command itself lives on the worker (`vitcube worker --command LABEL='python train.py'`),
    never in the search: the server can never make a box run a program its operator did not
    name. `label` is what leases match on."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["builtin", "command"] = "builtin"
    name: str | None = Field(
        default=None,
        pattern=COMMAND_LABEL_PATTERN,
        description="The label a worker registered with --command LABEL='…' (command only).",
        examples=["train-v2"],
    )

    @model_validator(mode="after")
    def _name_for_commands(self) -> Self:
        if self.kind == "command" and self.name is None:
            raise ValueError(
                'a command trainer needs its name: {"kind": "command", "name": "LABEL"}, the '
                "label a worker registers with vitcube worker --command LABEL='python train.py'"
            )
        if self.kind == "builtin" and self.name is not None:
            raise ValueError(
                'trainer.name is only for {"kind": "command"}; the builtin trainer has none'
            )
        return self

    @property
    def label(self) -> str:
        return BUILTIN_TRAINER if self.kind == "builtin" else f"command:{self.name}"

    @classmethod
    def from_label(cls, label: str) -> TrainerSpec:
        if label == BUILTIN_TRAINER:
            return cls()
        kind, _, name = label.partition(":")
        if kind != "command" or not name:
            raise ValueError(f"a trainer label is builtin or command:NAME, got {label!r}")
        return cls(kind="command", name=name)


class MetricSpec(BaseModel):
    """What a search optimises: a scalar every epoch's report carries, and which way is better.

    `{"name": "val_top1", "goal": "maximize"}` by default (the builtin trainer's top-1); a
    command trainer may report any scalar (`val_map`, `val_miou`, `val_loss` with
    `"goal": "minimize"`). Everything that ranks trials (the GP, ASHA, the Pareto front, the
    formula, the median rule) ranks `score(value)`, which is higher-is-better whatever the goal,
    so none of them special-cases a direction."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(default="val_top1", pattern=METRIC_NAME_PATTERN, examples=["val_map"])
    goal: MetricGoal = "maximize"

    @property
    def maximize(self) -> bool:
        return self.goal == "maximize"

    def score(self, value: float) -> float:
        """The value as a higher-is-better number (the value itself, or its negation)."""
        return value if self.maximize else -value

    def value(self, score: float) -> float:
        """The inverse of `score`."""
        return score if self.maximize else -score

    def better(self, a: float, b: float) -> bool:
        """Whether value `a` is strictly better than value `b`."""
        return self.score(a) > self.score(b)

    def best_point(self, curve: list[dict[str, Any]]) -> dict[str, Any] | None:
        """The curve point with the best finite value of this metric (the earliest on a tie)."""
        best: dict[str, Any] | None = None
        for point in curve:
            value = point.get(self.name)
            if value is None or not _is_finite_number(value):
                continue
            if best is None or self.better(float(value), float(best[self.name])):
                best = point
        return best

    def check_value(self, value: Any, *, where: str = "the report") -> float:
        """The value as a float, or ValueError naming the metric when it is missing or not
        finite (a report the search cannot rank)."""
        if value is None:
            raise ValueError(
                f"{where} has no {self.name!r}: the search optimises {self.name} "
                f"({self.goal}), so every report must carry it"
            )
        if not _is_finite_number(value):
            raise ValueError(
                f"{where}: {self.name} must be a finite number, got {value!r} (the search "
                f"optimises {self.name} and cannot rank NaN, infinity or a non-number)"
            )
        return float(value)


def _is_finite_number(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


DEFAULT_METRIC = MetricSpec()


# -- strict numbers ---------------------------------------------------------------------------

Finite = Annotated[float, Strict(), Field(allow_inf_nan=False)]
Fraction = Annotated[float, Strict(), Field(ge=0.0, le=1.0, allow_inf_nan=False)]
NonNegative = Annotated[float, Strict(), Field(ge=0.0, allow_inf_nan=False)]
LeaseId = Annotated[str, Field(min_length=1, max_length=64)]


class _Strict(BaseModel):
    """A request body: unknown fields are an error, not silently lost data."""

    model_config = ConfigDict(extra="forbid")


# -- the training recipe ----------------------------------------------------------------------


class InvalidRecipeError(ValueError):
    """A `training` block a worker cannot train with; the message names each key and its range."""


@dataclass(frozen=True)
class FamilyRecipe:
    """The published ImageNet-1k recipe of one family (apple/ml-cvnets' configs), as the values
    `TrainingRecipe.resolved` fills into keys left null. Learning rates are stated for the
    references' global batch of `REFERENCE_BATCH` images; warm-up start and floor as shares of
    the peak, so they scale with it."""

    lr_at_reference_batch: float
    warmup_init_lr_share: float  # warm-up starts at this share of the peak LR
    min_lr_share: float  # the cosine floor as a share of the peak LR
    weight_decay: float
    decay_norms_and_biases: bool
    transformer_dropout: float
    multiscale: bool
    crop_interpolation: Literal["bilinear", "bicubic"]
    rand_augment: bool
    random_erase_p: float
    mixup_alpha: float
    cutmix_alpha: float


REFERENCE_BATCH = 1024  # 128 images per GPU x 8 GPUs in both families' configs
FAMILY_RECIPES: Mapping[str, FamilyRecipe] = MappingProxyType(
    {
        # config/classification/imagenet/mobilevit.yaml (and mobilevit_x{,x}_small.yaml): AdamW
        # wd 0.01 on every parameter, warm-up from 2e-4 to 2e-3, cosine to 2e-4, transformer
        # dropout 0.1 (0.05 for XXS), bilinear random resized crop and flip only, the variable
        # batch sampler over 160-320 px at 256 (0.625-1.25x).
        "mobilevit_v1": FamilyRecipe(
            lr_at_reference_batch=0.002,
            warmup_init_lr_share=0.1,
            min_lr_share=0.1,
            weight_decay=0.01,
            decay_norms_and_biases=True,
            transformer_dropout=0.1,
            multiscale=True,
            crop_interpolation="bilinear",
            rand_augment=False,
            random_erase_p=0.0,
            mixup_alpha=0.0,
            cutmix_alpha=0.0,
        ),
        # config/classification/imagenet/mobilevit_v2.yaml: AdamW wd 0.05 with no decay on
        # norms and biases, warm-up from 1e-6, cosine 2e-3 -> 2e-4, no dropout, bicubic crop,
        # RandAugment, RandomErasing p 0.25, Mixup alpha 0.2, CutMix alpha 1.0, fixed sampler.
        "mobilevit_v2": FamilyRecipe(
            lr_at_reference_batch=0.002,
            warmup_init_lr_share=0.0005,
            min_lr_share=0.1,
            weight_decay=0.05,
            decay_norms_and_biases=False,
            transformer_dropout=0.0,
            multiscale=False,
            crop_interpolation="bicubic",
            rand_augment=True,
            random_erase_p=0.25,
            mixup_alpha=0.2,
            cutmix_alpha=1.0,
        ),
    }
)
# MobileViT-XXS uses less transformer dropout than XS and S (mobilevit_xx_small.yaml).
V1_TRANSFORMER_DROPOUT: Mapping[str, float] = MappingProxyType({"xxs": 0.05})
# Families without a published recipe here (the MobileNet baselines) train with v2's.
GENERIC_FAMILY = "mobilevit_v2"

# Per-dataset augmentation rules: 8x8 digits cannot survive an 8 % crop, a mirrored digit is a
# different glyph, and RandAugment, RandomErasing, Mixup and CutMix destroy glyphs this small;
# CIFAR's 32 px images take gentler crops than ImageNet's. The generated shapes (workers/shapes.py)
# keep their object and its stripes' period only under mild crops, and RandAugment, RandomErasing,
# Mixup and CutMix would blur or erase the stripes their class depends on (a flip keeps the class).
CROP_SCALE_DEFAULTS: Mapping[str, tuple[float, float]] = MappingProxyType(
    {"digits": (0.5, 1.0), "cifar10": (0.25, 1.0), "cifar100": (0.25, 1.0), "shapes": (0.8, 1.0)}
)
DEFAULT_CROP_SCALE = (0.08, 1.0)
NO_FLIP_DATASETS = frozenset({"digits"})
NO_HEAVY_AUGMENTATION_DATASETS = frozenset({"digits", "shapes"})


class TrainingRecipe(BaseModel):
    """A search's `training` block: how every trial of the search is trained.

    Every key is optional and unknown keys are an error; an explicit value always wins. A key
    left null takes the published recipe of the search's family (apple/ml-cvnets'
    `mobilevit.yaml` for `mobilevit_v1`, `mobilevit_v2.yaml` for `mobilevit_v2` and every other
    family, `FAMILY_RECIPES`) adjusted for the dataset: `resolved(family=..., dataset=...)`
    fills it in. The server resolves the block at POST and stores the result, so the stored
    recipe (and every lease) says what trains; a worker resolves again from the trial's
    architecture, which changes nothing in a resolved block. Only `eval_batch_size`, `amp` and
    `channels_last` stay for the worker's device to decide.

    Peak LR: the references state 0.002 for a global batch of 1024; a null `lr` is that value
    scaled by the square-root rule, lr = 0.002 * sqrt(batch_size / 1024) (0.0005 at 64). AdamW
    normalises each step by the gradient's running RMS, so the update size does not grow with
    the batch as SGD's does; matching the noise scale of the update gives the square root
    (Malladi et al., 2022, "On the SDEs and scaling rules for adaptive gradient algorithms"),
    where the linear rule (Goyal et al., 2017) is SGD's and would give 0.000125 at 64. Null
    `min_lr` and `warmup_init_lr` keep the references' shares of the peak (a tenth; v1 warms
    up from a tenth, v2 from 1/2000). The LR schedule (linear warm-up, then cosine to min_lr)
    spans the full `epochs`.

    Reproducibility: the trial's seed fixes the initial weights, the batch order and every
    random augmentation. On the CPU the same seed and recipe reproduce a trial bit for bit. On a
    GPU they do not: cuDNN autotuning (on for speed) may pick different kernels per run, and
    atomic adds in the backward pass of convolutions, grid_sample and scatter-based ops sum in a
    different order every run, so two runs drift apart in the last bits and then further;
    expect the same accuracy up to run-to-run noise, not the same numbers.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    epochs: StrictInt = Field(
        default=100, ge=1, le=10_000, description="Training epochs per trial."
    )
    batch_size: StrictInt = Field(
        default=64, ge=1, le=65_536, description="Training images per step."
    )
    lr: StrictFloat | None = Field(
        default=None,
        gt=0.0,
        lt=10.0,
        description="Peak learning rate (AdamW); null: the family's 0.002 at batch 1024 "
        "scaled by sqrt(batch_size / 1024).",
    )
    min_lr: StrictFloat | None = Field(
        default=None, ge=0.0, description="Cosine floor, at most lr; null: lr / 10."
    )
    warmup_epochs: StrictFloat | None = Field(
        default=None, ge=0.0, description="Linear warm-up length (≤ epochs); null: 5 % of epochs."
    )
    warmup_init_lr: StrictFloat | None = Field(
        default=None,
        ge=0.0,
        description="Learning rate the warm-up starts from, at most lr; null: lr / 10 for "
        "mobilevit_v1, lr / 2000 otherwise.",
    )
    weight_decay: StrictFloat | None = Field(
        default=None,
        ge=0.0,
        lt=1.0,
        description="AdamW weight decay; null: 0.01 for mobilevit_v1, 0.05 otherwise.",
    )
    decay_norms_and_biases: StrictBool | None = Field(
        default=None,
        description="Apply weight decay to norm scales/shifts and biases too; null: true for "
        "mobilevit_v1 (decay on every parameter), false otherwise.",
    )
    label_smoothing: StrictFloat = Field(default=0.1, ge=0.0, lt=1.0)
    ema_decay: StrictFloat = Field(
        default=0.9995,
        ge=0.0,
        lt=1.0,
        description="Per-step decay of the EMA weights that are reported.",
    )
    grad_clip: StrictFloat = Field(
        default=10.0, ge=0.0, description="Max gradient norm; 0 disables."
    )
    transformer_dropout: StrictFloat | None = Field(
        default=None,
        ge=0.0,
        lt=1.0,
        description="Dropout after attention and after the FFN of every transformer layer; "
        "null: 0.1 for mobilevit_v1 (0.05 for its xxs), 0 otherwise.",
    )
    crop_scale: tuple[StrictFloat, StrictFloat] | None = Field(
        default=None,
        description="Random resized crop area [low, high], 0 < low ≤ high ≤ 1; null: (0.08, 1) "
        "for image folders, (0.25, 1) for CIFAR, (0.5, 1) for digits.",
    )
    crop_interpolation: Literal["bilinear", "bicubic"] | None = Field(
        default=None,
        description="Resampling of the random resized crop; null: bilinear for mobilevit_v1, "
        "bicubic otherwise.",
    )
    antialias: StrictBool = Field(
        default=True,
        description="Low-pass filter crops that are shrunk (multiscale's small resolutions, "
        "large crops of large images) instead of sampling them sparsely.",
    )
    hflip: StrictBool | None = Field(
        default=None, description="Random horizontal flip; null: on, except for digits."
    )
    rand_augment: StrictBool | None = Field(
        default=None,
        description="RandAugment (rand_augment_ops ops of magnitude rand_augment_magnitude per "
        "image); null: on for mobilevit_v2 and other families, off for mobilevit_v1 and digits.",
    )
    rand_augment_ops: StrictInt = Field(default=2, ge=1, le=14)
    rand_augment_magnitude: StrictInt = Field(default=9, ge=0, le=30)
    random_erase_p: StrictFloat | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Probability of RandomErasing per image; null: 0.25 for mobilevit_v2 and "
        "other families, 0 for mobilevit_v1 and digits.",
    )
    mixup_alpha: StrictFloat | None = Field(
        default=None,
        ge=0.0,
        le=10.0,
        description="Mixup's Beta(alpha, alpha), 0 off; null: 0.2 for mobilevit_v2 and other "
        "families, 0 for mobilevit_v1 and digits. With CutMix, each batch uses one of them.",
    )
    cutmix_alpha: StrictFloat | None = Field(
        default=None,
        ge=0.0,
        le=10.0,
        description="CutMix's Beta(alpha, alpha), 0 off; null: 1.0 for mobilevit_v2 and other "
        "families, 0 for mobilevit_v1 and digits.",
    )
    amp: Literal["auto", "bf16", "off"] = Field(
        default="auto", description="auto: bf16 autocast on CUDA, off on the CPU."
    )
    channels_last: StrictBool | None = Field(default=None, description="null: on CUDA only.")
    compile: StrictBool = Field(default=False, description="torch.compile the training step.")
    multiscale: StrictBool | None = Field(
        default=None,
        description="Variable batch sampler over multiscale_n resolutions; null: on for "
        "mobilevit_v1, off otherwise.",
    )
    multiscale_min: StrictFloat = Field(default=0.625, gt=0.0, le=1.0)
    multiscale_max: StrictFloat = Field(default=1.25, ge=1.0, le=4.0)
    multiscale_n: StrictInt = Field(default=5, ge=1, le=16)
    eval_batch_size: StrictInt | None = Field(
        default=None, ge=1, description="null: 2 × batch_size."
    )
    num_workers: StrictInt = Field(
        default=4,
        ge=0,
        le=64,
        description=(
            "DataLoader processes per training process for an image folder. The host setting "
            "VITCUBE_LOADER_WORKERS wins; a recipe that does not name this key gets the "
            "host's cores ÷ GPUs, not this default."
        ),
    )
    max_steps_per_epoch: StrictInt | None = Field(
        default=None, ge=1, description="Cap on steps per epoch (smoke runs); null: no cap."
    )

    def resolved(self, *, family: str, dataset: str, size: str | None = None) -> Self:
        """This recipe with every null key that the family or dataset decides filled in.

        family: the baseline's family ("mobilevit_v1", ...); size: v1's "xxs" / "xs" / "s";
        dataset: the dataset's name. Explicit values are kept; resolving a resolved recipe
        changes nothing. Raises InvalidRecipeError when an explicit value contradicts a filled
        one (a min_lr above the scaled peak LR).
        """
        reference = FAMILY_RECIPES.get(family, FAMILY_RECIPES[GENERIC_FAMILY])
        plain = dataset not in NO_HEAVY_AUGMENTATION_DATASETS
        lr = self.lr
        if lr is None:
            lr = reference.lr_at_reference_batch * math.sqrt(self.batch_size / REFERENCE_BATCH)
        dropout = reference.transformer_dropout
        if family == "mobilevit_v1" and size is not None:
            dropout = V1_TRANSFORMER_DROPOUT.get(size, dropout)
        filled: dict[str, Any] = {
            "lr": lr,
            "min_lr": reference.min_lr_share * lr,
            "warmup_init_lr": reference.warmup_init_lr_share * lr,
            "weight_decay": reference.weight_decay,
            "decay_norms_and_biases": reference.decay_norms_and_biases,
            "transformer_dropout": dropout,
            "crop_scale": CROP_SCALE_DEFAULTS.get(dataset, DEFAULT_CROP_SCALE),
            "crop_interpolation": reference.crop_interpolation,
            "hflip": dataset not in NO_FLIP_DATASETS,
            "rand_augment": reference.rand_augment and plain,
            "random_erase_p": reference.random_erase_p if plain else 0.0,
            "mixup_alpha": reference.mixup_alpha if plain else 0.0,
            "cutmix_alpha": reference.cutmix_alpha if plain else 0.0,
            "multiscale": reference.multiscale,
        }
        values = self.model_dump()
        values.update({key: value for key, value in filled.items() if values[key] is None})
        try:
            return type(self).model_validate(values)
        except ValidationError as error:
            problems = "; ".join(str(problem["msg"]) for problem in error.errors())
            if self.lr is None:
                problems += (
                    f" (lr null: {family}'s {reference.lr_at_reference_batch} at batch "
                    f"{REFERENCE_BATCH} scaled by sqrt(batch_size / {REFERENCE_BATCH}) = {lr:.6g})"
                )
            raise InvalidRecipeError(problems) from None

    @classmethod
    def from_dict(cls, block: Mapping[str, Any] | None) -> Self:
        """Validate a `training` block; raises InvalidRecipeError naming every bad key."""
        try:
            return cls.model_validate({} if block is None else block)
        except ValidationError as error:
            problems = "; ".join(str(problem["msg"]) for problem in error.errors())
            raise InvalidRecipeError(problems) from None

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if isinstance(data, TrainingRecipe):  # e.g. a TrainingRecipe made into a worker's config
            return data if isinstance(data, cls) else data.model_dump()
        if not isinstance(data, Mapping):
            raise PydanticCustomError(
                "training_type",
                "training must be an object of recipe keys (epochs, lr, …), got {got}",
                {"got": _shown(data)},
            )
        known = list(cls.model_fields)
        unknown = [key for key in data if key not in cls.model_fields]
        if unknown:
            key = str(unknown[0])
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise PydanticCustomError(
                "unknown_training_key",
                "training.{key} is not a recipe key{hint}; the keys are {known}",
                {"key": key, "hint": hint, "known": ", ".join(known)},
            )
        return data

    @field_validator("*", mode="wrap")
    @classmethod
    def _say_what_is_allowed(
        cls, value: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo
    ) -> Any:
        # One wording for type and range errors alike, derived from the field's own type and
        # bounds so the message cannot drift from what is enforced.
        try:
            return handler(value)
        except ValidationError:
            key = str(info.field_name)
            raise PydanticCustomError(
                "training_value",
                "training.{key} must be {allowed}, got {got}",
                {"key": key, "allowed": _allowed(cls.model_fields[key]), "got": _shown(value)},
            ) from None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        problems = []
        # With a null lr the bounds are checked once `resolved` has scaled the peak.
        if self.lr is not None and self.min_lr is not None and self.min_lr > self.lr:
            problems.append(
                f"training.min_lr must be in [0, lr] = [0, {self.lr}], got {self.min_lr}"
            )
        if (
            self.lr is not None
            and self.warmup_init_lr is not None
            and self.warmup_init_lr > self.lr
        ):
            problems.append(
                f"training.warmup_init_lr must be in [0, lr] = [0, {self.lr}], "
                f"got {self.warmup_init_lr}"
            )
        if self.warmup_epochs is not None and self.warmup_epochs > self.epochs:
            problems.append(
                f"training.warmup_epochs must be in [0, epochs] = [0, {self.epochs}], "
                f"got {self.warmup_epochs}"
            )
        if self.crop_scale is not None:
            low, high = self.crop_scale
            if not 0.0 < low <= high <= 1.0:
                problems.append(
                    f"training.crop_scale must be {_allowed(type(self).model_fields['crop_scale'])}"
                    f", got {_shown(list(self.crop_scale))}"
                )
        if problems:
            raise PydanticCustomError("training_recipe", "; ".join(problems))
        return self


def _allowed(field: FieldInfo) -> str:
    """What a recipe field accepts, in words: "an integer in [1, 10000]", "true or false", …"""
    annotation = field.annotation
    nullable = False
    if get_origin(annotation) is not Literal and type(None) in get_args(annotation):
        nullable = True
        annotation = next(a for a in get_args(annotation) if a is not type(None))
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if get_origin(annotation) is Literal:
        words = "one of " + ", ".join(repr(choice) for choice in get_args(annotation))
    elif get_origin(annotation) is tuple:
        words = "[low, high] with 0 < low <= high <= 1"
    elif annotation is bool:
        words = "true or false"
    else:
        noun = "an integer" if annotation is int else "a number"
        low = next((("[", m.ge) for m in field.metadata if hasattr(m, "ge")), None)
        low = low or next((("(", m.gt) for m in field.metadata if hasattr(m, "gt")), None)
        high = next(((m.le, "]") for m in field.metadata if hasattr(m, "le")), None)
        high = high or next(((m.lt, ")") for m in field.metadata if hasattr(m, "lt")), None)
        if low and high:
            words = f"{noun} in {low[0]}{low[1]:g}, {high[0]:g}{high[1]}"
        elif low:
            words = f"{noun} {'>=' if low[0] == '[' else '>'} {low[1]:g}"
        else:
            words = noun
    return words + (", or null" if nullable else "")


def _shown(value: Any) -> str:
    """A value as the sender wrote it in JSON (true, not True; "x", not 'x')."""
    try:
        return json.dumps(value)[:100]
    except (TypeError, ValueError):
        return repr(value)[:100]


# -- schedules ----------------------------------------------------------------------------------


class FullSchedule(_Strict):
    """Every trial trains all of `training.epochs` in one segment."""

    kind: Literal["full"]


class AshaSchedule(_Strict):
    """Asynchronous successive halving (ASHA, Li et al. 2020): a trial trains to its first rung
    (`min_epochs`, or a later one with `brackets`); a trial paused at a rung is promoted to the
    next one when its top-1 is among the best 1/eta of the results seen at that rung. Rungs:
    min_epochs · eta^k below `training.epochs`, then `training.epochs` itself."""

    kind: Literal["asha"]
    min_epochs: StrictInt = Field(..., ge=1, le=10_000, description="The first rung (epochs).")
    eta: StrictInt = Field(
        default=3, ge=2, le=100, description="Rung growth and promotion rate (top 1/eta)."
    )
    brackets: StrictInt = Field(
        default=1,
        ge=1,
        le=100,
        description="Hyperband's hedge against early ranks that do not last: new "
        "configurations start at rung s for s < brackets (capped by the number of rungs), in "
        "Hyperband's proportions (start rung s of n gets weight eta^(n-1-s) / (n-s)); "
        "1: plain ASHA, every configuration starts at min_epochs.",
    )


Schedule = Annotated[FullSchedule | AshaSchedule, Field(discriminator="kind")]
SCHEDULE_KINDS = ("full", "asha")

# The schedule a search gets when its body names none (service decides when to apply it).
DEFAULT_ASHA_ETA = 3
DEFAULT_ASHA_RUNGS = 4  # min_epochs = epochs // eta^(rungs - 1): Hyperband's s_max = 3
# Two brackets: about 3 in 10 new configurations start at the second rung. The first rung's ranks
# mislead most (a large network starts slowly); hedging it, and only it, is what
# benchmarks/bench_multi_fidelity.py measured to need the least compute on both its landscapes
# (1 bracket: plain ASHA missed the target in 2 of 5 seeds; one per rung: full Hyperband spent
# a quarter of its configurations on full-length runs).
DEFAULT_ASHA_BRACKETS = 2


def rung_epochs(schedule: FullSchedule | AshaSchedule, epochs: int) -> tuple[int, ...]:
    """The epochs at which a trial's segments end: (epochs,) for `full`; for `asha` min_epochs,
    min_epochs · eta, … while below `epochs`, then `epochs` (always the last rung)."""
    if isinstance(schedule, FullSchedule):
        return (epochs,)
    rungs: list[int] = []
    rung = schedule.min_epochs
    while rung < epochs:
        rungs.append(rung)
        rung *= schedule.eta
    rungs.append(epochs)
    return tuple(rungs)


def default_schedule(epochs: int) -> FullSchedule | AshaSchedule:
    """What a search whose body names no schedule runs: ASHA with eta 3, min_epochs =
    epochs // 27 (at least 1) and DEFAULT_ASHA_BRACKETS brackets when three whole rungs fit
    (min_epochs · eta² <= epochs, so epochs >= 9), else `full`."""
    eta = DEFAULT_ASHA_ETA
    min_epochs = max(1, epochs // eta ** (DEFAULT_ASHA_RUNGS - 1))
    if min_epochs * eta**2 > epochs:
        return FullSchedule(kind="full")
    return AshaSchedule(kind="asha", min_epochs=min_epochs, eta=eta, brackets=DEFAULT_ASHA_BRACKETS)


# -- the worker protocol ----------------------------------------------------------------------


class LeaseRequest(_Strict):
    """The body of POST /api/trials/lease."""

    worker: str = Field(..., min_length=1, max_length=200, examples=["box-1:cuda0"])
    # The trainers this worker can run; a trial is leased only to a worker that lists its
    # search's trainer label. A worker that names none runs the builtin trainer only.
    trainers: list[TrainerLabel] = Field(
        default_factory=lambda: [BUILTIN_TRAINER],
        min_length=1,
        max_length=64,
        examples=[["builtin", "command:train-v2"]],
    )


# -- artifacts ----------------------------------------------------------------------------------

ArtifactKind = Literal["checkpoint", "weights"]
ARTIFACT_KINDS: tuple[ArtifactKind, ...] = get_args(ArtifactKind)


class CheckpointRef(BaseModel):
    """The latest checkpoint of a trial, as a lease names it: where its training resumes.

    A worker downloads it from `url` (GET, relative to the server, worker role), checks its
    `sha256`, loads it and trains on from `epoch` completed epochs (and `step` steps of the next
    one, for a checkpoint taken mid-epoch when a worker was told to stop). One that does not
    load is discarded (DELETE on the same url) and the trial starts again from epoch 0.
    """

    model_config = ConfigDict(frozen=True)

    epoch: int = Field(..., ge=0)
    step: int = Field(default=0, ge=0)
    bytes: int = Field(..., ge=0)
    sha256: str | None = None
    attempt: int = Field(default=0, ge=0)
    url: str
    created_at: datetime | None = None


class ArtifactPublic(BaseModel):
    """A stored artifact (PUT's answer; one entry of a trial's or search's artifacts)."""

    kind: ArtifactKind
    trial_id: int
    search_id: int
    bytes: int
    sha256: str
    epoch: int | None = None
    step: int = 0
    attempt: int = 0
    created_at: datetime | None = None


class TrialLease(BaseModel):
    """The 200 body of POST /api/trials/lease: what a worker needs to train one trial.

    `lease_id` must accompany every report. `training` is the search's recipe as the server
    validated, resolved for the search's family and dataset, and stored it (every key of
    TrainingRecipe); a worker validates it again with
    `TrainingRecipe.from_dict`, so a block it would refuse fails the trial with a message
    instead of failing the lease. Fields a newer server adds are ignored.
    """

    model_config = ConfigDict(frozen=True)

    id: int
    lease_id: str
    search_id: int
    kind: TrialKind
    factors: dict[str, float]
    effective_factors: dict[str, float]
    arch: dict[str, Any]
    macs: int
    params: int
    dataset: dict[str, Any]
    training: dict[str, Any]
    seed: int
    attempts: int
    lease_expires_at: datetime
    lease_seconds: float
    # The segment to train: epochs from_epoch + 1 … to_epoch (to_epoch None: training.epochs).
    # from_epoch > 0 resumes from `checkpoint`; the LR schedule always spans training.epochs.
    from_epoch: int = Field(default=0, ge=0)
    to_epoch: int | None = Field(default=None, ge=1)
    checkpoint: CheckpointRef | None = None
    # What trains it and what it is ranked by (the search's); older servers send neither.
    trainer: TrainerSpec = Field(default_factory=TrainerSpec)
    metric: MetricSpec = Field(default_factory=MetricSpec)


class TrialHeartbeat(_Strict):
    """POST /api/trials/{id}/heartbeat: the lease is still ours, this epoch is done."""

    lease_id: LeaseId
    epoch: StrictInt = Field(default=0, ge=0, le=1_000_000)
    metrics: dict[Annotated[str, Field(max_length=64)], Finite] = Field(
        default_factory=dict, max_length=64, description='e.g. {"val_top1": 0.8, "train_loss": 1}'
    )

    @model_validator(mode="after")
    def _fractions(self) -> Self:
        for name in ("val_top1", "val_top5", "train_top1"):
            value = self.metrics.get(name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"metrics.{name} must be a fraction in [0, 1], got {value}")
        return self


class HeartbeatReply(BaseModel):
    action: Literal["continue", "stop"]
    reason: str | None = None
    lease_expires_at: datetime | None = None


class CurvePoint(BaseModel):
    """One epoch of a learning curve, as workers report it.

    The named fields are the builtin trainer's; a command trainer adds any scalar it reports
    (`val_map`, `val_loss`, …) as a further key: at most 64 of them, each a finite number."""

    model_config = ConfigDict(extra="allow")

    epoch: StrictInt = Field(..., ge=0, le=1_000_000)
    val_top1: Fraction | None = None
    val_top5: Fraction | None = None
    train_loss: NonNegative | None = None
    val_loss: NonNegative | None = None
    train_top1: Fraction | None = None
    lr: NonNegative | None = None
    epoch_time_s: NonNegative | None = None

    @model_validator(mode="after")
    def _extra_metrics(self) -> Self:
        extra = self.model_extra or {}
        if len(extra) > 64:
            raise ValueError(f"a curve point carries at most 64 extra metrics, got {len(extra)}")
        for name, value in extra.items():
            if len(name) > 64:
                raise ValueError(f"curve metric name {name[:64]!r}… is over 64 characters")
            if not _is_finite_number(value):
                raise ValueError(f"curve metric {name} must be a finite number, got {value!r}")
        return self


class TrialReport(_Strict):
    """POST /api/trials/{id}/complete. top1/top5 are fractions in [0, 1]: the best epoch's of
    the run so far, up to the lease's to_epoch (for a segment that ends a rung, the rung's
    result; for the last segment, the trial's, as a full run reports it)."""

    lease_id: LeaseId
    # The search's metric (its `metric.name`) at the best epoch so far. A builtin worker sends
    # it as `top1` (val_top1 is the default metric); any trainer may send it as `value`; the
    # server refuses a report that carries neither for the search's metric.
    top1: Fraction | None = None
    value: Finite | None = None
    top5: Fraction | None = None
    params: StrictInt | None = Field(default=None, ge=0, le=10**13)
    macs: StrictInt | None = Field(default=None, ge=0, le=10**15)
    latency_ms: NonNegative | None = None
    # What measured latency_ms, e.g. "NVIDIA H200, bf16, CUDA graph, CUDA events".
    latency_device: str | None = Field(default=None, max_length=200)
    images_per_s: NonNegative | None = None
    # Batch-1 latency of the exported network under ONNX Runtime on the worker's CPU.
    latency_onnx_ms: NonNegative | None = None
    latency_onnx_device: str | None = Field(default=None, max_length=200)
    surrogate: StrictBool = False
    # The epoch this attempt resumed from (its checkpoint's), or None when it started afresh;
    # the epochs this attempt trained (a resumed run trains only what was left).
    resumed_from_epoch: StrictInt | None = Field(default=None, ge=0, le=1_000_000)
    epochs_trained: NonNegative | None = Field(default=None, le=1_000_000)
    # Images in one training epoch (capped by training.max_steps_per_epoch): with MACs and
    # epochs, the training compute the search reports (train_macs).
    train_images: StrictInt | None = Field(default=None, ge=0, le=10**12)
    curve: list[CurvePoint] = Field(default_factory=list, max_length=100_000)


class TrialFailure(_Strict):
    """POST /api/trials/{id}/fail: `retry` true queues the trial again.

    `worker_fault` true says the fault is the worker's, not the trial's (a sticky CUDA error,
    a cuBLAS/cuDNN failure, a killed DataLoader worker): the trial is queued again without
    charging an attempt, up to the server's `max_worker_faults` per trial (then each further
    one costs an attempt, so no trial loops forever). It implies `retry`; fail fast never
    counts it.
    """

    lease_id: LeaseId
    error: str = Field(..., min_length=1, max_length=20_000)
    retry: StrictBool = False
    worker_fault: StrictBool = Field(
        default=False,
        description="The worker's device or host failed, not the trial: re-queue it without "
        "charging an attempt (implies retry).",
    )

    @model_validator(mode="after")
    def _fault_is_retryable(self) -> Self:
        if self.worker_fault and not self.retry:
            raise ValueError("worker_fault true needs retry true: a worker fault is retryable")
        return self


class TrialAck(BaseModel):
    """The server's answer to complete and fail."""

    id: int
    search_id: int
    state: TrialState
    attempts: int


# -- what readers see: the server's answers that vitcube.client parses -------------------------


class Counts(BaseModel):
    queued: int = 0
    running: int = 0
    paused: int = 0
    completed: int = 0
    failed: int = 0
    stopped: int = 0


class CheckpointSummary(BaseModel):
    """A trial's latest checkpoint, as its public view shows it."""

    epoch: int | None
    step: int
    bytes: int


class TrialPublic(BaseModel):
    """A trial as every reader sees it (API, dashboard, export)."""

    id: int
    search_id: int
    state: TrialState
    kind: TrialKind
    reference: str | None = Field(
        default=None, description="The preset of a reference:named trial (e.g. efficientvit_m2)."
    )
    factors: dict[str, float]
    effective_factors: dict[str, float]
    arch: dict[str, Any]
    resolution: int
    macs: int
    params: int
    value: float | None = Field(
        default=None,
        description="The trial's value of its search's metric (search.metric) at its best epoch.",
    )
    top1: float | None = Field(
        description="The same value when the search's metric is val_top1; null for any other."
    )
    top5: float | None
    latency_ms: float | None
    images_per_s: float | None
    worker: str | None
    attempts: int
    error: str | None
    surrogate: bool
    curve: list[dict[str, Any]]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    lease_expires_at: datetime | None
    # From the completing report (kept in the trial's metrics): the epoch the completing attempt
    # resumed from (None: it started afresh), the epochs it trained, its ONNX Runtime latency.
    resumed_from_epoch: int | None = None
    attempt_epochs_trained: float | None = Field(
        default=None,
        description="Epochs the completing attempt trained (a resumed one trains only what "
        "was left; its share of steps for a partial epoch).",
    )
    latency_onnx_ms: float | None = None
    weights_bytes: int | None = Field(
        default=None, description="Size of the final weights (GET …/weights); null: none kept."
    )
    checkpoint: CheckpointSummary | None = None
    # The schedule's view: the epoch the current (or next) segment trains to, the index of the
    # last rung reported and the top-1 at each rung reached; a paused trial's top1 is its result
    # at its rung (partial), a completed trial's the result of its full training.
    to_epoch: int | None = None
    rung: int | None = Field(default=None, description="Index of the rung to_epoch ends.")
    rung_values: dict[str, float] = Field(
        default_factory=dict,
        description="The metric's value at each rung reached: epoch (as text) → value.",
    )
    rung_top1: dict[str, float] = Field(
        default_factory=dict,
        description="Top-1 at each rung reached: epoch (as text) → top-1 (rung_values of a "
        "val_top1 search; empty for any other metric).",
    )
    epochs_trained: float = Field(
        default=0.0, description="The epoch the trial's training has reached, all segments."
    )
    train_macs: float = Field(
        default=0.0, description="epochs_trained × MACs per image × training images."
    )


COMPACT_COLUMNS = (
    "id",
    "kind",
    "state",
    "r",
    "d_i",
    "d_m",
    "w",
    "resolution",
    "macs",
    "params",
    "top1",
    "top5",
    "latency_ms",
    "worker",
    "attempts",
    "surrogate",
    "to_epoch",
    "epochs_trained",
    "weights_bytes",
    "error",
    "reference",
    "value",
)


class TrialsCompact(BaseModel):
    """The trials a dashboard shows, as rows of values in `columns` order (r, d_i, d_m and w are
    the effective factors; `error` is cut to its first 300 characters). With `since`, only the
    trials changed since that cursor (and a few seconds before it, so that nothing committed
    late is missed; merge by id)."""

    search_id: int
    columns: list[str] = Field(default_factory=lambda: list(COMPACT_COLUMNS))
    rows: list[list[Any]]
    total: int = Field(description="Trials the search holds in all.")
    since: datetime | None = Field(description="The cursor asked for; null: every trial.")
    cursor: datetime = Field(description="Pass as `since` to get what changes from now on.")


class RungSummary(BaseModel):
    """One rung of a search's schedule: how many trials reached it and what became of them."""

    epoch: int
    reached: int = Field(description="Trials with a result at this rung.")
    paused: int = Field(description="Trials waiting here (not promoted, or not yet).")
    promoted: int = Field(description="Trials sent on to the next rung (0 for the last).")
    best_top1: float | None = Field(
        default=None, description="The best top-1 at this rung (val_top1 searches only)."
    )
    best_value: float | None = Field(
        default=None, description="The best value of the search's metric at this rung."
    )


class SearchPublic(BaseModel):
    id: int
    name: str
    state: SearchState
    base: dict[str, Any]
    dataset: dict[str, Any]
    budget: dict[str, Any]
    m0: int
    max_macs: int
    min_macs: int | None
    c: float
    space: dict[str, tuple[float, float]]
    objective: str
    strategy: str
    max_trials: int
    parallelism: int
    training: dict[str, Any]
    seed: int
    extra: dict[str, Any]
    counts: Counts
    best: TrialPublic | None
    error: str | None
    created_at: datetime
    finished_at: datetime | None
    artifact_bytes: int = Field(
        default=0, description="Bytes of checkpoints and weights the search holds in the store."
    )
    schedule: dict[str, Any] = Field(default_factory=lambda: {"kind": "full"})
    rungs: list[RungSummary] = Field(default_factory=list)
    max_train_epochs: int | None = None
    references: list[dict[str, Any]] = Field(
        default_factory=list,
        description="The named reference networks, [{name, resolution}] (reference:named trials).",
    )
    epochs_trained: float = Field(default=0.0, description="Epochs trained by all trials.")
    train_macs: float = Field(
        default=0.0, description="Σ epochs × MACs per image × training images, all trials."
    )
    trainer: TrainerSpec = Field(default_factory=TrainerSpec)
    metric: MetricSpec = Field(default_factory=MetricSpec)
    trainer_workers: int = Field(
        default=0,
        ge=0,
        description="Workers that asked for a lease in the last few minutes (by the database "
        "clock) and can run this search's trainer.",
    )
    notice: str | None = Field(
        default=None,
        description="Something the search waits on that is not an error, e.g. that no connected "
        "worker can run its trainer (it runs once one asks for a lease).",
    )


# -- a search's artifacts, a trial's architecture, the workers ------------------------------------


class SearchArtifacts(BaseModel):
    """GET /api/searches/{id}/artifacts."""

    search_id: int
    bytes: int
    artifacts: list[ArtifactPublic]


class ArtifactsDeleted(BaseModel):
    """What a delete of artifacts removed."""

    deleted: int
    bytes: int | None = None


class ArchitecturePublic(BaseModel):
    """GET /api/trials/{id}/architecture: what rebuilds the trial's network and feeds it.

    `vitcube.models.build_model(Arch.from_dict(arch))` builds it; `preprocessing` is how its
    input must be prepared (vitcube.contract.preprocessing)."""

    trial_id: int
    search_id: int
    arch: dict[str, Any]
    resolution: int
    macs: int
    params: int
    num_classes: int | None
    dataset: str
    preprocessing: dict[str, Any]
    top1: float | None


class WorkerPublic(BaseModel):
    worker: str
    running: int
    completed: int
    failed: int
    last_seen_at: datetime | None
    running_trials: list[int]
    trainers: list[str] = Field(
        default_factory=list,
        description="The trainer labels it said it can run in its latest lease request.",
    )


# -- a search planned, not created; the downsizing formula's answer ---------------------------


class ReferencePlan(BaseModel):
    """One reference trial a search would start with: the rule, its factors and its network."""

    kind: TrialKind
    name: str | None = Field(default=None, description="A reference:named's preset.")
    factors: dict[str, float]
    resolution: int
    macs: int
    params: int


class SearchPlan(BaseModel):
    """POST /api/searches/validate: what a create body would make, nothing written.

    The body as the server resolves it (the family's and dataset's recipe defaults filled in,
    the default schedule chosen), m0, the budget in MACs, the reference networks and the
    smallest and largest networks the space can build."""

    name: str
    base: dict[str, Any]
    dataset: dict[str, Any]
    m0: int
    max_macs: int
    min_macs: int | None
    c: float = Field(description="max_macs / m0.")
    space: dict[str, tuple[float, float]]
    objective: str
    strategy: str
    max_trials: int
    parallelism: int
    schedule: dict[str, Any]
    training: dict[str, Any]
    trainer: TrainerSpec = Field(default_factory=TrainerSpec)
    metric: MetricSpec = Field(default_factory=MetricSpec)
    references: list[ReferencePlan]
    smallest_macs: int = Field(description="MACs of the space's smallest network (lower bounds).")
    largest_macs: int = Field(description="MACs of the space's largest network (upper bounds).")
    warnings: list[str] = Field(
        default_factory=list,
        description="What the body allows but will likely not do what its author wants (e.g. an "
        "ASHA schedule with too few trials for any to train all epochs); nothing is refused.",
    )


class FactorEstimate(BaseModel):
    mean: float
    std: float


class FormulaPublic(BaseModel):
    """GET /api/searches/{id}/formula: factors ± std for c, the network built from them (repaired
    to fit c · m0 if needed), and the fit it comes from."""

    model_config = ConfigDict(extra="allow")

    c: float
    factors: dict[str, FactorEstimate]
    scale: dict[str, float] = Field(description="The factors the network is built with.")
    arch: dict[str, Any]
    macs: int
    params: int
    max_macs: int
    fitted_on: dict[str, Any] = Field(default_factory=dict)
    computed_at: datetime | None = None
    stale: bool = False
