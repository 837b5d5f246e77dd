"""Revisions declared as steps: each declaration gives both directions, so a downgrade is never
a hand-kept mirror of its upgrade.

    upgrade, downgrade = in_order(
        added_columns({"jobs": [sa.Column("merge_json", sa.Text(), nullable=True)]}),
        created_table("styles", sa.Column(...), ..., indexes={"ix_styles_name": ["name"]}),
    )

A step is an (upgrade, downgrade) pair. added_columns adds each table's columns in the order
given, table by table, and drops them in exactly the reverse order, through batch_alter_table
(SQLite needs it for ALTER TABLE; on PostgreSQL it is plain ALTER TABLE). created_table creates
a table, then its indexes; its downgrade drops the indexes in reverse, then the table.
created_index adds one index to a table that exists. data_only fills in what a schema step
made room for. in_order
runs steps forward on upgrade and backward on downgrade.

The declarations run when Alembic loads the revision, before ``op`` works: a name that the
naming convention must leave alone is written sa.schema.conv("pk_styles"), which is what
op.f("pk_styles") returns.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

Step = tuple[Callable[[], None], Callable[[], None]]


def added_columns(tables: Mapping[str, Sequence[sa.Column]]) -> Step:
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


def created_table(name: str, *columns: Any, indexes: Mapping[str, Sequence[str]] | None = None) -> Step:
    """``columns``: create_table's columns and constraints; ``indexes``: index name -> its columns."""
    indexes = indexes or {}

    def upgrade() -> None:
        op.create_table(name, *columns)
        for index, on in indexes.items():
            op.create_index(index, name, list(on))

    def downgrade() -> None:
        for index in reversed(indexes):
            op.drop_index(index, table_name=name)
        op.drop_table(name)

    return upgrade, downgrade


def created_index(name: str, table: str, columns: Sequence[str], **options: Any) -> Step:
    """``options``: create_index's own (a partial index's sqlite_where and postgresql_where)."""

    def upgrade() -> None:
        op.create_index(name, table, list(columns), **options)

    def downgrade() -> None:
        op.drop_index(name, table_name=table)

    return upgrade, downgrade


def data_only(upgrade: Callable[[], None]) -> Step:
    """A step that fills in data its schema steps made room for; going down, the columns it
    filled are dropped by their own steps, so nothing is undone here."""
    return upgrade, lambda: None


def in_order(*steps: Step) -> Step:
    def upgrade() -> None:
        for step_up, _ in steps:
            step_up()

    def downgrade() -> None:
        for _, step_down in reversed(steps):
            step_down()

    return upgrade, downgrade
