"""The "job queued" audit entries of a burst of commands: grouped (db/grouped.py, read from
git at GROUPED_COMMIT), one transaction per entry, or written in the job's own transaction
(what the bot does now).

Each of --burst members submits at once what /imagine writes: the job (JobQueue.enqueue),
its status message's id (set_message), then its "job queued" audit entry. The benchmark
times, per burst, how long each member waited for their job row (what the answer waits on),
for every write (the audit entry included), and the whole burst, on the real migrated SQLite
database and its driver; modes alternate burst by burst, so other load on the machine falls
on each alike.

    python -m bench.audit_inserts [--burst 50] [--bursts 10]
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import event, func, select

from bench import common
from bot.config import QueueSettings
from bot.jobs.params import JobParameters
from bot.jobs.queue import JobQueue, Requester
from db.migrate import upgrade_database
from db.models import AuditEntry, Job
from db.session import Database
from inference.common.protocol import JobKind

GROUPED_COMMIT = "3698801"  # the last commit with db/grouped.py
MODES = ("grouped", "own_transaction", "in_job_transaction")


async def _write_alone(db: Database, entry: AuditEntry) -> None:
    async with db.session() as session, session.begin():
        session.add(entry)


def _queued_entry(job: Job) -> AuditEntry:
    return AuditEntry(guild_id=1, actor_id=job.user_id, action="job.queued", job_id=job.id, details="benchmark")


async def _submit(queue: JobQueue, grouped: Any, mode: str, member: int) -> tuple[float, float]:
    """(seconds to the job row and its message id, seconds to the audit entry too)."""
    start = time.perf_counter()
    params = JobParameters(
        kind=JobKind.TXT2IMG, prompt=f"a lighthouse at dusk {member}", negative_prompt="", model="tiny",
        width=64, height=64, steps=4, cfg_scale=7.0, sampler="Euler a", count=1, seed=member,
    )
    requester = Requester(user_id=member, user_name=f"member{member}", channel_id=10)
    with_row = _queued_entry if mode == "in_job_transaction" else None
    job = await queue.enqueue(params, requester, with_row=with_row)
    await queue.set_message(job.id, 10, 1000 + job.id)
    answered = time.perf_counter() - start
    if mode == "grouped":
        await grouped.add(_queued_entry(job))
    elif mode == "own_transaction":
        await _write_alone(queue.db, _queued_entry(job))
    return answered, time.perf_counter() - start


async def run(burst: int, bursts: int) -> dict[str, Any]:
    samples: dict[str, dict[str, list[float]]] = {
        mode: {"job_row": [], "all_writes": [], "burst": [], "burst_cpu": []} for mode in MODES
    }
    commits: dict[str, int] = dict.fromkeys(MODES, 0)
    with tempfile.TemporaryDirectory(prefix="audit-inserts-") as folder:
        db = Database(f"sqlite+aiosqlite:///{Path(folder) / 'sdbot.sqlite3'}")
        await upgrade_database(db.engine)
        await db.open_pool()
        counted: list[int] = []
        event.listen(db.engine.sync_engine, "commit", lambda _connection: counted.append(1))
        queue = JobQueue(db, QueueSettings(max_pending_per_user=10_000, max_attempts=2))
        grouped = common.module_at_commit("db/grouped.py", GROUPED_COMMIT, "old_grouped").GroupedInserts(db.session)
        try:
            for round_number in range(bursts + 1):  # the first round of each mode warms up
                for mode in MODES:
                    start, start_cpu, start_commits = time.perf_counter(), time.process_time(), len(counted)
                    timings = await asyncio.gather(*(_submit(queue, grouped, mode, member) for member in range(burst)))
                    if round_number == 0:
                        continue
                    samples[mode]["burst"].append(time.perf_counter() - start)
                    # CPU time (every thread of the process): the work itself, which other
                    # processes on a busy machine stretch far less than the wall clock.
                    samples[mode]["burst_cpu"].append(time.process_time() - start_cpu)
                    commits[mode] += len(counted) - start_commits
                    samples[mode]["job_row"].extend(answered for answered, _ in timings)
                    samples[mode]["all_writes"].extend(total for _, total in timings)
            async with db.session() as session:
                entries = await session.scalar(select(func.count()).select_from(AuditEntry))
            assert entries == (bursts + 1) * len(MODES) * burst, entries  # one per job, whichever way
        finally:
            await db.close()
    return {
        mode: {
            **{name: common.scaled(common.summary(values), 1000, 2) for name, values in series.items()},
            "commits_per_burst": commits[mode] / bursts,
        }
        for mode, series in samples.items()
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = common.base_parser("audit_inserts", __doc__.splitlines()[0])
    parser.add_argument("--burst", type=int, default=50, help="members submitting at once (default %(default)s)")
    parser.add_argument("--bursts", type=int, default=10, help="timed bursts per mode (default %(default)s)")
    args = parser.parse_args(argv)
    load_average = common.load_average()
    results = asyncio.run(run(args.burst, args.bursts))
    settings = {
        "burst": args.burst, "bursts": args.bursts, "unit": "ms",
        "load_average_at_start": load_average,  # other processes on the machine slow both modes
    }
    common.write_result("audit_inserts", args.device, settings, results, args.output_dir)
    common.print_table(
        f"audit entries under a burst of {args.burst} (ms, {args.bursts} bursts per mode)",
        ["mode", "job_row p50", "job_row p99", "all_writes p50", "all_writes p99", "burst p50", "burst cpu p50", "commits"],
        [[mode, r["job_row"]["p50"], r["job_row"]["p99"], r["all_writes"]["p50"], r["all_writes"]["p99"], r["burst"]["p50"],
          r["burst_cpu"]["p50"], r["commits_per_burst"]] for mode, r in results.items()],
    )
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
