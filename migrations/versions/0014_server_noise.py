"""A server's own "Random number generator source" and ENSD (A1111's settings), between the
bot's config defaults and a member's own."""

import sqlalchemy as sa

from migrations.steps import added_columns

revision = "0014_server_noise"
down_revision = "0013"

upgrade, downgrade = added_columns(
    {
        "guild_policies": [
            sa.Column("default_rng", sa.String(length=10), nullable=True),
            sa.Column("default_ensd", sa.BigInteger(), nullable=True),
        ]
    }
)
