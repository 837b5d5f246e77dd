"""VAE and clip skip: on each job (what it ran with) and as a member's defaults"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("vae", sa.String(length=255), nullable=False, server_default=""))
        batch.add_column(sa.Column("clip_skip", sa.Integer(), nullable=False, server_default="1"))
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("default_vae", sa.String(length=255), nullable=True))
        batch.add_column(sa.Column("default_clip_skip", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("default_clip_skip")
        batch.drop_column("default_vae")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("clip_skip")
        batch.drop_column("vae")
