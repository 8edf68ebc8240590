"""Any metric: a trial's value of its search's metric is stored once, whatever the metric's name.

`trials.top1` becomes `trials.value` (no longer a fraction: a loss or an mAP may be stored),
`trials.rung_top1` becomes `trials.rung_values`, and `trial_metrics.val_top1` becomes
`trial_metrics.value` (the search's metric at that epoch; other metrics keep their columns or
`extra`). Every search before this one optimised val_top1, so the values are the same numbers.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-08
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TOP1_FRACTION = "top1 IS NULL OR (top1 >= 0 AND top1 <= 1)"


def upgrade() -> None:
    with op.batch_alter_table("trials") as batch:
        batch.drop_constraint(op.f("ck_trials_top1_fraction"), type_="check")
        batch.alter_column("top1", new_column_name="value")
        batch.alter_column("rung_top1", new_column_name="rung_values")
    with op.batch_alter_table("trial_metrics") as batch:
        batch.alter_column("val_top1", new_column_name="value")


def downgrade() -> None:
    # Values of another metric have no place in a top-1 column: a search that optimised
    # something else loses them (its trials stay, without a result).
    op.execute(
        "UPDATE trials SET value = NULL, rung_values = NULL WHERE value < 0 OR value > 1 "
        "OR search_id IN (SELECT id FROM searches WHERE metric IS NOT NULL "
        "AND CAST(metric AS TEXT) NOT LIKE '%\"val_top1\"%')"
    )
    op.execute(
        "UPDATE trial_metrics SET value = NULL WHERE trial_id IN (SELECT t.id FROM trials t "
        "JOIN searches s ON s.id = t.search_id WHERE s.metric IS NOT NULL "
        "AND CAST(s.metric AS TEXT) NOT LIKE '%\"val_top1\"%')"
    )
    with op.batch_alter_table("trial_metrics") as batch:
        batch.alter_column("value", new_column_name="val_top1")
    with op.batch_alter_table("trials") as batch:
        batch.alter_column("rung_values", new_column_name="rung_top1")
        batch.alter_column("value", new_column_name="top1")
        batch.create_check_constraint(op.f("ck_trials_top1_fraction"), TOP1_FRACTION)
