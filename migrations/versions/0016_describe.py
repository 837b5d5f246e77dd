"""/describe: a describe job's interrogator and its prompt suggestions, and the interrogator a
server's admins picked"""

import sqlalchemy as sa

from migrations.steps import added_columns

revision = "0016_describe"
down_revision = "0015_masks_from_words"

upgrade, downgrade = added_columns(
    {
        "jobs": [
            sa.Column("interrogator", sa.String(length=20), nullable=True),
            sa.Column("suggestions", sa.Text(), nullable=True),
        ],
        "guild_policies": [sa.Column("interrogator", sa.String(length=20), nullable=True)],
    }
)
