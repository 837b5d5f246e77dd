"""server cost caps: a server's own caps on one job's GPU time and a member's waiting jobs'"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"

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
