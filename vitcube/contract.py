"""What travels over the wire between the vitcube server and its workers, defined once.

The factor names and the default space, the trial and search states, the dataset names, the
training recipe (`TrainingRecipe`), the lease a worker receives (`TrialLease`) and the reports
it sends back (`TrialHeartbeat`, `TrialReport`, `TrialFailure`) with the server's replies. The
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
from collections.abc import Mapping
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

TrialState = Literal["queued", "running", "completed", "failed", "stopped"]
TRIAL_STATES: tuple[TrialState, ...] = get_args(TrialState)

TrialKind = Literal["reference:width_only", "reference:compound", "reference:baseline", "search"]
TRIAL_KINDS: tuple[TrialKind, ...] = get_args(TrialKind)

# -- datasets ---------------------------------------------------------------------------------

DatasetName = Literal["digits", "cifar10", "cifar100", "imagefolder"]
DATASETS: tuple[DatasetName, ...] = get_args(DatasetName)

# Class counts of the datasets that have a fixed one; an imagefolder has as many as folders.
DATASET_CLASSES: Mapping[str, int] = MappingProxyType(
    {"digits": 10, "cifar10": 10, "cifar100": 100}
)

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


class TrainingRecipe(BaseModel):
    """A search's `training` block: how every trial of the search is trained.

    Every key is optional and unknown keys are an error. The defaults are the MobileViT v2
    recipe scaled to short runs; null in an optional key means "the worker's default for the
    dataset or device", as each field's description says. The LR schedule (linear warm-up, then
    cosine to min_lr) spans the full `epochs`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    epochs: StrictInt = Field(
        default=100, ge=1, le=10_000, description="Training epochs per trial."
    )
    batch_size: StrictInt = Field(
        default=64, ge=1, le=65_536, description="Training images per step."
    )
    lr: StrictFloat = Field(
        default=0.002, gt=0.0, lt=10.0, description="Peak learning rate (AdamW)."
    )
    min_lr: StrictFloat = Field(default=0.0002, ge=0.0, description="Cosine floor; at most lr.")
    warmup_epochs: StrictFloat | None = Field(
        default=None, ge=0.0, description="Linear warm-up length (≤ epochs); null: 5 % of epochs."
    )
    warmup_init_lr: StrictFloat = Field(
        default=1e-6, ge=0.0, description="Learning rate the warm-up starts from; at most lr."
    )
    weight_decay: StrictFloat = Field(
        default=0.05, ge=0.0, lt=1.0, description="AdamW weight decay (never on norms or biases)."
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
    crop_scale: tuple[StrictFloat, StrictFloat] | None = Field(
        default=None,
        description="Random resized crop area [low, high], 0 < low ≤ high ≤ 1; null: (0.08, 1) "
        "for image folders, (0.25, 1) for CIFAR, (0.5, 1) for digits.",
    )
    hflip: StrictBool | None = Field(
        default=None, description="Random horizontal flip; null: on, except for digits."
    )
    amp: Literal["auto", "bf16", "off"] = Field(
        default="auto", description="auto: bf16 autocast on CUDA, off on the CPU."
    )
    channels_last: StrictBool | None = Field(default=None, description="null: on CUDA only.")
    compile: StrictBool = Field(default=False, description="torch.compile the training step.")
    multiscale: StrictBool = Field(
        default=False, description="Variable batch sampler over multiscale_n resolutions."
    )
    multiscale_min: StrictFloat = Field(default=0.5, gt=0.0, le=1.0)
    multiscale_max: StrictFloat = Field(default=1.25, ge=1.0, le=4.0)
    multiscale_n: StrictInt = Field(default=5, ge=1, le=16)
    eval_batch_size: StrictInt | None = Field(
        default=None, ge=1, description="null: 2 × batch_size."
    )
    num_workers: StrictInt = Field(default=4, ge=0, le=64, description="Image-decoding processes.")
    max_steps_per_epoch: StrictInt | None = Field(
        default=None, ge=1, description="Cap on steps per epoch (smoke runs); null: no cap."
    )

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
        if self.min_lr > self.lr:
            problems.append(
                f"training.min_lr must be in [0, lr] = [0, {self.lr}], got {self.min_lr}"
            )
        if self.warmup_init_lr > self.lr:
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


# -- the worker protocol ----------------------------------------------------------------------


class LeaseRequest(_Strict):
    """The body of POST /api/trials/lease."""

    worker: str = Field(..., min_length=1, max_length=200, examples=["box-1:cuda0"])


class TrialLease(BaseModel):
    """The 200 body of POST /api/trials/lease: what a worker needs to train one trial.

    `lease_id` must accompany every report. `training` is the search's recipe as the server
    validated and stored it (every key of TrainingRecipe); a worker validates it again with
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


class CurvePoint(_Strict):
    """One epoch of a learning curve, as workers report it."""

    epoch: StrictInt = Field(..., ge=0, le=1_000_000)
    val_top1: Fraction | None = None
    val_top5: Fraction | None = None
    train_loss: NonNegative | None = None
    val_loss: NonNegative | None = None
    train_top1: Fraction | None = None
    lr: NonNegative | None = None
    epoch_time_s: NonNegative | None = None


class TrialReport(_Strict):
    """POST /api/trials/{id}/complete. top1/top5 are fractions in [0, 1]."""

    lease_id: LeaseId
    top1: Fraction
    top5: Fraction | None = None
    params: StrictInt | None = Field(default=None, ge=0, le=10**13)
    macs: StrictInt | None = Field(default=None, ge=0, le=10**15)
    latency_ms: NonNegative | None = None
    # What measured latency_ms, e.g. "NVIDIA H200, bf16, CUDA graph, CUDA events".
    latency_device: str | None = Field(default=None, max_length=200)
    images_per_s: NonNegative | None = None
    surrogate: StrictBool = False
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
