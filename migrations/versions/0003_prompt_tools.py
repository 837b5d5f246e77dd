"""prompt tools: seamless tiling and X/Y plots on jobs, and the styles table"""

import sqlalchemy as sa
from alembic import op

from migrations.columns import added_columns

revision = "0003"
down_revision = "0002"

add_job_columns, drop_job_columns = added_columns(
    {
        "jobs": [
            sa.Column("tiling", sa.Boolean(), nullable=False, server_default="0"),
            sa.Column("plot_json", sa.Text(), nullable=True),
        ]
    }
)


def upgrade() -> None:
    add_job_columns()
    op.create_table(
        "styles",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("guild_id", sa.BigInteger(), nullable=True),
        sa.Column("user_id", sa.BigInteger(), nullable=True),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("negative_prompt", sa.Text(), nullable=False),
        sa.Column("created_by", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_styles")),
    )
    op.create_index("ix_styles_guild_id_name", "styles", ["guild_id", "name"])
    op.create_index("ix_styles_user_id_name", "styles", ["user_id", "name"])


def downgrade() -> None:
    op.drop_index("ix_styles_user_id_name", table_name="styles")
    op.drop_index("ix_styles_guild_id_name", table_name="styles")
    op.drop_table("styles")
    drop_job_columns()
