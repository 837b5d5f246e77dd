"""server cost caps: a server's own caps on one job's GPU time and a member's waiting jobs'

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("guild_policies", "role_limits")


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("max_job_cost", sa.Integer(), nullable=True))
            batch.add_column(sa.Column("max_waiting_cost", sa.Integer(), nullable=True))


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("max_waiting_cost")
            batch.drop_column("max_job_cost")
