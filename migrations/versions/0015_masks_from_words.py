"""Masks from words: a segment job's words, threshold and dilation (JobKind.SEGMENT)"""

import sqlalchemy as sa

from migrations.steps import added_columns

revision = "0015_masks_from_words"
down_revision = "0014_server_noise"

upgrade, downgrade = added_columns(
    {
        "jobs": [
            sa.Column("segment_words", sa.Text(), nullable=True),
            sa.Column("segment_threshold", sa.Float(), nullable=True),
            sa.Column("segment_dilation", sa.Integer(), nullable=True),
        ]
    }
)
