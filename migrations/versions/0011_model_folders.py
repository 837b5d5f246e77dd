"""model folders: cached sha256 of model files, and each server's rules for who uses a model"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"


def upgrade() -> None:
    op.create_table(
        "file_hashes",
        sa.Column("path", sa.String(length=1024), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("mtime_ns", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("computed_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("path", name=op.f("pk_file_hashes")),
    )
    op.create_index(op.f("ix_file_hashes_sha256"), "file_hashes", ["sha256"])
    op.create_table(
        "model_rules",
        sa.Column("guild_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("model", sa.String(length=300), nullable=False),
        sa.Column("hidden", sa.Boolean(), nullable=False, server_default="0"),
        sa.Column("age_restricted", sa.Boolean(), nullable=False, server_default="0"),
        sa.Column("role_ids", sa.Text(), nullable=False, server_default="[]"),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("guild_id", "model", name=op.f("pk_model_rules")),
    )


def downgrade() -> None:
    op.drop_table("model_rules")
    op.drop_index(op.f("ix_file_hashes_sha256"), table_name="file_hashes")
    op.drop_table("file_hashes")
