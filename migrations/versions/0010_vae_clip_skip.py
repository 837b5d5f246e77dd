"""VAE and clip skip: on each job (what it ran with) and as a member's defaults"""

import sqlalchemy as sa

from migrations.steps import added_columns

revision = "0010"
down_revision = "0009"

upgrade, downgrade = added_columns(
    {
        "jobs": [
            sa.Column("vae", sa.String(length=255), nullable=False, server_default=""),
            sa.Column("clip_skip", sa.Integer(), nullable=False, server_default="1"),
        ],
        "users": [
            sa.Column("default_vae", sa.String(length=255), nullable=True),
            sa.Column("default_clip_skip", sa.Integer(), nullable=True),
        ],
    }
)
