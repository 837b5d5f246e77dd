"""A checkpoint merge's options on its job row (JobKind.MERGE, /admin merge)"""

import sqlalchemy as sa
from alembic import op

revision = "0017_merge"
down_revision = "0016_describe"


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("merge_json", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("merge_json")
