"""Workers that run on their own (`sdbot worker`): a row per worker (its heartbeat, device,
models, current job), and on each job its owner, its lease token and its progress, so the bot
learns of a remote job's progress from the row."""

import sqlalchemy as sa
from alembic import op

revision = "0018_workers"
down_revision = "0017_merge"


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
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("worker_name", sa.String(length=100), nullable=True))
        batch.add_column(sa.Column("lease_token", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("progress_step", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("progress_total", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("progress_preview", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("progress_preview")
        batch.drop_column("progress_total")
        batch.drop_column("progress_step")
        batch.drop_column("lease_token")
        batch.drop_column("worker_name")
    op.drop_table("workers")
