"""Artifacts: a trial's latest checkpoint and its final weights, kept in the artifact store.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-10
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "artifacts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("search_id", sa.Integer(), nullable=False),
        sa.Column("trial_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("key", sa.String(length=512), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=True),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.CheckConstraint("kind IN ('checkpoint', 'weights')", name=op.f("ck_artifacts_kind")),
        sa.CheckConstraint(
            "bytes >= 0 AND step >= 0 AND attempt >= 0", name=op.f("ck_artifacts_counts")
        ),
        sa.CheckConstraint("epoch IS NULL OR epoch >= 0", name=op.f("ck_artifacts_epoch")),
        sa.ForeignKeyConstraint(
            ["search_id"],
            ["searches.id"],
            name=op.f("fk_artifacts_search_id_searches"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["trial_id"],
            ["trials.id"],
            name=op.f("fk_artifacts_trial_id_trials"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_artifacts")),
        sa.UniqueConstraint("trial_id", "kind", name="uq_artifacts_trial_id_kind"),
    )
    op.create_index("ix_artifacts_search_id", "artifacts", ["search_id"], unique=False)


def downgrade() -> None:
    # The objects in the store are not touched: a later upgrade starts with no rows, and an
    # operator may still want the files.
    op.drop_index("ix_artifacts_search_id", table_name="artifacts")
    op.drop_table("artifacts")
