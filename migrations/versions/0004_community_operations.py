"""community operations: member settings, server policy, bans, the audit log, safety flags"""

import sqlalchemy as sa

from migrations.steps import added_columns, created_table, in_order

revision = "0004"
down_revision = "0003"

upgrade, downgrade = in_order(
    added_columns(
        {
            "users": [
                sa.Column("default_aspect", sa.String(length=20), nullable=True),
                sa.Column("default_style", sa.String(length=200), nullable=True),
                sa.Column("default_upscaler", sa.String(length=100), nullable=True),
                sa.Column("private_results", sa.Boolean(), nullable=False, server_default="0"),
            ],
            "jobs": [
                sa.Column("safety_check", sa.Boolean(), nullable=False, server_default="0"),
                sa.Column("private", sa.Boolean(), nullable=False, server_default="0"),
                sa.Column("removed_at", sa.DateTime(), nullable=True),
                sa.Column("removed_by", sa.BigInteger(), nullable=True),
            ],
            "images": [sa.Column("flagged", sa.Boolean(), nullable=False, server_default="0")],
        }
    ),
    created_table(
        "guild_policies",
        sa.Column("guild_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("channel_ids", sa.Text(), nullable=False, server_default="[]"),
        sa.Column("user_role_ids", sa.Text(), nullable=False, server_default="[]"),
        sa.Column("costly_role_ids", sa.Text(), nullable=False, server_default="[]"),
        sa.Column("images_per_day", sa.Integer(), nullable=True),
        sa.Column("cooldown_s", sa.Integer(), nullable=True),
        sa.Column("max_pending", sa.Integer(), nullable=True),
        sa.Column("flagged_action", sa.String(length=20), nullable=True),
        sa.Column("log_channel_id", sa.BigInteger(), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("guild_id", name=sa.schema.conv("pk_guild_policies")),
    ),
    created_table(
        "role_limits",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("guild_id", sa.BigInteger(), nullable=False),
        sa.Column("role_id", sa.BigInteger(), nullable=False),
        sa.Column("images_per_day", sa.Integer(), nullable=True),
        sa.Column("cooldown_s", sa.Integer(), nullable=True),
        sa.Column("max_pending", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=sa.schema.conv("pk_role_limits")),
        sa.UniqueConstraint("guild_id", "role_id", name=sa.schema.conv("uq_role_limits_guild_id")),
    ),
    created_table(
        "blocked_terms",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("guild_id", sa.BigInteger(), nullable=False),
        sa.Column("scope", sa.String(length=10), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("pattern", sa.Text(), nullable=False),
        sa.Column("created_by", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=sa.schema.conv("pk_blocked_terms")),
        sa.UniqueConstraint("guild_id", "scope", "kind", "pattern", name=sa.schema.conv("uq_blocked_terms_guild_id")),
        indexes={sa.schema.conv("ix_blocked_terms_guild_id"): ["guild_id"]},
    ),
    created_table(
        "bans",
        sa.Column("guild_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("user_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("banned_by", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("guild_id", "user_id", name=sa.schema.conv("pk_bans")),
    ),
    created_table(
        "audit_log",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("guild_id", sa.BigInteger(), nullable=True),
        sa.Column("channel_id", sa.BigInteger(), nullable=True),
        sa.Column("actor_id", sa.BigInteger(), nullable=False),
        sa.Column("action", sa.String(length=40), nullable=False),
        sa.Column("target_user_id", sa.BigInteger(), nullable=True),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("details", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=sa.schema.conv("pk_audit_log")),
        indexes={
        "ix_audit_log_guild_id_created_at": ["guild_id", "created_at"],
        "ix_audit_log_guild_id_target_user_id": ["guild_id", "target_user_id"],
        },
    ),
)
