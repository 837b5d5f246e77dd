"""Most revisions only add columns to existing tables: one declaration gives both directions.

    upgrade, downgrade = added_columns({"jobs": [sa.Column("merge_json", sa.Text(), nullable=True)]})

upgrade adds each table's columns in the order given, table by table; downgrade drops them in
exactly the reverse order. Both go through batch_alter_table, which SQLite needs for ALTER
TABLE (env.py sets render_as_batch; on PostgreSQL it is plain ALTER TABLE).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import sqlalchemy as sa
from alembic import op


def added_columns(tables: Mapping[str, Sequence[sa.Column]]) -> tuple[Callable[[], None], Callable[[], None]]:
    def upgrade() -> None:
        for table, columns in tables.items():
            with op.batch_alter_table(table) as batch:
                for column in columns:
                    batch.add_column(column)

    def downgrade() -> None:
        for table, columns in reversed(tables.items()):
            with op.batch_alter_table(table) as batch:
                for column in reversed(columns):
                    batch.drop_column(column.name)

    return upgrade, downgrade
