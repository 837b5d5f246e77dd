"""Benchmark, chatter: what members talking in a server costs the bot, which takes no part.

A bot sits in servers whose members mostly chat. The gateway sends it only the events of
the intents it asked for (bot/client.py); an event it receives is parsed on its event loop
whether or not anything uses it. Here simulated members send ``--messages`` messages in the
bot's channel (tests/harness.py's bot: real cogs, queue, database, worker; simcord drops the
events a real gateway would not send). For the run: the bot process's CPU per message and
the wall time until every message was handled. The CPU includes the simulated Discord's
handling of each send, in-process here: what a bot that receives none of the messages still
shows. Run it at two commits to compare their intents.

    python -m bench.chatter --messages 600
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from bench import common, simulated

SENDERS = 5
SETTLE_EVERY = 50  # messages between two waits for the bot to be idle


def parse_args(argv: list[str] | None):  # type: ignore[no-untyped-def]
    parser = common.base_parser("chatter", __doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=600, help="messages sent (default %(default)s)")
    parser.add_argument("--model-cache", type=Path, help="where built models are kept (default: a temp folder)")
    common.add_worker_start(parser)
    return parser.parse_args(argv)


async def run(args) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    simulated.quiet_logs()
    work = simulated.workdir("sdbot-bench-chatter-")
    settings = simulated.tiny_settings(Path(work.name), model_cache=args.model_cache, worker_start=args.worker_start)
    harness = await simulated.started_harness(settings)
    try:
        members = [harness.member(f"member{i}") for i in range(SENDERS)]
        await harness.settle()
        cpu, wall = time.process_time(), time.perf_counter()
        for index in range(args.messages):
            await members[index % SENDERS].send(harness.channel, f"message {index}")
            if index % SETTLE_EVERY == SETTLE_EVERY - 1:
                await harness.settle()
        await harness.settle()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        intents = sorted(name for name, on in harness.bot.intents if on)
    finally:
        await harness.stop()
        work.cleanup()
    return {
        "intents": intents,
        "bot_process_cpu_ms_per_message": round(cpu * 1000 / args.messages, 4),
        "wall_seconds": round(wall, 3),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    results = asyncio.run(run(args))
    common.write_result("chatter", args.device, {"messages": args.messages, "senders": SENDERS}, results, args.output_dir)
    common.print_table(
        f"chatter: {args.messages} messages", ["intents", "CPU ms/message", "wall s"],
        [[len(results["intents"]), results["bot_process_cpu_ms_per_message"], results["wall_seconds"]]],
    )
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
