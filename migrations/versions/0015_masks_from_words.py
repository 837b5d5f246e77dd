"""Masks from words: a segment job's words, threshold and dilation (JobKind.SEGMENT)"""

import sqlalchemy as sa
from alembic import op

revision = "0015_masks_from_words"
down_revision = "0014_server_noise"


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("segment_words", sa.Text(), nullable=True))
        batch.add_column(sa.Column("segment_threshold", sa.Float(), nullable=True))
        batch.add_column(sa.Column("segment_dilation", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("segment_dilation")
        batch.drop_column("segment_threshold")
        batch.drop_column("segment_words")
