"""Workers that run on their own (`sdbot worker`): a row per worker (its heartbeat, device,
models, current job), and on each job its owner, its lease token and its progress, so the bot
learns of a remote job's progress from the row."""

import sqlalchemy as sa
from alembic import op

from migrations.columns import added_columns

revision = "0018_workers"
down_revision = "0017_merge"

add_job_columns, drop_job_columns = added_columns(
    {
        "jobs": [
            sa.Column("worker_name", sa.String(length=100), nullable=True),
            sa.Column("lease_token", sa.String(length=32), nullable=True),
            sa.Column("progress_step", sa.Integer(), nullable=True),
            sa.Column("progress_total", sa.Integer(), nullable=True),
            sa.Column("progress_preview", sa.LargeBinary(), nullable=True),
        ]
    }
)


def upgrade() -> None:
    op.create_table(
        "workers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("device", sa.String(length=100), nullable=False),
        sa.Column("models_loaded", sa.Text(), nullable=False, server_default=""),
        sa.Column("models_loadable", sa.Text(), nullable=False, server_default=""),
        sa.Column("heartbeat_at", sa.DateTime(), nullable=True),
        sa.Column("current_job_id", sa.Integer(), nullable=True),
        sa.Column("jobs_done", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("stopped_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workers")),
        sa.UniqueConstraint("name", name=op.f("uq_workers_name")),
    )
    add_job_columns()


def downgrade() -> None:
    drop_job_columns()
    op.drop_table("workers")
