"""A1111's "Restore faces": each job's restorer, visibility and CodeFormer weight, a member's
defaults for them, and an image's note from the worker ("No faces were found...")"""

import sqlalchemy as sa

from migrations.steps import added_columns

revision = "0019_face_restoration"
down_revision = "0018_workers"

upgrade, downgrade = added_columns(
    {
        "jobs": [
            sa.Column("face_restorer", sa.String(length=20), nullable=True),
            sa.Column("face_visibility", sa.Float(), nullable=True),
            sa.Column("codeformer_weight", sa.Float(), nullable=True),
        ],
        "users": [
            sa.Column("default_face_restorer", sa.String(length=20), nullable=True),
            sa.Column("default_face_visibility", sa.Float(), nullable=True),
            sa.Column("default_codeformer_weight", sa.Float(), nullable=True),
        ],
        "images": [sa.Column("note", sa.Text(), nullable=True)],
    }
)
