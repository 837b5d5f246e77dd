"""single image posts: where a U button posted an image alone, so it is posted once"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"


def upgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.add_column(sa.Column("posted_channel_id", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("posted_message_id", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.drop_column("posted_message_id")
        batch.drop_column("posted_channel_id")
