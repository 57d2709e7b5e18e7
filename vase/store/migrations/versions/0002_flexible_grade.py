"""The flexible verdict of every sample: correct_flex, extracted_flex, flex_rule.

Existing samples get NULLs; ``vase regrade`` fills them from the stored outputs.

Revision ID: 0002_flexible_grade
Revises: 0001_initial
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_flexible_grade"
down_revision: str | None = "0001_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = ("correct_flex", "extracted_flex", "flex_rule")


def upgrade() -> None:
    with op.batch_alter_table("samples") as batch:
        batch.add_column(sa.Column("correct_flex", sa.Boolean(), nullable=True))
        batch.add_column(sa.Column("extracted_flex", sa.Text(), nullable=True))
        batch.add_column(sa.Column("flex_rule", sa.String(32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("samples") as batch:
        for name in reversed(COLUMNS):
            batch.drop_column(name)
