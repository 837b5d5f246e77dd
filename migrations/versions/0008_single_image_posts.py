"""single image posts: where a U button posted an image alone, so it is posted once"""

import sqlalchemy as sa

from migrations.steps import added_columns

revision = "0008"
down_revision = "0007"

upgrade, downgrade = added_columns(
    {
        "images": [
            sa.Column("posted_channel_id", sa.BigInteger(), nullable=True),
            sa.Column("posted_message_id", sa.BigInteger(), nullable=True),
        ]
    }
)
