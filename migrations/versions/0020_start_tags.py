"""Each waiting job's start tag (its place in the fair order, bot.jobs.fairness), kept in its row
and indexed (the waiting jobs alone), so that a claim reads the first entry of an index instead of working out every
waiting job's tag"""

import sqlalchemy as sa
from alembic import op

from migrations.steps import added_columns, created_index, data_only, in_order

revision = "0020_start_tags"
down_revision = "0019_face_restoration"


WAITING = "status = 'pending'"


def _tag_waiting_jobs() -> None:
    # The cost each member waits with before each job. Their recent use is added by the first
    # claim after the upgrade (JobQueue retags every waiting job then), which knows the bot's
    # usage window; a migration does not.
    op.execute(
        "UPDATE jobs SET start_tag = (SELECT coalesce(sum(earlier.cost), 0) FROM jobs AS earlier"
        " WHERE earlier.user_id = jobs.user_id AND earlier.status = 'pending' AND earlier.id < jobs.id)"
        " WHERE status = 'pending'"
    )


# PostgreSQL: the jobs table is a queue, its rows changing status by the hundred a minute.
# Analyzed after every 1,000 changed rows (not 10% of a table of a million), the planner knows
# how many wait within a minute of a burst, and vacuumed as often, the claims' index stays
# small. (Each setting is a table storage parameter; RESET puts back the server's default.)
_QUEUE_TABLE = {
    "autovacuum_analyze_scale_factor": 0, "autovacuum_analyze_threshold": 1000,
    "autovacuum_vacuum_scale_factor": 0, "autovacuum_vacuum_threshold": 1000,
}


def _tune_autovacuum() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE jobs SET (" + ", ".join(f"{k} = {v}" for k, v in _QUEUE_TABLE.items()) + ")")


def _untune_autovacuum() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE jobs RESET (" + ", ".join(_QUEUE_TABLE) + ")")


upgrade, downgrade = in_order(
    (_tune_autovacuum, _untune_autovacuum),
    added_columns({"jobs": [sa.Column("start_tag", sa.Float(), server_default="0", nullable=False)]}),
    created_index(
        "ix_jobs_waiting_start_tag_id", "jobs", ["start_tag", "id"],
        sqlite_where=sa.text(WAITING), postgresql_where=sa.text(WAITING),
    ),
    data_only(_tag_waiting_jobs),
)
