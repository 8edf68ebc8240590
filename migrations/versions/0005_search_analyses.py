"""Analyses: each search's last computed GP views and formula (search_analyses), and the index a
dashboard refresh reads a search's recently changed trials by.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "search_analyses",
        sa.Column("search_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.String(length=200), nullable=True),
        sa.Column("trials", sa.Integer(), nullable=False),
        sa.Column("analysis", sa.JSON(), nullable=True),
        sa.Column("formula", sa.JSON(), nullable=True),
        sa.Column("formula_error", sa.Text(), nullable=True),
        sa.Column("took_s", sa.Float(), nullable=True),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("claimed_by", sa.String(length=200), nullable=True),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("trials >= 0", name=op.f("ck_search_analyses_trials")),
        sa.ForeignKeyConstraint(
            ["search_id"],
            ["searches.id"],
            name=op.f("fk_search_analyses_search_id_searches"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("search_id", name=op.f("pk_search_analyses")),
    )
    op.create_index(
        "ix_trials_search_id_updated_at", "trials", ["search_id", "updated_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_trials_search_id_updated_at", table_name="trials")
    op.drop_table("search_analyses")
