"""Waking other processes through the database: PostgreSQL's LISTEN/NOTIFY, or polling.

The rows are the record (a job's status, owner and progress); a notification only says "look
now", so one lost (a listener reconnecting) costs a poll interval, never a result. On
PostgreSQL a notification is sent on the channel JOBS_CHANNEL (a job changed; the payload is its
id) or WAKE_CHANNEL (a job was queued: free workers claim). SQLite has no such thing: there the
listener is a timer, and the separate workers on one machine poll the file.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import make_url

from db.session import Database

log = logging.getLogger(__name__)

JOBS_CHANNEL = "sdbot_jobs"
WAKE_CHANNEL = "sdbot_wake"


async def notify(db: Database, channel: str, payload: str = "") -> None:
    """Tell the listeners on ``channel`` (PostgreSQL); nothing on SQLite, whose listeners poll."""
    if db.dialect != "postgresql":
        return
    async with db.session() as session, session.begin():
        await session.execute(text("SELECT pg_notify(:channel, :payload)"), {"channel": channel, "payload": payload})


class Listener:
    """``await listener.wait(timeout)``: returns when a notification on one of the channels
    arrives, or after ``timeout`` seconds (the poll, and the safety net behind a notification
    lost while the connection was down). Listens on a raw asyncpg connection of its own: the
    pool's connections come and go, and a LISTEN lives as long as its connection."""

    def __init__(self, db: Database, *channels: str) -> None:
        self.db = db
        self.channels = channels
        self._woken = asyncio.Event()
        self._connection: Any = None

    async def open(self) -> None:
        if self.db.dialect != "postgresql":
            return
        import asyncpg  # PostgreSQL's driver, installed with the [postgresql] extra

        url = make_url(self.db.url).set(drivername="postgresql")
        self._connection = await asyncpg.connect(url.render_as_string(hide_password=False))
        for channel in self.channels:
            await self._connection.add_listener(channel, self._received)

    def _received(self, _connection: Any, _pid: int, _channel: str, _payload: str) -> None:
        self._woken.set()

    async def wait(self, timeout: float) -> None:
        try:
            async with asyncio.timeout(timeout):  # in this task: a harness may declare the wait
                await self._woken.wait()
        except TimeoutError:
            pass
        self._woken.clear()

    async def close(self) -> None:
        if self._connection is not None:
            try:
                await self._connection.close(timeout=5)
            except (OSError, asyncio.TimeoutError) as error:  # the server went first
                log.debug("closing the listener's connection failed: %s", error)
            self._connection = None
