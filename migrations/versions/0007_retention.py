"""retention: when a job's image files expired, and indexes for the daily retention passes"""

import sqlalchemy as sa
from alembic import op

from migrations.steps import added_columns

revision = "0007"
down_revision = "0006"

add_job_column, drop_job_column = added_columns({"jobs": [sa.Column("files_expired_at", sa.DateTime(), nullable=True)]})


def upgrade() -> None:
    add_job_column()
    # The daily passes read old rows by age: without these, each would scan the whole table.
    op.create_index("ix_jobs_finished_at", "jobs", ["finished_at"])
    op.create_index("ix_audit_log_created_at", "audit_log", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_audit_log_created_at", table_name="audit_log")
    op.drop_index("ix_jobs_finished_at", table_name="jobs")
    drop_job_column()
