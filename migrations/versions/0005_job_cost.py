"""job cost: each job's GPU time in units (bot.jobs.cost), and the index that sums it per member"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"

# bot.jobs.cost.job_cost in SQL, for the rows that predate the column: every image at the
# job's own steps (a plot's per-cell steps are not read here), img2img at the steps its
# strength runs times its loopback passes, the hires pass at its size and steps, an upscale by
# the pixels it makes. 262144 is 512x512; 20 steps make a unit.
_BACKFILL = """
UPDATE jobs SET cost = CASE
    WHEN kind = 'upscale' THEN width * height / 262144.0 * 0.25
    ELSE count * (
        width * height / 262144.0 / 20.0 * CASE
            WHEN init_image_path IS NOT NULL AND denoising_strength IS NOT NULL THEN
                CASE WHEN steps * denoising_strength < 1 THEN 1 ELSE CAST(steps * denoising_strength AS INTEGER) END
                * COALESCE(loopback_count, 1)
            ELSE steps
        END
        + CASE
            WHEN hires_scale > 1 THEN
                (width * hires_scale) * (height * hires_scale) / 262144.0
                * COALESCE(NULLIF(hires_steps, 0), steps) / 20.0
            ELSE 0
        END
    )
END
"""


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("cost", sa.Float(), nullable=False, server_default="0"))
    op.execute(_BACKFILL)
    op.create_index("ix_jobs_user_id_started_at_cost", "jobs", ["user_id", "started_at", "cost"])


def downgrade() -> None:
    op.drop_index("ix_jobs_user_id_started_at_cost", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("cost")
