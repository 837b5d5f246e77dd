"""model folders: cached sha256 of model files, and each server's rules for who uses a model"""

import sqlalchemy as sa

from migrations.steps import created_table, in_order

revision = "0011"
down_revision = "0010"


upgrade, downgrade = in_order(
    created_table(
        "file_hashes",
        sa.Column("path", sa.String(length=1024), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("mtime_ns", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("computed_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("path", name=sa.schema.conv("pk_file_hashes")),
        indexes={sa.schema.conv("ix_file_hashes_sha256"): ["sha256"]},
    ),
    created_table(
        "model_rules",
        sa.Column("guild_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("model", sa.String(length=300), nullable=False),
        sa.Column("hidden", sa.Boolean(), nullable=False, server_default="0"),
        sa.Column("age_restricted", sa.Boolean(), nullable=False, server_default="0"),
        sa.Column("role_ids", sa.Text(), nullable=False, server_default="[]"),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("guild_id", "model", name=sa.schema.conv("pk_model_rules")),
    ),
)
