"""A checkpoint merge's options on its job row (JobKind.MERGE, /admin merge)"""

import sqlalchemy as sa

from migrations.steps import added_columns

revision = "0017_merge"
down_revision = "0016_describe"

upgrade, downgrade = added_columns({"jobs": [sa.Column("merge_json", sa.Text(), nullable=True)]})
