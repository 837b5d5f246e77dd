"""/describe: a describe job's interrogator and its prompt suggestions, and the interrogator a
server's admins picked"""

import sqlalchemy as sa
from alembic import op

revision = "0016_describe"
down_revision = "0015_masks_from_words"


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("interrogator", sa.String(length=20), nullable=True))
        batch.add_column(sa.Column("suggestions", sa.Text(), nullable=True))
    with op.batch_alter_table("guild_policies") as batch:
        batch.add_column(sa.Column("interrogator", sa.String(length=20), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("guild_policies") as batch:
        batch.drop_column("interrogator")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("suggestions")
        batch.drop_column("interrogator")
