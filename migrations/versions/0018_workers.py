"""Workers that run on their own (`sdbot worker`): a row per worker (its heartbeat, device,
models, current job), and on each job its owner, its lease token and its progress, so the bot
learns of a remote job's progress from the row."""

import sqlalchemy as sa

from migrations.steps import added_columns, created_table, in_order

revision = "0018_workers"
down_revision = "0017_merge"

upgrade, downgrade = in_order(
    created_table(
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
        sa.PrimaryKeyConstraint("id", name=sa.schema.conv("pk_workers")),
        sa.UniqueConstraint("name", name=sa.schema.conv("uq_workers_name")),
    ),
    added_columns(
        {
            "jobs": [
                sa.Column("worker_name", sa.String(length=100), nullable=True),
                sa.Column("lease_token", sa.String(length=32), nullable=True),
                sa.Column("progress_step", sa.Integer(), nullable=True),
                sa.Column("progress_total", sa.Integer(), nullable=True),
                sa.Column("progress_preview", sa.LargeBinary(), nullable=True),
            ]
        }
    ),
)
