"""The API's pydantic models, named by purpose and kept apart from the tables.

Every number has bounds; non-finite floats are refused (422). What travels between the server
and its workers (states, the training recipe, the lease and the worker reports) is defined in
`vitcube.contract` and re-exported here, so the service has one place to import schemas from
and the workers validate with the very same classes. Imports vitcube.contract only.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, StrictInt, model_validator

from vitcube.contract import (
    DATASET_CLASSES,
    FACTORS,
    ArtifactPublic,
    CheckpointRef,
    CurvePoint,
    DatasetName,
    Factor,
    HeartbeatReply,
    LeaseRequest,
    Schedule,
    SearchState,
    TrainingRecipe,
    TrialAck,
    TrialFailure,
    TrialHeartbeat,
    TrialKind,
    TrialLease,
    TrialReport,
    TrialState,
)

__all__ = [
    "DATASET_CLASSES",
    "FACTORS",
    "ArchitecturePublic",
    "ArtifactPublic",
    "ArtifactsDeleted",
    "BudgetSpec",
    "CheckpointRef",
    "CheckpointSummary",
    "Counts",
    "CurvePoint",
    "DatasetSpec",
    "HeartbeatReply",
    "LeaseRequest",
    "Role",
    "RungSummary",
    "SearchArtifacts",
    "SearchCreate",
    "SearchPublic",
    "SearchState",
    "TokenCreate",
    "TokenCreated",
    "TrainingRecipe",
    "TrialAck",
    "TrialFailure",
    "TrialHeartbeat",
    "TrialKind",
    "TrialLease",
    "TrialPublic",
    "TrialReport",
    "TrialState",
    "WorkerPublic",
]

# Strict: a JSON boolean or a numeric string is not a number (POST refuses what the schema does).
Bound = Annotated[float, Strict(), Field(gt=0.0, le=100.0, allow_inf_nan=False)]
Macs = Annotated[int, Strict(), Field(gt=0, le=10**15)]

Role = Literal["admin", "worker", "viewer"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- searches ---------------------------------------------------------------------------------


class DatasetSpec(BaseModel):
    """Which data a trial trains on; extra keys (e.g. `root`, `split`) are passed to workers."""

    model_config = ConfigDict(extra="allow")

    name: DatasetName
    num_classes: StrictInt | None = Field(default=None, ge=2, le=100_000)

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
    c: Annotated[float, Strict(), Field(gt=0.0, le=100.0, allow_inf_nan=False)] | None = None
    min_macs: Annotated[int, Strict(), Field(ge=0, le=10**15)] | None = None

    @model_validator(mode="after")
    def _one_budget(self) -> BudgetSpec:
        if (self.max_macs is None) == (self.c is None):
            raise ValueError("give exactly one of budget.max_macs or budget.c (max_macs = c · m0)")
        low, high = self.min_macs, self.max_macs
        if low is not None and high is not None and low > high:
            raise ValueError("budget.min_macs must not exceed budget.max_macs")
        return self


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
                "schedule": {"kind": "asha", "min_epochs": 3, "eta": 3},
            }
        },
    )

    name: str = Field(..., min_length=1, max_length=200)
    base: dict[str, Any] = Field(..., description="ArchConfig.from_dict input, e.g. a preset.")
    dataset: DatasetSpec = Field(default_factory=lambda: DatasetSpec(name="digits", num_classes=10))
    budget: BudgetSpec
    space: dict[Factor, tuple[Bound, Bound]] | None = Field(
        default=None, description="Per-factor [min, max]; missing factors keep the default range."
    )
    objective: Literal["accuracy", "pareto"] = "accuracy"
    strategy: Literal["gp", "random", "sobol", "ax"] = "gp"
    max_trials: StrictInt = Field(default=40, ge=1, le=100_000)
    parallelism: StrictInt = Field(default=4, ge=1, le=10_000)
    training: TrainingRecipe = Field(
        default_factory=lambda: TrainingRecipe(),
        description="The recipe every trial trains with; unknown keys and values a worker "
        "would refuse are 422.",
    )
    seed: StrictInt = Field(default=0, ge=0, le=2**31 - 1)
    schedule: Schedule | None = Field(
        default=None,
        description='How trials spend their epochs: {"kind": "full"} trains every trial for '
        'training.epochs; {"kind": "asha", "min_epochs": e, "eta": η} trains in rungs e, eη, '
        "eη², … and training.epochs, promoting the best 1/η of each rung. Null: asha with "
        "η = 3 and min_epochs = epochs // 27 when that makes three rungs or more, else full.",
    )
    max_train_epochs: StrictInt | None = Field(
        default=None,
        ge=1,
        le=10**9,
        description="Compute budget: the epochs all trials together may train; the search "
        "completes when they are spent (or at max_trials configurations). Null: no limit.",
    )

    @model_validator(mode="after")
    def _ranges_ordered(self) -> SearchCreate:
        for factor, (low, high) in (self.space or {}).items():
            if low >= high:
                raise ValueError(f"space.{factor}: min {low} must be below max {high}")
        schedule = self.schedule
        epochs = self.training.epochs
        if schedule is not None and schedule.kind == "asha" and schedule.min_epochs > epochs:
            raise ValueError(
                f"schedule.min_epochs must be in [1, training.epochs] = [1, {epochs}], "
                f"got {schedule.min_epochs}"
            )
        return self


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
    rung_top1: dict[str, float] = Field(
        default_factory=dict, description="Top-1 at each rung reached: epoch (as text) → top-1."
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
    best_top1: float | None = Field(default=None, description="The best top-1 at this rung.")


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
    epochs_trained: float = Field(default=0.0, description="Epochs trained by all trials.")
    train_macs: float = Field(
        default=0.0, description="Σ epochs × MACs per image × training images, all trials."
    )


# -- artifacts ----------------------------------------------------------------------------------


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
