"""Server settings: one pydantic-settings class read from `VITCUBE_*` environment variables.

`get_settings()` is cached; tests build a `Settings(...)` themselves and hand it to
`service.app.create_app(settings)`. Imports nothing of ours.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything the server reads from its environment (prefix `VITCUBE_`)."""

    model_config = SettingsConfigDict(env_prefix="VITCUBE_", extra="ignore")

    database_url: str = Field(
        default="sqlite:///vitcube.db",
        description="SQLAlchemy URL: a SQLite file (embedded default) or postgresql+psycopg://…",
    )
    admin_token: SecretStr | None = None
    worker_token: SecretStr | None = None
    viewer_token: SecretStr | None = None
    lease_seconds: float = Field(
        default=120.0, gt=0, le=86_400, description="How long a lease lasts."
    )
    max_attempts: int = Field(default=3, ge=1, le=100, description="Attempts before a trial fails.")
    fail_fast_after: int = Field(
        default=3,
        ge=0,
        le=1000,
        description="Pause a search once this many of its trials in a row failed non-retryably "
        "with the same error and none completed since (0: never).",
    )
    max_worker_faults: int = Field(
        default=3,
        ge=0,
        le=100,
        description="Worker-fault failures (a broken GPU, a killed DataLoader worker) a trial "
        "may hand back without being charged an attempt; each one beyond costs an attempt.",
    )
    sweep_interval_s: float = Field(
        default=2.0, gt=0, le=3600, description="Expired-lease sweep period."
    )
    planner_interval_s: float = Field(
        default=1.0, gt=0, le=3600, description="Planner poll period."
    )
    background: bool = Field(default=True, description="Run the planner and lease sweeper threads.")
    max_body_bytes: int = Field(
        default=1_048_576, ge=1024, description="Larger request bodies get 413."
    )
    auth_cache_seconds: float = Field(
        default=5.0,
        ge=0,
        le=3600,
        description="A database token, once found, is trusted this long: revocation takes "
        "effect within it (0: ask the database every request).",
    )
    pool_size: int = Field(default=10, ge=1, le=200)
    max_overflow: int = Field(default=20, ge=0, le=200)
    # Median stopping rule (see service.queue.orm.heartbeat).
    median_stop_min_trials: int = Field(default=5, ge=1)
    median_stop_warmup_epochs: int = Field(default=5, ge=0)
    artifact_url: str | None = Field(
        default=None,
        description="Where checkpoints and weights are kept: a local directory or any fsspec URL "
        "(s3://bucket/prefix, gs://…); null: `artifacts/` beside the SQLite file, or "
        "./vitcube-artifacts for PostgreSQL.",
    )
    artifact_options: dict[str, Any] = Field(
        default_factory=dict,
        description='fsspec storage options as a JSON object, e.g. {"endpoint_url": '
        '"http://127.0.0.1:9000", "key": "…", "secret": "…"} for s3fs.',
    )
    max_artifact_bytes: int = Field(
        default=2 * 1024**3, ge=1, description="Larger checkpoint or weights uploads get 413."
    )
    keep_weights: int = Field(
        default=10,
        ge=0,
        le=100_000,
        description="When a search ends, the final weights of its Pareto front and of its best "
        "this-many trials by top-1 are kept; every other weights file and checkpoint is deleted.",
    )
    migrate_on_start: bool = Field(
        default=False,
        description="create_app() runs `db upgrade` itself (vitcube serve always does).",
    )

    @field_validator("admin_token", "worker_token", "viewer_token")
    @classmethod
    def _empty_token_is_unset(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            return None  # an empty variable means "not set", never "the empty token"
        return value

    @property
    def is_postgres(self) -> bool:
        return self.database_url.startswith("postgresql")


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
