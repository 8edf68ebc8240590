"""Named reference networks: the presets a search trains beside its own (the create body's
`references`, stored as `named_references`), and the trial kind `reference:named` with the
preset's name (`reference_name`).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_KINDS = "kind IN ('reference:width_only', 'reference:compound', 'reference:baseline', 'search')"
NEW_KINDS = (
    "kind IN ('reference:width_only', 'reference:compound', 'reference:baseline', "
    "'reference:named', 'search')"
)


def upgrade() -> None:
    with op.batch_alter_table("searches") as batch:
        batch.add_column(
            sa.Column("named_references", sa.JSON(), server_default="[]", nullable=False)
        )
    with op.batch_alter_table("trials") as batch:
        batch.add_column(sa.Column("reference_name", sa.String(64), nullable=True))
        batch.drop_constraint(op.f("ck_trials_kind"), type_="check")
        batch.create_check_constraint(op.f("ck_trials_kind"), NEW_KINDS)


def downgrade() -> None:
    # A named reference has no older equivalent: its trials go (they are yardsticks, not results
    # the search's models were fitted on).
    op.execute("DELETE FROM trials WHERE kind = 'reference:named'")
    with op.batch_alter_table("trials") as batch:
        batch.drop_constraint(op.f("ck_trials_kind"), type_="check")
        batch.create_check_constraint(op.f("ck_trials_kind"), OLD_KINDS)
        batch.drop_column("reference_name")
    with op.batch_alter_table("searches") as batch:
        batch.drop_column("named_references")
