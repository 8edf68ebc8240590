"""SQLAlchemy 2 tables: searches, trials, per-epoch trial metrics, artifacts, the workers seen
and hashed API tokens.

Storage only — the API contract lives in service/schemas.py. The schema itself is made by
Alembic (migrations/); these declarations are what autogenerate compares against. Imports
vitcube.contract only (the states and kinds its check constraints allow).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from vitcube.contract import (
    ARTIFACT_KINDS,
    BUILTIN_TRAINER,
    SEARCH_STATES,
    TRIAL_KINDS,
    TRIAL_STATES,
)

ROLES = ("admin", "worker", "viewer")

# Stable constraint names so that migrations and autogenerate agree on every backend.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware timestamp on every backend.

    PostgreSQL stores `timestamptz`; SQLite has no zone, so values are stored as naive UTC and
    handed back with `tzinfo=UTC` attached.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a timezone-aware column")
        if dialect.name == "sqlite":
            return value.astimezone(UTC).replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSON(),
    }


class Search(Base):
    __tablename__ = "searches"
    __table_args__ = (
        CheckConstraint(_in("state", SEARCH_STATES), name="state"),
        CheckConstraint(_in("objective", ("accuracy", "pareto")), name="objective"),
        CheckConstraint("max_trials >= 1 AND parallelism >= 1", name="limits"),
        CheckConstraint(
            "max_train_epochs IS NULL OR max_train_epochs >= 1", name="max_train_epochs"
        ),
        CheckConstraint("max_macs > 0 AND m0 > 0", name="macs_positive"),
        Index("ix_searches_state", "state"),
        # Leasing: only searches whose trainer the asking worker can run.
        Index("ix_searches_trainer_label", "trainer_label"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(16), default="running")
    base: Mapped[dict[str, Any]]  # ArchConfig.to_dict(), num_classes from the dataset
    dataset: Mapped[dict[str, Any]]
    budget: Mapped[dict[str, Any]]  # as requested: {"max_macs"} or {"c"}, optional "min_macs"
    m0: Mapped[int] = mapped_column(BigInteger)
    max_macs: Mapped[int] = mapped_column(BigInteger)
    min_macs: Mapped[int | None] = mapped_column(BigInteger)
    space: Mapped[dict[str, Any]]
    objective: Mapped[str] = mapped_column(String(16))
    strategy: Mapped[str] = mapped_column(String(16))
    max_trials: Mapped[int] = mapped_column(Integer)
    parallelism: Mapped[int] = mapped_column(Integer)
    training: Mapped[dict[str, Any]]
    # The resolved schedule (vitcube.contract.FullSchedule / AshaSchedule as a dict) and the
    # optional compute budget: the epochs all trials together may train.
    schedule: Mapped[dict[str, Any]] = mapped_column(
        JSON, default=lambda: {"kind": "full"}, server_default='{"kind": "full"}'
    )
    max_train_epochs: Mapped[int | None] = mapped_column(Integer)
    # The create body's `references`, resolved: [{"name", "resolution"}], trained beside the
    # search as `reference:named` trials.
    named_references: Mapped[list[dict[str, Any]]] = mapped_column(
        JSON, default=list, server_default="[]"
    )
    # What trains the trials (vitcube.contract.TrainerSpec as a dict), its label (what a lease
    # matches against the worker's trainers) and what ranks them (MetricSpec as a dict).
    trainer: Mapped[dict[str, Any]] = mapped_column(
        JSON, default=lambda: {"kind": "builtin"}, server_default='{"kind": "builtin"}'
    )
    trainer_label: Mapped[str] = mapped_column(
        String(72), default=BUILTIN_TRAINER, server_default=BUILTIN_TRAINER
    )
    metric: Mapped[dict[str, Any]] = mapped_column(
        JSON,
        default=lambda: {"name": "val_top1", "goal": "maximize"},
        server_default='{"name": "val_top1", "goal": "maximize"}',
    )
    # Images in one training epoch, as the workers report it: train_macs = Σ epochs x MACs x this.
    train_images: Mapped[int | None] = mapped_column(BigInteger)
    seed: Mapped[int] = mapped_column(BigInteger)
    extra: Mapped[dict[str, Any]]  # fields of the create body beyond the documented ones
    error: Mapped[str | None] = mapped_column(Text)  # why it failed or was paused
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        default=utcnow, onupdate=utcnow, server_default=func.now()
    )
    finished_at: Mapped[datetime | None]
    # Fail fast looks only at trials that finished after this (set by an admin's resume).
    resumed_at: Mapped[datetime | None]

    trials: Mapped[list[Trial]] = relationship(back_populates="search", passive_deletes=True)


class Trial(Base):
    __tablename__ = "trials"
    __table_args__ = (
        CheckConstraint(_in("state", TRIAL_STATES), name="state"),
        CheckConstraint(_in("kind", TRIAL_KINDS), name="kind"),
        CheckConstraint("attempts >= 0", name="attempts"),
        CheckConstraint("to_epoch IS NULL OR to_epoch >= 1", name="to_epoch"),
        CheckConstraint("epochs_trained >= 0", name="epochs_trained"),
        CheckConstraint("top5 IS NULL OR (top5 >= 0 AND top5 <= 1)", name="top5_fraction"),
        CheckConstraint(
            "state != 'running' OR (lease_id IS NOT NULL AND lease_expires_at IS NOT NULL)",
            name="running_has_lease",
        ),
        # The same network is never trained twice within a search.
        UniqueConstraint("search_id", "arch_key", name="uq_trials_search_id_arch_key"),
        # Leasing: the oldest queued trial per search.
        Index("ix_trials_state_search_id_id", "state", "search_id", "id"),
        # Sweeping expired leases.
        Index("ix_trials_state_lease_expires_at", "state", "lease_expires_at"),
        # A dashboard refresh: a search's trials changed since a cursor.
        Index("ix_trials_search_id_updated_at", "search_id", "updated_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    search_id: Mapped[int] = mapped_column(ForeignKey("searches.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32), default="search")
    reference_name: Mapped[str | None] = mapped_column(String(64))  # a reference:named's preset
    state: Mapped[str] = mapped_column(String(16), default="queued")
    # Requested factors (what the strategy asked for) ...
    r: Mapped[float] = mapped_column(Float)
    d_i: Mapped[float] = mapped_column(Float)
    d_m: Mapped[float] = mapped_column(Float)
    w: Mapped[float] = mapped_column(Float)
    # ... and effective ones (what was built, as ratios to the baseline); models fit these.
    eff_r: Mapped[float] = mapped_column(Float)
    eff_d_i: Mapped[float] = mapped_column(Float)
    eff_d_m: Mapped[float] = mapped_column(Float)
    eff_w: Mapped[float] = mapped_column(Float)
    arch: Mapped[dict[str, Any]]  # models.Arch.to_dict()
    arch_key: Mapped[str] = mapped_column(String(512))
    resolution: Mapped[int] = mapped_column(Integer)
    macs: Mapped[int] = mapped_column(BigInteger)
    params: Mapped[int] = mapped_column(BigInteger)
    lease_id: Mapped[str | None] = mapped_column(String(36))
    lease_expires_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str | None] = mapped_column(String(200))
    # The trial's value of its search's metric (`searches.metric`: val_top1 by default) at its
    # best epoch so far; ranked as service.metric's scores.
    value: Mapped[float | None] = mapped_column(Float)
    top5: Mapped[float | None] = mapped_column(Float)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    images_per_s: Mapped[float | None] = mapped_column(Float)
    surrogate: Mapped[bool] = mapped_column(Boolean, default=False)
    metrics: Mapped[dict[str, Any] | None]  # the worker's report beyond the columns above
    report_digest: Mapped[str | None] = mapped_column(String(64))  # idempotent complete
    error: Mapped[str | None] = mapped_column(Text)
    # The schedule's segments: the epoch the trial's current (or next) lease trains to (null:
    # training.epochs), its value at every rung it reached (epoch as text -> value), and the
    # epochs its training has reached over all its segments (what the search's compute counts).
    to_epoch: Mapped[int | None] = mapped_column(Integer)
    rung_values: Mapped[dict[str, float] | None] = mapped_column(JSON)
    epochs_trained: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    # Whether the failure that set `error` was reported retryable (SIGTERM, a lost device) or
    # not (a bad recipe, a missing dataset); null when no failure was reported.
    error_retryable: Mapped[bool | None] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        default=utcnow, onupdate=utcnow, server_default=func.now()
    )
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]

    search: Mapped[Search] = relationship(back_populates="trials")

    @property
    def factors(self) -> dict[str, float]:
        return {"r": self.r, "d_i": self.d_i, "d_m": self.d_m, "w": self.w}

    @property
    def effective_factors(self) -> dict[str, float]:
        return {"r": self.eff_r, "d_i": self.eff_d_i, "d_m": self.eff_d_m, "w": self.eff_w}


class SearchAnalysis(Base):
    """The GP views and the downsizing formula last computed for a search (service.analyst),
    stored so that every replica, and a restarted server, answers from it without fitting."""

    __tablename__ = "search_analyses"
    __table_args__ = (CheckConstraint("trials >= 0", name="trials"),)

    search_id: Mapped[int] = mapped_column(
        ForeignKey("searches.id", ondelete="CASCADE"), primary_key=True
    )
    version: Mapped[str | None] = mapped_column(String(200))  # the completed set fitted on
    trials: Mapped[int] = mapped_column(Integer, default=0)  # completed trials fitted on
    analysis: Mapped[dict[str, Any] | None]
    formula: Mapped[dict[str, Any] | None]  # search.Formula.state(), None when it cannot fit
    formula_error: Mapped[str | None] = mapped_column(Text)  # why it cannot fit yet
    took_s: Mapped[float | None] = mapped_column(Float)
    computed_at: Mapped[datetime | None]
    # A computation in progress: who claimed it and until when (the claim then lapses).
    claimed_by: Mapped[str | None] = mapped_column(String(200))
    claimed_until: Mapped[datetime | None]


class TrialMetric(Base):
    """One point of a learning curve: a heartbeat's metrics, or the completed curve. `value` is
    the search's metric at that epoch; the other metrics keep their columns, or `extra`."""

    __tablename__ = "trial_metrics"
    __table_args__ = (
        UniqueConstraint("trial_id", "epoch", name="uq_trial_metrics_trial_id_epoch"),
        CheckConstraint("epoch >= 0", name="epoch"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id", ondelete="CASCADE"))
    epoch: Mapped[int] = mapped_column(Integer)
    value: Mapped[float | None] = mapped_column(Float)
    val_top5: Mapped[float | None] = mapped_column(Float)
    train_loss: Mapped[float | None] = mapped_column(Float)
    extra: Mapped[dict[str, Any] | None]  # every other metric the worker sent
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())


class Artifact(Base):
    """A trial's latest checkpoint or its final weights: where the object lies in the artifact
    store (service.artifacts) and what it holds. At most one row per (trial, kind): a new upload
    replaces the row, and the replaced object is deleted once the swap is committed."""

    __tablename__ = "artifacts"
    __table_args__ = (
        CheckConstraint(_in("kind", ARTIFACT_KINDS), name="kind"),
        CheckConstraint("bytes >= 0 AND step >= 0 AND attempt >= 0", name="counts"),
        CheckConstraint("epoch IS NULL OR epoch >= 0", name="epoch"),
        UniqueConstraint("trial_id", "kind", name="uq_artifacts_trial_id_kind"),
        # A search's artifacts: its byte count, the list, retention.
        Index("ix_artifacts_search_id", "search_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    search_id: Mapped[int] = mapped_column(ForeignKey("searches.id", ondelete="CASCADE"))
    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    key: Mapped[str] = mapped_column(String(512))  # relative to the store's root, server-made
    bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    epoch: Mapped[int | None] = mapped_column(Integer)  # completed epochs (checkpoints)
    step: Mapped[int] = mapped_column(Integer, default=0)  # steps into the next epoch
    attempt: Mapped[int] = mapped_column(Integer, default=0)  # the trial's attempts at upload
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())


class Worker(Base):
    """A worker that asked for a lease: the trainers it said it can run, and when it last asked
    (by the database clock). Written by every lease request (service.queue)."""

    __tablename__ = "workers"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    trainers: Mapped[list[str]] = mapped_column(JSON)  # trainer labels: builtin, command:NAME
    first_seen_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())


class ApiToken(Base):
    """A token made by `vitcube token create`; only its SHA-256 is stored."""

    __tablename__ = "api_tokens"
    __table_args__ = (CheckConstraint(_in("role", ROLES), name="role"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str | None] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())
    revoked_at: Mapped[datetime | None]
