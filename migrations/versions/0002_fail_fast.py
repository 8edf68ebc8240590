"""Fail fast: a `paused` search state, the search's resume time, a trial's failure kind.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_STATES = "state IN ('running', 'completed', 'stopped', 'failed')"
NEW_STATES = "state IN ('running', 'paused', 'completed', 'stopped', 'failed')"


def upgrade() -> None:
    with op.batch_alter_table("searches") as batch:
        batch.add_column(sa.Column("resumed_at", sa.DateTime(timezone=True), nullable=True))
        batch.drop_constraint(op.f("ck_searches_state"), type_="check")
        batch.create_check_constraint(op.f("ck_searches_state"), NEW_STATES)
    with op.batch_alter_table("trials") as batch:
        batch.add_column(sa.Column("error_retryable", sa.Boolean(), nullable=True))


def downgrade() -> None:
    # A paused search has no older equivalent: it is stopped, with its reason kept.
    op.execute("UPDATE searches SET state = 'stopped' WHERE state = 'paused'")
    with op.batch_alter_table("trials") as batch:
        batch.drop_column("error_retryable")
    with op.batch_alter_table("searches") as batch:
        batch.drop_constraint(op.f("ck_searches_state"), type_="check")
        batch.create_check_constraint(op.f("ck_searches_state"), OLD_STATES)
        batch.drop_column("resumed_at")
