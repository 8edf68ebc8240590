"""Trainers: what trains a search's trials (`trainer`, and `trainer_label`, what leases match on)
and what it is ranked by (`metric`); the workers that asked for leases and the trainers each can
run (`workers`), so a search can say when no connected worker can run it.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-08
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Every existing search was trained by the builtin trainer and ranked by val_top1.
    with op.batch_alter_table("searches") as batch:
        batch.add_column(
            sa.Column("trainer", sa.JSON(), server_default='{"kind": "builtin"}', nullable=False)
        )
        batch.add_column(
            sa.Column("trainer_label", sa.String(72), server_default="builtin", nullable=False)
        )
        batch.add_column(
            sa.Column(
                "metric",
                sa.JSON(),
                server_default='{"name": "val_top1", "goal": "maximize"}',
                nullable=False,
            )
        )
        batch.create_index("ix_searches_trainer_label", ["trainer_label"], unique=False)
    now = sa.func.now()
    op.create_table(
        "workers",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("trainers", sa.JSON(), nullable=False),
        *(
            sa.Column(seen, sa.DateTime(timezone=True), server_default=now, nullable=False)
            for seen in ("first_seen_at", "last_seen_at")
        ),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_workers")),
    )


def downgrade() -> None:
    op.drop_table("workers")
    with op.batch_alter_table("searches") as batch:
        batch.drop_index("ix_searches_trainer_label")
        batch.drop_column("metric")
        batch.drop_column("trainer_label")
        batch.drop_column("trainer")
