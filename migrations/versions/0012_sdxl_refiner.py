"""sdxl refiner: a job's refiner model and the fraction of the denoising after which it takes
over, and a member's default refiner"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("refiner", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("refiner_switch_at", sa.Float(), nullable=True))
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("default_refiner", sa.String(length=200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("default_refiner")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("refiner_switch_at")
        batch.drop_column("refiner")
