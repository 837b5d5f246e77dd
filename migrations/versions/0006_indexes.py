"""indexes for a large database: /history's pages, start-up's private jobs, /admin audit by member

Measured by bench/big_database.py (1,000,000 jobs): see bench/results/big_database-cpu.json.
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"


def upgrade() -> None:
    op.create_index("ix_jobs_user_id", "jobs", ["user_id"])
    op.create_index(
        "ix_jobs_private_id", "jobs", ["id"], sqlite_where=sa.text("private = 1"), postgresql_where=sa.text("private")
    )
    op.create_index(
        "ix_audit_log_guild_id_actor_id_target_user_id", "audit_log", ["guild_id", "actor_id", "target_user_id"]
    )


def downgrade() -> None:
    op.drop_index("ix_audit_log_guild_id_actor_id_target_user_id", table_name="audit_log")
    op.drop_index("ix_jobs_private_id", table_name="jobs")
    op.drop_index("ix_jobs_user_id", table_name="jobs")
