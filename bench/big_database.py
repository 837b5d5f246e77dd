"""A large database stays fast: a year of a busy bot, and the queries every command runs on it.

Fills an SQLite file (the schema from the migrations, the rows by raw executemany in big
transactions) with ``--jobs`` jobs (default 1,000,000) of ``--members`` members (20,000; a few
make most of the jobs, as on a real server), about four images per completed job and one audit
entry per job, spread over a simulated year; ``--pending`` jobs wait and one runs. Then it
times the real code, ``--repeats`` times each (p50/p99 in ms):

- claim: JobQueue.claim_next (the fairest job by recent GPU use), each claim handed back after,
  untimed;
- entry: JobQueue.entry, a waiting job's place and ETA, which every new job's answer waits on;
- queue: /queue's reads (JobQueue.active_entries for one member, waiting_count);
- history_first, history_last: /history's first and last page of the heaviest member;
- show: JobQueue.get, /show's read of one job and its images;
- audit: /admin audit's query for one member in one server (as bot.cogs.admin runs it);
- startup: opening the database, the migrations' check, the privacy index and the recovery
  of rows left running (Dispatcher's), in seconds;
- retention: the daily audit prune (bot.policy.audit.prune_audit) of the entries older than
  ``--keep-audit-days``, its batches, and the claim timed over and over while it runs (the
  prune must never hold the writer for long). It deletes those entries from the file.

Each is measured with the indexes of migrations 0005/0006 and again with them dropped
("before"), and the previous scheduler's queries (every member's max(started_at)) are timed
on the same file for comparison.

    python -m bench.big_database --jobs 1000000
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, or_, select, text

from bench import common
from bot.config import QueueSettings
from bot.jobs.past_jobs import user_jobs_page
from bot.jobs.privacy import PrivacyIndex
from bot.jobs.queue import JobQueue
from bot.policy.audit import PRUNE_BATCH, prune_audit
from db.migrate import upgrade_database
from db.models import AuditEntry, Job, JobStatus
from db.session import Database

YEAR = timedelta(days=365)
CHUNK = 50_000
# The indexes the figures asked for (migrations 0005 and 0006), dropped for the "before" run.
NEW_INDEXES = {
    "ix_jobs_user_id_started_at_cost": "jobs (user_id, started_at, cost)",
    "ix_jobs_user_id": "jobs (user_id)",
    "ix_jobs_private_id": "jobs (id) WHERE private = 1",
    "ix_audit_log_guild_id_actor_id_target_user_id": "audit_log (guild_id, actor_id, target_user_id)",
}
# The previous scheduler read every member's whole history at each claim and each ETA.
PREVIOUS_CLAIM = text(
    "SELECT p.id FROM jobs p WHERE p.status = 'pending' ORDER BY "
    "(SELECT max(s.started_at) FROM jobs s WHERE s.user_id = p.user_id) IS NOT NULL, "
    "(SELECT max(s.started_at) FROM jobs s WHERE s.user_id = p.user_id), p.id LIMIT 2"
)
PREVIOUS_LAST_STARTED = text(
    "SELECT user_id, max(started_at) FROM jobs WHERE started_at IS NOT NULL GROUP BY user_id"
)


def parse_args(argv: list[str] | None):  # type: ignore[no-untyped-def]
    parser = common.base_parser("big_database", __doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1_000_000, help="jobs in all (default %(default)s)")
    parser.add_argument("--members", type=int, default=20_000, help="members (default %(default)s)")
    parser.add_argument("--guilds", type=int, default=20, help="servers (default %(default)s)")
    parser.add_argument("--pending", type=int, default=200, help="jobs waiting (default %(default)s)")
    parser.add_argument("--repeats", type=int, default=200, help="timings per query (default %(default)s)")
    parser.add_argument(
        "--database", type=Path,
        help="the SQLite file (default: a temp file, removed after); one already filled is measured again",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--keep-audit-days", type=int, default=335, help="the retention the prune applies (default %(default)s)"
    )
    return parser.parse_args(argv)


def _stamp(moment: datetime) -> str:
    """How SQLAlchemy's DateTime stores a naive UTC moment in SQLite (db.base.UTCDateTime)."""
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")


def _member_weights(members: int) -> list[float]:
    # A few members make most of the jobs: the heaviest about 1% of them.
    return [1.0 / (rank + 10) for rank in range(members)]


def fill(path: Path, args) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """Write the rows; the schema is already there (the migrations)."""
    rng = random.Random(args.seed)
    now = datetime.now(UTC).replace(tzinfo=None)
    start = now - YEAR
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA synchronous=OFF")
    connection.execute("PRAGMA cache_size=-400000")
    started_fill = time.perf_counter()
    member_ids = [10**17 + number for number in range(args.members)]
    connection.executemany(
        "INSERT INTO users (id, name, created_at, private_results) VALUES (?, ?, ?, ?)",
        [(member, f"member{number}", _stamp(start), int(number % 97 == 0)) for number, member in enumerate(member_ids)],
    )
    owners = rng.choices(member_ids, weights=_member_weights(args.members), k=args.jobs)
    guild_ids = [10**16 + number for number in range(args.guilds)]
    image_id, counts = 0, {"jobs": 0, "images": 0, "audit": 0}
    waiting_from = args.jobs - args.pending - 1  # the last ones wait; the one before them runs
    for chunk_start in range(0, args.jobs, CHUNK):
        jobs, images, audit = [], [], []
        for job_id in range(chunk_start + 1, min(args.jobs, chunk_start + CHUNK) + 1):
            index = job_id - 1
            created = start + YEAR * (index / args.jobs)
            member, guild = owners[index], guild_ids[owners[index] % args.guilds]
            count, steps, side = 4, rng.choice((20, 25, 30)), rng.choice((512, 640, 768))
            cost = count * side * side / (512 * 512) * steps / 20
            if index > waiting_from:
                status, started, finished = JobStatus.PENDING, None, None
            elif index == waiting_from:
                status, started, finished = JobStatus.RUNNING, created, None
            else:
                status = rng.choices((JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELED), (95, 3, 2))[0]
                started = created + timedelta(seconds=rng.uniform(1, 60))
                finished = started + timedelta(seconds=cost * 2)
            jobs.append((
                job_id, member, "txt2img", str(status), f"a lighthouse at dusk, number {job_id}", "", "sd15",
                side, side, steps, 7.0, "Euler a", count, rng.randrange(2**32), 0.0, 0, 0, int(job_id % 101 == 0),
                guild, 10**15 + guild % 1000, 1, cost, _stamp(created),
                _stamp(started) if started else None, _stamp(finished) if finished else None,
            ))
            if status == JobStatus.COMPLETED:
                for number in range(count):
                    image_id += 1
                    images.append((
                        image_id, job_id, number, 1000 + number, side, side, f"outputs/{job_id}/{number}.png",
                        f"a lighthouse at dusk\nSteps: {steps}, Sampler: Euler a, CFG scale: 7, Seed: {1000 + number}",
                        0, _stamp(finished),
                    ))
            if finished is not None:
                audit.append((guild, 10**15, 1, f"job.{status}", member, job_id, "", _stamp(finished)))
        connection.executemany(
            "INSERT INTO jobs (id, user_id, kind, status, prompt, negative_prompt, model, width, height, steps, "
            "cfg_scale, sampler, count, seed, subseed_strength, tiling, safety_check, private, guild_id, "
            "channel_id, attempts, cost, created_at, started_at, finished_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            jobs,
        )
        connection.executemany(
            "INSERT INTO images (id, job_id, \"index\", seed, width, height, path, infotext, flagged, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            images,
        )
        connection.executemany(
            "INSERT INTO audit_log (guild_id, actor_id, channel_id, action, target_user_id, job_id, details, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            audit,
        )
        connection.commit()
        counts["jobs"] += len(jobs)
        counts["images"] += len(images)
        counts["audit"] += len(audit)
    connection.execute("ANALYZE")
    connection.commit()
    connection.close()
    return {**counts, "members": args.members, "seconds": round(time.perf_counter() - started_fill, 1)}


def set_new_indexes(path: Path, present: bool) -> None:
    connection = sqlite3.connect(path)
    for name, definition in NEW_INDEXES.items():
        if present:
            table, rest = definition.split(" ", 1)
            columns, _, where = rest.partition(" WHERE ")
            connection.execute(f"CREATE INDEX IF NOT EXISTS {name} ON {table} {columns}" + (f" WHERE {where}" if where else ""))
        else:
            connection.execute(f"DROP INDEX IF EXISTS {name}")
    connection.execute("ANALYZE")
    connection.commit()
    connection.close()


async def _timings(repeats: int, call, undo=None) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """`call` timed `repeats` times; `undo(its result)`, untimed, after each (a claim's hand-back)."""
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = await call()
        seconds.append(time.perf_counter() - started)
        if undo is not None:
            await undo(result)
    return common.scaled(common.summary(seconds), 1000)


async def _start_up(url: str) -> float:
    """What the bot does with its database before it answers: open it, check the migrations,
    load the privacy index, recover the rows left running."""
    started = time.perf_counter()
    db = Database(url)
    try:
        await upgrade_database(db.engine)
        await PrivacyIndex(db).load()
        queue = JobQueue(db, QueueSettings())
        for job_id in await queue.running_job_ids():
            await queue.release_interrupted(job_id, "The bot restarted.")
        return time.perf_counter() - started
    finally:
        await db.close()


async def measure(path: Path, repeats: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    url = f"sqlite+aiosqlite:///{path}"
    startup = [await _start_up(url) for _ in range(3)]
    db = Database(url)
    queue = JobQueue(db, QueueSettings(max_pending_per_user=10**6))
    results: dict[str, Any] = {"startup_seconds": common.scaled(common.summary(startup), 1, 3)}
    try:
        async with db.session() as session:
            waiting = list(await session.scalars(select(Job.id).where(Job.status == JobStatus.PENDING)))
            heaviest, jobs_of_heaviest = (
                await session.execute(
                    select(Job.user_id, func.count(Job.id)).group_by(Job.user_id).order_by(func.count(Job.id).desc()).limit(1)
                )
            ).one()
            guild_of_heaviest = await session.scalar(select(Job.guild_id).where(Job.user_id == heaviest).limit(1))
            last_id = await session.scalar(select(func.max(Job.id)))
        waiting_member = (await queue.get(waiting[0])).user_id

        async def hand_back(job) -> None:  # type: ignore[no-untyped-def]
            await queue.return_to_queue(job.id)

        async def show_queue() -> None:
            await queue.active_entries(waiting_member)
            await queue.waiting_count()

        async def audit() -> None:
            # bot.cogs.admin's /admin audit, for one member in one server, page 1.
            conditions = [
                AuditEntry.guild_id == guild_of_heaviest,
                or_(AuditEntry.actor_id == heaviest, AuditEntry.target_user_id == heaviest),
            ]
            async with db.session() as session:
                await session.scalar(select(func.count(AuditEntry.id)).where(*conditions))
                list(await session.scalars(
                    select(AuditEntry).where(*conditions).order_by(AuditEntry.created_at.desc(), AuditEntry.id.desc())
                    .offset(0).limit(10)
                ))

        async def previous(query) -> None:  # type: ignore[no-untyped-def]
            async with db.session() as session:
                (await session.execute(query)).all()

        queries = {
            "claim": queue.claim_next,
            "entry": lambda: queue.entry(rng.choice(waiting)),
            "queue": show_queue,
            "history_first": lambda: user_jobs_page(db, heaviest, 0),
            "history_last": lambda: user_jobs_page(db, heaviest, 10**9),
            "show": lambda: queue.get(rng.randrange(1, last_id + 1)),
            "audit": audit,
            "previous_scheduler_claim": lambda: previous(PREVIOUS_CLAIM),
            "previous_scheduler_last_started": lambda: previous(PREVIOUS_LAST_STARTED),
        }
        for name, call in queries.items():
            # The previous scheduler's full scans take long at this size: fewer repeats.
            count = 3 if name.startswith("previous") else repeats
            results[f"{name}_ms"] = await _timings(count, call, hand_back if name == "claim" else None)
        results["heaviest_member_jobs"] = jobs_of_heaviest
    finally:
        await db.close()
    return results


async def measure_retention(path: Path, keep_days: int) -> dict[str, Any]:
    """The daily audit prune on the full log, with claims running beside it all the while."""
    db = Database(f"sqlite+aiosqlite:///{path}")
    queue = JobQueue(db, QueueSettings(max_pending_per_user=10**6))
    try:
        async with db.session() as session:
            newest = await session.scalar(select(func.max(AuditEntry.created_at)))
        started = time.perf_counter()
        pruning = asyncio.create_task(prune_audit(db, newest - timedelta(days=keep_days)))
        claims = []
        while not pruning.done():
            claimed_at = time.perf_counter()
            job = await queue.claim_next()
            if job is not None:
                await queue.return_to_queue(job.id)
            claims.append(time.perf_counter() - claimed_at)
        deleted = await pruning
        seconds = time.perf_counter() - started
    finally:
        await db.close()
    batches = max(1, -(-deleted // PRUNE_BATCH))
    return {
        "deleted": deleted, "batches": batches, "seconds": round(seconds, 2),
        "ms_per_batch": round(seconds * 1000 / batches, 1),
        "claim_during_prune_ms": common.scaled(common.summary(claims), 1000),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    folder = None
    if args.database is None:
        folder = tempfile.TemporaryDirectory(prefix="sdbot-big-")
        args.database = Path(folder.name) / "big.sqlite3"
    try:
        if args.database.exists():
            filled = _counted(args.database)
        else:
            asyncio.run(_migrate(Database(f"sqlite+aiosqlite:///{args.database}")))
            filled = fill(args.database, args)
        when = f"filled in {filled['seconds']} s" if "seconds" in filled else "filled by an earlier run"
        print(f"{filled['jobs']:,} jobs, {filled['images']:,} images, {when}")
        results: dict[str, Any] = {"filled": filled, "file_mib": round(common.mib(args.database.stat().st_size), 1)}
        set_new_indexes(args.database, present=False)
        # Without the indexes a claim reads whole histories: fewer repeats, the same p50.
        results["before"] = asyncio.run(measure(args.database, max(5, args.repeats // 10), args.seed))
        set_new_indexes(args.database, present=True)
        results["after"] = asyncio.run(measure(args.database, args.repeats, args.seed))
        results["retention"] = asyncio.run(measure_retention(args.database, args.keep_audit_days))
    finally:
        if folder is not None:
            folder.cleanup()
    settings = {key: (str(value) if isinstance(value, Path) else value) for key, value in vars(args).items()}
    settings.pop("output_dir")
    common.write_result("big_database", args.device, settings, results, args.output_dir)
    common.print_table(
        "p50 / p99 ms (startup: s)", ["query", "before p50", "before p99", "after p50", "after p99"],
        [
            [name.removesuffix("_ms"), stats["p50"], stats["p99"], results["after"][name]["p50"], results["after"][name]["p99"]]
            for name, stats in results["before"].items()
            if isinstance(stats, dict)
        ],
    )
    print(f"audit prune: {results['retention']}")
    return results


def _counted(path: Path) -> dict[str, Any]:
    connection = sqlite3.connect(path)
    try:
        tables = {"jobs": "jobs", "images": "images", "audit": "audit_log", "members": "users"}
        return {key: connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for key, table in tables.items()}
    finally:
        connection.close()


async def _migrate(database: Database) -> None:
    try:
        await upgrade_database(database.engine)
    finally:
        await database.close()


if __name__ == "__main__":
    main(sys.argv[1:])
