"""A server's own "Random number generator source" and ENSD (A1111's settings), between the
bot's config defaults and a member's own."""

import sqlalchemy as sa
from alembic import op

revision = "0014_server_noise"
down_revision = "0013"


def upgrade() -> None:
    with op.batch_alter_table("guild_policies") as batch:
        batch.add_column(sa.Column("default_rng", sa.String(length=10), nullable=True))
        batch.add_column(sa.Column("default_ensd", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("guild_policies") as batch:
        batch.drop_column("default_ensd")
        batch.drop_column("default_rng")
