"""A1111 1.10's sampling and noise on each job (schedule type, RNG source, ENSD, eta, seed
resize), a member's RNG source and ENSD, and old combined sampler names split as A1111 reads them"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"

# The only combined names the bot ever stored: its registry's "<sampler> Karras".
KARRAS_SUFFIX = " Karras"


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("schedule_type", sa.String(length=40), nullable=False, server_default="Automatic"))
        batch.add_column(sa.Column("rng", sa.String(length=10), nullable=False, server_default="GPU"))
        batch.add_column(sa.Column("eta_noise_seed_delta", sa.BigInteger(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("eta", sa.Float(), nullable=True))
        batch.add_column(sa.Column("seed_resize_from_width", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("seed_resize_from_height", sa.Integer(), nullable=True))
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("default_rng", sa.String(length=10), nullable=True))
        batch.add_column(sa.Column("default_ensd", sa.BigInteger(), nullable=True))
    # A rerun of an old job runs what it ran: "DPM++ 2M Karras" is the sampler "DPM++ 2M" with
    # the schedule type Karras. (A member's default stays combined: it is read as A1111 reads it.)
    op.execute(
        sa.text(
            "UPDATE jobs SET schedule_type = 'Karras', sampler = substr(sampler, 1, length(sampler) - :cut) "
            "WHERE sampler LIKE :pattern"
        ).bindparams(cut=len(KARRAS_SUFFIX), pattern="%" + KARRAS_SUFFIX)
    )


def downgrade() -> None:
    op.execute(
        sa.text("UPDATE jobs SET sampler = sampler || :suffix WHERE schedule_type = 'Karras'").bindparams(
            suffix=KARRAS_SUFFIX
        )
    )
    with op.batch_alter_table("users") as batch:
        batch.drop_column("default_ensd")
        batch.drop_column("default_rng")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("seed_resize_from_height")
        batch.drop_column("seed_resize_from_width")
        batch.drop_column("eta")
        batch.drop_column("eta_noise_seed_delta")
        batch.drop_column("rng")
        batch.drop_column("schedule_type")
