"""Who and what answers privately, kept in memory: read before every acknowledgement.

Every command and button that queues jobs answers "thinking…" before anything else
(bot.interactions.acknowledge), and that answer must already be public or private: private when the
member turned private results on, or when the work is made from a private job. A database
read there would hold every acknowledgement of a burst of commands back behind the others'
reads (aiosqlite runs each statement on its connection's thread, and every hop waits its turn;
bench/load.py measures the acknowledgements).

The database stays the truth. The index is read from it once, at start-up (bot.client: otherwise
the first burst after a restart waits on that read before its first acknowledgement; on first use
where nothing loaded it), and only its owner
(bot.jobs.queue.JobQueue) changes it, after writing the rows: a private job when it is queued,
a member's setting when it is saved. Private jobs are a few integers each; a server would have
made terabytes of private images before their ids weighed on memory.
"""

from __future__ import annotations

import asyncio

from sqlalchemy import select

from db.models import Job, User
from db.session import Database


class PrivacyIndex:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._members: set[int] | None = None  # private_results on
        self._jobs: set[int] = set()  # Job.private
        self._loading = asyncio.Lock()

    async def answers_privately(self, user_id: int, parent_job_id: int | None) -> bool:
        """The member turned private results on, or the work is made from a private job."""
        if not self.loaded:
            await self.load()
        assert self._members is not None
        return user_id in self._members or (parent_job_id is not None and parent_job_id in self._jobs)

    @property
    def loaded(self) -> bool:
        return self._members is not None

    async def load(self) -> None:
        """Read the index from the rows, once."""
        async with self._loading:
            if self._members is not None:
                return
            async with self.db.session() as session:
                jobs = set(await session.scalars(select(Job.id).where(Job.private.is_(True))))
                members = set(await session.scalars(select(User.id).where(User.private_results.is_(True))))
            # Jobs queued while this read ran were noted in _jobs already: keep them.
            self._jobs |= jobs
            self._members = members

    def job_queued(self, job: Job) -> None:
        if job.private:
            self._jobs.add(job.id)

    def member_set(self, user_id: int, private_results: bool) -> None:
        if self._members is None:
            return  # read from the row on first use
        if private_results:
            self._members.add(user_id)
        else:
            self._members.discard(user_id)
