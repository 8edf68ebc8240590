"""The API's pydantic models, named by purpose and kept apart from the tables.

Every number has bounds; non-finite floats are refused (422). What travels between the server
and its workers (states, the training recipe, the lease and the worker reports) is defined in
`vitcube.contract` and re-exported here, so the service has one place to import schemas from
and the workers validate with the very same classes. So are the read views (`SearchPublic`,
`TrialPublic`, …) that `vitcube.client` parses its answers with. Imports vitcube.contract only.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    StrictInt,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from vitcube.contract import (
    COMPACT_COLUMNS,
    DATASET_CLASSES,
    FACTORS,
    IMAGEFOLDER_LAYOUTS,
    ArchitecturePublic,
    ArtifactPublic,
    ArtifactsDeleted,
    CheckpointRef,
    CheckpointSummary,
    Counts,
    CurvePoint,
    DatasetName,
    Factor,
    FormulaPublic,
    HeartbeatReply,
    LeaseRequest,
    MetricSpec,
    ReferencePlan,
    RungSummary,
    Schedule,
    SearchArtifacts,
    SearchPlan,
    SearchPublic,
    SearchState,
    TrainerSpec,
    TrainingRecipe,
    TrialAck,
    TrialFailure,
    TrialHeartbeat,
    TrialKind,
    TrialLease,
    TrialPublic,
    TrialReport,
    TrialsCompact,
    TrialState,
    WorkerPublic,
)

__all__ = [
    "COMPACT_COLUMNS",
    "DATASET_CLASSES",
    "FACTORS",
    "ArchitecturePublic",
    "ArtifactPublic",
    "ArtifactsDeleted",
    "BudgetSpec",
    "CheckpointRef",
    "CheckpointSummary",
    "CommandDataset",
    "Counts",
    "CurvePoint",
    "DatasetSpec",
    "FormulaPublic",
    "HeartbeatReply",
    "LeaseRequest",
    "MetricSpec",
    "NamedReference",
    "ReferencePlan",
    "Role",
    "RungSummary",
    "SearchArtifacts",
    "SearchCreate",
    "SearchPlan",
    "SearchPublic",
    "SearchState",
    "TokenCreate",
    "TokenCreated",
    "TrainerSpec",
    "TrainingRecipe",
    "TrialAck",
    "TrialFailure",
    "TrialHeartbeat",
    "TrialKind",
    "TrialLease",
    "TrialPublic",
    "TrialReport",
    "TrialState",
    "TrialsCompact",
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

    @model_validator(mode="after")
    def _layout_known(self) -> DatasetSpec:
        # An extra key like the others (not a field, so a dataset block without it is stored as
        # before), but one the worker reads: a typo is refused here, not when a trial starts.
        layout = (self.model_extra or {}).get("layout")
        if layout is not None and self.name != "imagefolder":
            raise ValueError(f"dataset.layout applies to imagefolder only, not {self.name}")
        if layout is not None and layout not in IMAGEFOLDER_LAYOUTS:
            raise ValueError(
                f"dataset.layout must be one of {', '.join(IMAGEFOLDER_LAYOUTS)} (auto: "
                f"whichever is on disk), got {layout!r}"
            )
        return self


class CommandDataset(BaseModel):
    """A command trainer's `dataset` block: the script owns its data, so the block is handed to
    it untouched: any name, any further keys, `num_classes` only when the script wants it."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(..., min_length=1, max_length=200, examples=["coco-2017"])
    num_classes: StrictInt | None = Field(default=None, ge=2, le=100_000)


# The metric the builtin trainer optimises (it also reports val_top5 and train_loss each epoch).
BUILTIN_METRIC = "val_top1"


def _known_keys(block: str, model: type[BaseModel], value: Any) -> Any:
    """`value` unchanged, or a 422 naming its first key `model` does not have and the closest
    key it does (a typo in `trainer` or `metric` never silently becomes a default)."""
    if not isinstance(value, Mapping):
        return value  # the model's own validation words the type error
    known = list(model.model_fields)
    unknown = [str(key) for key in value if key not in model.model_fields]
    if unknown:
        close = difflib.get_close_matches(unknown[0], known, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise PydanticCustomError(
            "unknown_key",
            "{block}.{key} is not a {block} key{hint}; the keys are {known}",
            {"block": block, "key": unknown[0], "hint": hint, "known": ", ".join(known)},
        )
    return value


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


class NamedReference(_Strict):
    """A preset network trained beside the search as a yardstick (`models` preset name), at
    `resolution` px (default: the preset's own, 224 for EfficientViT and MobileNets)."""

    name: str = Field(..., min_length=1, max_length=64, examples=["efficientvit_m2"])
    resolution: StrictInt | None = Field(default=None, ge=16, le=1024)


MAX_NAMED_REFERENCES = 8


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
    # Before `dataset`, which is validated for the trainer (see _dataset_for_the_trainer).
    trainer: TrainerSpec = Field(
        default_factory=TrainerSpec,
        description='What trains the trials: {"kind": "builtin"} (vitcube\'s recipe) or '
        '{"kind": "command", "name": LABEL}, a script a worker registered with vitcube worker '
        "--command LABEL='…'; only workers that can run it lease its trials.",
    )
    metric: MetricSpec = Field(
        default_factory=MetricSpec,
        description="What ranks the trials: a scalar every epoch's report carries and which way "
        "is better. The builtin trainer optimises val_top1.",
    )
    dataset: DatasetSpec | CommandDataset = Field(
        default_factory=lambda: DatasetSpec(name="digits", num_classes=10),
        description="The builtin trainer's dataset (digits, shapes, cifar10, cifar100, "
        "imagefolder), or for a command trainer any block, handed to the script untouched.",
    )
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
    references: list[Annotated[str, Field(min_length=1, max_length=64)] | NamedReference] = Field(
        default_factory=list,
        max_length=MAX_NAMED_REFERENCES,
        description="Preset networks to train beside the search as yardsticks, by name "
        '(e.g. "efficientvit_m2", "mobilenet_v3_large") or as {"name", "resolution"}: each '
        "trains with the search's recipe at its own resolution, is marked on the Pareto "
        'plot with its name and counts in "beats the references"; none is fitted on. '
        "The width-only and compound shrinks are always references.",
    )

    @field_validator("trainer", mode="wrap")
    @classmethod
    def _trainer_keys_and_label(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(_known_keys("trainer", TrainerSpec, value))
        except ValidationError as error:
            bad = next((e for e in error.errors() if e["loc"] == ("name",)), None)
            if bad is None:
                raise
            raise PydanticCustomError(
                "trainer_label",
                "trainer.name must be a label of letters, digits, '_', '.' and '-' that starts "
                "with a letter or digit (at most 63 characters), as given to vitcube worker "
                "--command LABEL='…'; got {got}",
                {"got": json.dumps(bad["input"])},
            ) from None

    @field_validator("metric", mode="before")
    @classmethod
    def _metric_keys(cls, value: Any) -> Any:
        return _known_keys("metric", MetricSpec, value)

    @field_validator("dataset", mode="wrap")
    @classmethod
    def _dataset_for_the_trainer(
        cls, value: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo
    ) -> DatasetSpec | CommandDataset:
        # A builtin search keeps the builtin datasets' exact validation; a command trainer's
        # script owns its data. (A trainer that failed validation is absent: builtin rules.)
        trainer = info.data.get("trainer")
        model = CommandDataset if trainer is not None and trainer.kind == "command" else DatasetSpec
        if isinstance(value, DatasetSpec | CommandDataset):
            value = value.model_dump(exclude_unset=True)
        return model.model_validate(value)

    @model_validator(mode="after")
    def _builtin_metric(self) -> SearchCreate:
        if self.trainer.kind == "builtin" and self.metric.name != BUILTIN_METRIC:
            raise ValueError(
                f"metric.name {self.metric.name!r} is not reported by the builtin trainer: it "
                f"reports {BUILTIN_METRIC} (and val_top5, train_loss), so a builtin search "
                f"optimises {BUILTIN_METRIC}; drop metric, or train with a command trainer "
                '({"kind": "command", "name": LABEL}) whose script reports '
                f"{self.metric.name}"
            )
        return self

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


# -- misc -------------------------------------------------------------------------------------


class TokenCreate(_Strict):
    role: Role
    name: str | None = Field(default=None, max_length=200)


class TokenCreated(BaseModel):
    id: int
    role: Role
    name: str | None
    token: str = Field(..., description="Shown once; only its SHA-256 is stored.")
