"""The API contract: pydantic models named by purpose, kept apart from the tables.

Every number has bounds; non-finite floats are refused (422). Worker reports forbid unknown
fields so that a typo in a worker is an error, not silently lost data. Imports nothing of ours.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

FACTORS = ("r", "d_i", "d_m", "w")

Finite = Annotated[float, Field(allow_inf_nan=False)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
NonNegative = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
Bound = Annotated[float, Field(gt=0.0, le=100.0, allow_inf_nan=False)]
Macs = Annotated[int, Field(gt=0, le=10**15)]

SearchState = Literal["running", "completed", "stopped", "failed"]
TrialState = Literal["queued", "running", "completed", "failed", "stopped"]
TrialKind = Literal["reference:width_only", "reference:compound", "reference:baseline", "search"]
Role = Literal["admin", "worker", "viewer"]

DATASET_CLASSES = {"digits": 10, "cifar10": 10, "cifar100": 100}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- searches ---------------------------------------------------------------------------------


class DatasetSpec(BaseModel):
    """Which data a trial trains on; extra keys (e.g. `root`, `split`) are passed to workers."""

    model_config = ConfigDict(extra="allow")

    name: Literal["digits", "cifar10", "cifar100", "imagefolder"]
    num_classes: int | None = Field(default=None, ge=2, le=100_000)

    @model_validator(mode="after")
    def _classes_known(self) -> DatasetSpec:
        known = DATASET_CLASSES.get(self.name)
        if known is None and self.num_classes is None:
            raise ValueError("dataset imagefolder needs num_classes (the number of class folders)")
        if known is not None and self.num_classes not in (None, known):
            raise ValueError(f"dataset {self.name} has {known} classes, not {self.num_classes}")
        if self.num_classes is None:
            self.num_classes = known
        return self


class BudgetSpec(_Strict):
    """Exactly one of `max_macs` (MACs per image) or `c` (max_macs = c · m0); optional floor."""

    max_macs: Macs | None = None
    c: Annotated[float, Field(gt=0.0, le=100.0, allow_inf_nan=False)] | None = None
    min_macs: Annotated[int, Field(ge=0, le=10**15)] | None = None

    @model_validator(mode="after")
    def _one_budget(self) -> BudgetSpec:
        if (self.max_macs is None) == (self.c is None):
            raise ValueError("give exactly one of budget.max_macs or budget.c (max_macs = c · m0)")
        low, high = self.min_macs, self.max_macs
        if low is not None and high is not None and low > high:
            raise ValueError("budget.min_macs must not exceed budget.max_macs")
        return self


class TrainingSpec(BaseModel):
    """The training recipe handed to workers; extra keys (lr, weight_decay, …) pass through."""

    model_config = ConfigDict(extra="allow")

    epochs: int = Field(default=100, ge=1, le=10_000)
    batch_size: int = Field(default=64, ge=1, le=65_536)


class SearchCreate(BaseModel):
    """The body of POST /api/searches. Fields beyond these are kept and echoed in `extra`."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "example": {
                "name": "v2 at half budget",
                "base": {"family": "mobilevit_v2", "width": 1.0, "resolution": 256},
                "dataset": {"name": "digits"},
                "budget": {"c": 0.5},
                "space": {"r": [0.8, 1.7], "d_i": [1.3, 2.3], "d_m": [0.8, 1.6], "w": [0.4, 1.2]},
                "objective": "accuracy",
                "strategy": "gp",
                "max_trials": 40,
                "parallelism": 4,
                "training": {"epochs": 100, "batch_size": 64},
            }
        },
    )

    name: str = Field(..., min_length=1, max_length=200)
    base: dict[str, Any] = Field(..., description="ArchConfig.from_dict input, e.g. a preset.")
    dataset: DatasetSpec = Field(default_factory=lambda: DatasetSpec(name="digits", num_classes=10))
    budget: BudgetSpec
    space: dict[Literal["r", "d_i", "d_m", "w"], tuple[Bound, Bound]] | None = Field(
        default=None, description="Per-factor [min, max]; missing factors keep the default range."
    )
    objective: Literal["accuracy", "pareto"] = "accuracy"
    strategy: Literal["gp", "random", "sobol", "ax"] = "gp"
    max_trials: int = Field(default=40, ge=1, le=100_000)
    parallelism: int = Field(default=4, ge=1, le=10_000)
    training: TrainingSpec = Field(default_factory=lambda: TrainingSpec())
    seed: int = Field(default=0, ge=0, le=2**31 - 1)

    @model_validator(mode="after")
    def _ranges_ordered(self) -> SearchCreate:
        for factor, (low, high) in (self.space or {}).items():
            if low >= high:
                raise ValueError(f"space.{factor}: min {low} must be below max {high}")
        return self


class Counts(BaseModel):
    queued: int = 0
    running: int = 0
    completed: int = 0
    failed: int = 0
    stopped: int = 0


class CurvePoint(_Strict):
    """One epoch of a learning curve, as workers report it."""

    epoch: int = Field(..., ge=0, le=1_000_000)
    val_top1: Fraction | None = None
    val_top5: Fraction | None = None
    train_loss: NonNegative | None = None
    val_loss: NonNegative | None = None
    train_top1: Fraction | None = None
    lr: NonNegative | None = None
    epoch_time_s: NonNegative | None = None


class TrialPublic(BaseModel):
    """A trial as every reader sees it (API, dashboard, export)."""

    id: int
    search_id: int
    state: TrialState
    kind: TrialKind
    factors: dict[str, float]
    effective_factors: dict[str, float]
    arch: dict[str, Any]
    resolution: int
    macs: int
    params: int
    top1: float | None
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


# -- workers ----------------------------------------------------------------------------------


class LeaseRequest(_Strict):
    worker: str = Field(..., min_length=1, max_length=200, examples=["box-1:cuda0"])


class TrialLease(BaseModel):
    """What a worker needs to train one trial; `lease_id` must accompany every report."""

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
    lease_id: str = Field(..., min_length=1, max_length=64)
    epoch: int = Field(default=0, ge=0, le=1_000_000)
    metrics: dict[Annotated[str, Field(max_length=64)], Finite] = Field(
        default_factory=dict, max_length=64, description='e.g. {"val_top1": 0.8, "train_loss": 1}'
    )

    @model_validator(mode="after")
    def _fractions(self) -> TrialHeartbeat:
        for name in ("val_top1", "val_top5", "train_top1"):
            value = self.metrics.get(name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"metrics.{name} must be a fraction in [0, 1], got {value}")
        return self


class HeartbeatReply(BaseModel):
    action: Literal["continue", "stop"]
    reason: str | None = None
    lease_expires_at: datetime | None = None


class TrialReport(_Strict):
    """POST /api/trials/{id}/complete. top1/top5 are fractions in [0, 1]."""

    lease_id: str = Field(..., min_length=1, max_length=64)
    top1: Fraction
    top5: Fraction | None = None
    params: int | None = Field(default=None, ge=0, le=10**13)
    macs: int | None = Field(default=None, ge=0, le=10**15)
    latency_ms: NonNegative | None = None
    images_per_s: NonNegative | None = None
    surrogate: bool = False
    curve: list[CurvePoint] = Field(default_factory=list, max_length=100_000)


class TrialFailure(_Strict):
    lease_id: str = Field(..., min_length=1, max_length=64)
    error: str = Field(..., min_length=1, max_length=20_000)
    retry: bool = False


class TrialAck(BaseModel):
    id: int
    search_id: int
    state: TrialState
    attempts: int


# -- misc -------------------------------------------------------------------------------------


class WorkerPublic(BaseModel):
    worker: str
    running: int
    completed: int
    failed: int
    last_seen_at: datetime | None
    running_trials: list[int]


class TokenCreate(_Strict):
    role: Role
    name: str | None = Field(default=None, max_length=200)


class TokenCreated(BaseModel):
    id: int
    role: Role
    name: str | None
    token: str = Field(..., description="Shown once; only its SHA-256 is stored.")
