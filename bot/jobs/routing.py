"""Which jobs a separate worker (`sdbot worker`) may claim: those whose model it can load, and
of those, one whose model it has not loaded only when no free live worker has (JobQueue's
claim adds these conditions to its subquery)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import exists, literal, or_

from db.models import Worker


@dataclass(frozen=True)
class ClaimingWorker:
    """A worker started on its own (`sdbot worker`) claiming for itself: its claims carry its
    name and a fresh lease token, and take only jobs whose model it can load. A job whose model
    it has not loaded is left to a free live worker that has (bot.jobs.leases keeps their rows)."""

    name: str
    loadable: tuple[str, ...]
    loaded: tuple[str, ...] = ()
    lease_timeout_s: float = 30.0


def model_list(names: Collection[str]) -> str:
    """Worker.models_loaded / models_loadable: each name between two "|"."""
    return "".join(f"|{name}|" for name in sorted(names))


def live_since(worker: ClaimingWorker, now: datetime) -> datetime:
    """The oldest heartbeat of a worker still alive, as ``worker`` sees it (its lease timeout)."""
    return now - timedelta(seconds=worker.lease_timeout_s)


def routable(model: Any, worker: ClaimingWorker | None, alive_since: Any) -> tuple[Any, ...]:
    """What a separate worker may claim: a job whose model it can load, and, when it has not
    loaded that model, only if no other free live worker has (that one runs it without a load).
    ``model``: the waiting job's model column, as the claim's query names it; ``alive_since``:
    live_since(), or a bind parameter that will hold it."""
    if worker is None:
        return ()
    loaded_elsewhere = exists().where(
        Worker.name != worker.name,
        Worker.current_job_id.is_(None),
        Worker.stopped_at.is_(None),
        Worker.heartbeat_at >= alive_since,
        Worker.models_loaded.like(literal("%|").concat(model).concat("|%")),
    )
    return (model.in_(worker.loadable), or_(model.in_(worker.loaded), ~loaded_elsewhere))
