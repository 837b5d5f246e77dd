"""prompt tools: seamless tiling and X/Y plots on jobs, and the styles table"""

import sqlalchemy as sa

from migrations.steps import added_columns, created_table, in_order

revision = "0003"
down_revision = "0002"

upgrade, downgrade = in_order(
    added_columns(
        {
            "jobs": [
                sa.Column("tiling", sa.Boolean(), nullable=False, server_default="0"),
                sa.Column("plot_json", sa.Text(), nullable=True),
            ]
        }
    ),
    created_table(
        "styles",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("guild_id", sa.BigInteger(), nullable=True),
        sa.Column("user_id", sa.BigInteger(), nullable=True),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("negative_prompt", sa.Text(), nullable=False),
        sa.Column("created_by", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=sa.schema.conv("pk_styles")),
        indexes={"ix_styles_guild_id_name": ["guild_id", "name"], "ix_styles_user_id_name": ["user_id", "name"]},
    ),
)
