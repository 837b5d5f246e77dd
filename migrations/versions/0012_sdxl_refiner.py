"""sdxl refiner: a job's refiner model and the fraction of the denoising after which it takes
over, and a member's default refiner"""

import sqlalchemy as sa

from migrations.steps import added_columns

revision = "0012"
down_revision = "0011"

upgrade, downgrade = added_columns(
    {
        "jobs": [
            sa.Column("refiner", sa.String(length=200), nullable=True),
            sa.Column("refiner_switch_at", sa.Float(), nullable=True),
        ],
        "users": [sa.Column("default_refiner", sa.String(length=200), nullable=True)],
    }
)
