"""Schedules: a search's schedule, compute budget and images per training epoch; the `paused`
trial state; a trial's segment (to_epoch), its rung results and the epochs it has trained.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_STATES = "state IN ('queued', 'running', 'completed', 'failed', 'stopped')"
NEW_STATES = "state IN ('queued', 'running', 'paused', 'completed', 'failed', 'stopped')"


def upgrade() -> None:
    with op.batch_alter_table("searches") as batch:
        batch.add_column(
            sa.Column("schedule", sa.JSON(), server_default='{"kind": "full"}', nullable=False)
        )
        batch.add_column(sa.Column("max_train_epochs", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("train_images", sa.BigInteger(), nullable=True))
        batch.create_check_constraint(
            op.f("ck_searches_max_train_epochs"),
            "max_train_epochs IS NULL OR max_train_epochs >= 1",
        )
    with op.batch_alter_table("trials") as batch:
        batch.add_column(sa.Column("to_epoch", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("rung_top1", sa.JSON(), nullable=True))
        batch.add_column(
            sa.Column("epochs_trained", sa.Float(), server_default="0", nullable=False)
        )
        batch.drop_constraint(op.f("ck_trials_state"), type_="check")
        batch.create_check_constraint(op.f("ck_trials_state"), NEW_STATES)
        batch.create_check_constraint(
            op.f("ck_trials_to_epoch"), "to_epoch IS NULL OR to_epoch >= 1"
        )
        batch.create_check_constraint(op.f("ck_trials_epochs_trained"), "epochs_trained >= 0")


def downgrade() -> None:
    # A paused trial has no older equivalent: it keeps its partial result as a stopped trial.
    op.execute("UPDATE trials SET state = 'stopped' WHERE state = 'paused'")
    with op.batch_alter_table("trials") as batch:
        batch.drop_constraint(op.f("ck_trials_epochs_trained"), type_="check")
        batch.drop_constraint(op.f("ck_trials_to_epoch"), type_="check")
        batch.drop_constraint(op.f("ck_trials_state"), type_="check")
        batch.create_check_constraint(op.f("ck_trials_state"), OLD_STATES)
        for column in ("epochs_trained", "rung_top1", "to_epoch"):
            batch.drop_column(column)
    with op.batch_alter_table("searches") as batch:
        batch.drop_constraint(op.f("ck_searches_max_train_epochs"), type_="check")
        batch.drop_column("train_images")
        batch.drop_column("max_train_epochs")
        batch.drop_column("schedule")
