"""Initial schema: searches, trials, trial_metrics, api_tokens.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("token_sha256", sa.String(length=64), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "role IN ('admin', 'worker', 'viewer')", name=op.f("ck_api_tokens_role")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_tokens")),
        sa.UniqueConstraint("token_sha256", name=op.f("uq_api_tokens_token_sha256")),
    )
    op.create_table(
        "searches",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("base", sa.JSON(), nullable=False),
        sa.Column("dataset", sa.JSON(), nullable=False),
        sa.Column("budget", sa.JSON(), nullable=False),
        sa.Column("m0", sa.BigInteger(), nullable=False),
        sa.Column("max_macs", sa.BigInteger(), nullable=False),
        sa.Column("min_macs", sa.BigInteger(), nullable=True),
        sa.Column("space", sa.JSON(), nullable=False),
        sa.Column("objective", sa.String(length=16), nullable=False),
        sa.Column("strategy", sa.String(length=16), nullable=False),
        sa.Column("max_trials", sa.Integer(), nullable=False),
        sa.Column("parallelism", sa.Integer(), nullable=False),
        sa.Column("training", sa.JSON(), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("extra", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "objective IN ('accuracy', 'pareto')", name=op.f("ck_searches_objective")
        ),
        sa.CheckConstraint(
            "state IN ('running', 'completed', 'stopped', 'failed')", name=op.f("ck_searches_state")
        ),
        sa.CheckConstraint("max_macs > 0 AND m0 > 0", name=op.f("ck_searches_macs_positive")),
        sa.CheckConstraint("max_trials >= 1 AND parallelism >= 1", name=op.f("ck_searches_limits")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_searches")),
    )
    with op.batch_alter_table("searches", schema=None) as batch_op:
        batch_op.create_index("ix_searches_state", ["state"], unique=False)

    op.create_table(
        "trials",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("search_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("r", sa.Float(), nullable=False),
        sa.Column("d_i", sa.Float(), nullable=False),
        sa.Column("d_m", sa.Float(), nullable=False),
        sa.Column("w", sa.Float(), nullable=False),
        sa.Column("eff_r", sa.Float(), nullable=False),
        sa.Column("eff_d_i", sa.Float(), nullable=False),
        sa.Column("eff_d_m", sa.Float(), nullable=False),
        sa.Column("eff_w", sa.Float(), nullable=False),
        sa.Column("arch", sa.JSON(), nullable=False),
        sa.Column("arch_key", sa.String(length=512), nullable=False),
        sa.Column("resolution", sa.Integer(), nullable=False),
        sa.Column("macs", sa.BigInteger(), nullable=False),
        sa.Column("params", sa.BigInteger(), nullable=False),
        sa.Column("lease_id", sa.String(length=36), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("worker", sa.String(length=200), nullable=True),
        sa.Column("top1", sa.Float(), nullable=True),
        sa.Column("top5", sa.Float(), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("images_per_s", sa.Float(), nullable=True),
        sa.Column("surrogate", sa.Boolean(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=True),
        sa.Column("report_digest", sa.String(length=64), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "kind IN ('reference:width_only', 'reference:compound', 'reference:baseline', "
            "'search')",
            name=op.f("ck_trials_kind"),
        ),
        sa.CheckConstraint(
            "state != 'running' OR (lease_id IS NOT NULL AND lease_expires_at IS NOT NULL)",
            name=op.f("ck_trials_running_has_lease"),
        ),
        sa.CheckConstraint(
            "state IN ('queued', 'running', 'completed', 'failed', 'stopped')",
            name=op.f("ck_trials_state"),
        ),
        sa.CheckConstraint("attempts >= 0", name=op.f("ck_trials_attempts")),
        sa.CheckConstraint(
            "top1 IS NULL OR (top1 >= 0 AND top1 <= 1)", name=op.f("ck_trials_top1_fraction")
        ),
        sa.CheckConstraint(
            "top5 IS NULL OR (top5 >= 0 AND top5 <= 1)", name=op.f("ck_trials_top5_fraction")
        ),
        sa.ForeignKeyConstraint(
            ["search_id"],
            ["searches.id"],
            name=op.f("fk_trials_search_id_searches"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_trials")),
        sa.UniqueConstraint("search_id", "arch_key", name="uq_trials_search_id_arch_key"),
    )
    with op.batch_alter_table("trials", schema=None) as batch_op:
        batch_op.create_index(
            "ix_trials_state_lease_expires_at", ["state", "lease_expires_at"], unique=False
        )
        batch_op.create_index(
            "ix_trials_state_search_id_id", ["state", "search_id", "id"], unique=False
        )

    op.create_table(
        "trial_metrics",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("trial_id", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("val_top1", sa.Float(), nullable=True),
        sa.Column("val_top5", sa.Float(), nullable=True),
        sa.Column("train_loss", sa.Float(), nullable=True),
        sa.Column("extra", sa.JSON(), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.CheckConstraint("epoch >= 0", name=op.f("ck_trial_metrics_epoch")),
        sa.ForeignKeyConstraint(
            ["trial_id"],
            ["trials.id"],
            name=op.f("fk_trial_metrics_trial_id_trials"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_trial_metrics")),
        sa.UniqueConstraint("trial_id", "epoch", name="uq_trial_metrics_trial_id_epoch"),
    )


def downgrade() -> None:
    op.drop_table("trial_metrics")
    with op.batch_alter_table("trials", schema=None) as batch_op:
        batch_op.drop_index("ix_trials_state_search_id_id")
        batch_op.drop_index("ix_trials_state_lease_expires_at")

    op.drop_table("trials")
    with op.batch_alter_table("searches", schema=None) as batch_op:
        batch_op.drop_index("ix_searches_state")

    op.drop_table("searches")
    op.drop_table("api_tokens")
