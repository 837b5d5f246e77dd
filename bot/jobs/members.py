"""Members' rows (their defaults, their name), kept in memory: every generating command reads
its member's row before anything else (bot.actions.member_request), on the way to the claim.

The database stays the truth. Only the queue writes these rows (JobQueue.update_user, and the
row a member's first job, or a new name, makes in enqueue), and it forgets a member's copy
after each write, so the next read takes the row as written. A single bot process works on
a database at a time (bot.service.InstanceLock on SQLite, an advisory lock on PostgreSQL), and
separate workers never write members, so no other process changes a row under the copy.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING

from db.models import User

if TYPE_CHECKING:
    from db.session import Database

KEPT = 10_000  # members whose rows are kept, the most recently read


class MemberRows:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._rows: OrderedDict[int, User | None] = OrderedDict()  # None: no row yet
        self._writes = 0  # counted, to tell a read that a write raced it

    async def get(self, user_id: int) -> User | None:
        """The member's row (detached: read its columns, do not change them), or None."""
        if user_id in self._rows:
            self._rows.move_to_end(user_id)
            return self._rows[user_id]
        writes = self._writes
        async with self.db.session() as session:
            row = await session.get(User, user_id)
        if self._writes == writes:  # else a write came during the read: not kept
            self._rows[user_id] = row
            if len(self._rows) > KEPT:
                self._rows.popitem(last=False)
        return row

    def written(self, user_id: int) -> None:
        """The member's row was written (after the commit): read it again next time."""
        self._writes += 1
        self._rows.pop(user_id, None)
