"""A1111's "Restore faces": each job's restorer, visibility and CodeFormer weight, a member's
defaults for them, and an image's note from the worker ("No faces were found...")"""

import sqlalchemy as sa
from alembic import op

revision = "0019_face_restoration"
down_revision = "0018_workers"


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("face_restorer", sa.String(length=20), nullable=True))
        batch.add_column(sa.Column("face_visibility", sa.Float(), nullable=True))
        batch.add_column(sa.Column("codeformer_weight", sa.Float(), nullable=True))
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("default_face_restorer", sa.String(length=20), nullable=True))
        batch.add_column(sa.Column("default_face_visibility", sa.Float(), nullable=True))
        batch.add_column(sa.Column("default_codeformer_weight", sa.Float(), nullable=True))
    with op.batch_alter_table("images") as batch:
        batch.add_column(sa.Column("note", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.drop_column("note")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("default_codeformer_weight")
        batch.drop_column("default_face_visibility")
        batch.drop_column("default_face_restorer")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("codeformer_weight")
        batch.drop_column("face_visibility")
        batch.drop_column("face_restorer")
