"""The benchmark suite still runs: bench.pipeline's and bench.load's cheapest configurations, and their JSON.

Benchmarks are not tests (their figures are never asserted); this only keeps bench/ from
rotting when the inference code it drives changes.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import time

import pytest

from bench import (
    batching, big_database, bot_overhead, chatter, common, compile_cache, garbage, load, model_switch, pipeline, previews,
    simulated, worker_stream, workers,
)
from bot.policy.store import Limits

# The benchmarks that start workers fork them from this process's forkserver, which has
# imported torch once (the bot tests' workers come from it too), instead of spawning each.
FORKSERVER = ("--worker-start", "forkserver")


@pytest.fixture(scope="module")
def bench_model_cache(tmp_path_factory):
    """One --model-cache folder for the module: the first benchmark builds each model into it
    (bench.models' cache), the others reuse it, as repeated benchmark runs do."""
    return tmp_path_factory.mktemp("bench-models")


def test_pipeline_benchmark_runs_and_writes_its_json(tmp_path, bench_model_cache):
    results = pipeline.main([
        "--model", "tiny", "--steps", "1", "--batches", "1", "--repeats", "1", "--ablate",
        "--model-cache", str(bench_model_cache), "--output-dir", str(tmp_path / "results"),
    ])

    document = json.loads((tmp_path / "results" / "pipeline-cpu.json").read_text())
    assert document["settings"]["paths"] == [*pipeline.PATHS, pipeline.ABLATION_PATH]
    assert document["benchmark"] == "pipeline" and document["device"] == "cpu"
    assert {"cpu", "cpus_usable", "ram_gib"} <= set(document["machine"])
    assert document["machine"]["python_reference_ms"] > 0
    assert {"python", "torch", "diffusers", "discord.py", "sdbot"} <= set(document["versions"])
    assert document["settings"]["model"] == "tiny" and document["settings"]["batches"] == [1]
    assert document["results"] == json.loads(json.dumps(results))
    for entry in document["results"]["batches"].values():
        for path in document["settings"]["paths"]:
            assert entry[path]["seconds"]["n"] == 1
            assert entry[path]["images_per_second"] > 0 and entry[path]["peak_memory_mib"] > 0
        assert entry["worker_generate_speedup_vs_plain"] > 0
    # The worker runs A1111's sampler, the plain call diffusers' scheduler: only reported.
    assert document["results"]["batch1_max_pixel_difference"] >= 0
    # On the CPU no fast-path option applies, so the unaccelerated copy makes the worker's image.
    assert document["results"][f"batch1_max_pixel_difference_{pipeline.ABLATION_PATH}"] <= 2
    assert "load:tiny" in document["results"]["startup_seconds"]


def test_a_variant_run_is_written_beside_the_default_one(tmp_path, bench_model_cache):
    """--compile and --low-memory reach the worker's settings and get a JSON of their own, so
    the GPU's default and compiled figures can both be committed. (On the CPU the worker
    ignores torch_compile; low-memory slicing runs here and gives the same image.)"""
    results = pipeline.main([
        "--model", "tiny", "--steps", "1", "--batches", "1", "--repeats", "1", "--low-memory", "slicing",
        "--ablate", "--model-cache", str(bench_model_cache), "--output-dir", str(tmp_path / "results"),
    ])
    assert [p.name for p in (tmp_path / "results").iterdir()] == ["pipeline_low_memory-cpu.json"]
    document = json.loads((tmp_path / "results" / "pipeline_low_memory-cpu.json").read_text())
    assert document["settings"]["low_memory"] == "slicing" and document["settings"]["torch_compile"] == "off"
    # The sliced worker's image against the copy with no fast-path or low-memory option.
    assert results[f"batch1_max_pixel_difference_{pipeline.ABLATION_PATH}"] <= 2
    args = pipeline.parse_args(["--compile", "default", "--low-memory", "slicing"])
    assert pipeline.result_name(args) == "pipeline_compile"


def test_the_compile_cache_benchmark_times_a_start_in_a_process_of_its_own(tmp_path, bench_model_cache):
    """One start, the uncompiled one (compiling the model for real takes a minute here):
    the child process warms the model up and the parent reads back what it measured."""
    args = compile_cache.parse_args(["--model-cache", str(bench_model_cache)])
    assert (args.model, args.size, args.dtype, args.mode) == ("tiny", 64, "float32", "default")
    measured = compile_cache.start(args, "uncompiled", tmp_path / "cache")
    assert measured["first_run_seconds"] > 0 and measured["run_seconds"] > 0
    assert measured["compile_seconds"] is None and measured["process_seconds"] > measured["first_run_seconds"]
    assert not (tmp_path / "cache").exists()  # nothing compiled, nothing cached


def test_the_workers_benchmark_runs_separate_workers_and_writes_its_json(tmp_path, bench_model_cache):
    """bench.workers at its cheapest: one `sdbot worker` process on SQLite, one round of jobs."""
    results = workers.main([
        "--workers", "1", "--jobs", "1", "--backend", "sqlite",
        "--model-cache", str(bench_model_cache), "--output-dir", str(tmp_path / "results"),
    ])
    document = json.loads((tmp_path / "results" / "workers-cpu.json").read_text())
    assert document["results"] == json.loads(json.dumps(results))
    [run] = results["runs"]
    assert run["completed"] == run["jobs"] == workers.MEMBERS and run["jobs_by_worker"] == {"w0": workers.MEMBERS}
    assert run["jobs_per_second"] > 0 and run["speedup_per_worker_of_first"] == 1.0


def test_the_worker_stream_benchmark_feeds_both_workers_and_writes_its_json(tmp_path, bench_model_cache):
    results = worker_stream.main([
        "--model", "tiny", "--steps", "1", "--jobs", "2", "--images-per-job", "2", "--repeats", "1", *FORKSERVER,
        "--model-cache", str(bench_model_cache), "--output-dir", str(tmp_path / "results"),
    ])
    document = json.loads((tmp_path / "results" / "worker_stream-cpu.json").read_text())
    assert document["results"] == json.loads(json.dumps(results))
    for mode in worker_stream.MODES:
        figures = results["modes"][mode]
        assert figures["images_per_second"]["n"] == 1 and figures["images_per_second"]["p50"] > 0
        assert figures["last_step_to_free_ms"]["n"] == 2  # one per job of the stream
    assert results["background_speedup"] > 0


def test_the_batching_benchmark_runs_each_members_job_both_ways_and_writes_its_json(tmp_path, bench_model_cache):
    """bench.batching: three members' jobs (two images each) one by one and as one pass, each
    job keeping its own images; the figures are not asserted, only that both paths ran."""
    results = batching.main([
        "--model", "tiny", "--steps", "1", "--jobs", "3", "--images-per-job", "2", "--repeats", "1",
        "--model-cache", str(bench_model_cache), "--output-dir", str(tmp_path / "results"),
    ])
    document = json.loads((tmp_path / "results" / "batching-cpu.json").read_text())
    assert document["benchmark"] == "batching" and document["results"] == json.loads(json.dumps(results))
    assert document["settings"]["max_batch_images"] == 6
    entry = results["jobs"]["3"]
    assert entry["images"] == 6
    for path in batching.PATHS:
        assert entry[path]["seconds"]["n"] == 1 and entry[path]["images_per_second"] > 0
    assert entry["batched_speedup"] > 0
    # Batched or alone, each job's images are its own (within float rounding).
    assert entry["max_pixel_difference"] <= 2


def test_the_previews_benchmark_times_each_method_against_no_preview(tmp_path, bench_model_cache):
    """bench.previews: a preview at every step with each method against none, TAESD loaded
    from the folder the benchmark built, and the full VAE timed alone for contrast."""
    results = previews.main([
        "--model", "tiny", "--steps", "2", "--images", "2", "--repeats", "1", "--alone", "2",
        "--model-cache", str(bench_model_cache), "--output-dir", str(tmp_path / "results"),
    ])
    document = json.loads((tmp_path / "results" / "previews-cpu.json").read_text())
    assert document["benchmark"] == "previews" and document["results"] == json.loads(json.dumps(results))
    assert (bench_model_cache / "taesd-tiny-v1" / "config.json").is_file()
    assert results["step_seconds"] > 0 and results["sampling_seconds"]["n"] == 1
    assert set(results["methods"]) == {*previews.METHODS, "full_vae"}
    for method in previews.METHODS:
        entry = results["methods"][method]
        assert entry["call_seconds"]["n"] == 1 and entry["measured_in_run_ms"] > 0
    for entry in results["methods"].values():
        assert entry["alone_ms"]["n"] == 2 and entry["alone_ms"]["p50"] > 0
        # As the worker spaces them, no preview takes over its budget of sampling.
        assert entry["worker_interval_s"] >= results["preview_interval_s"]
        assert entry["share_as_the_worker_runs"] <= results["budget_share"] + 1e-9


def test_the_model_switch_benchmark_switches_both_ways_under_both_policies(tmp_path, bench_model_cache):
    """bench.model_switch: with one model at a time every switch loads a model again; with a
    budget that holds both, only the second model's first use does."""
    results = model_switch.main([
        "--model", "tiny", "--steps", "1", "--repeats", "2",
        "--model-cache", str(bench_model_cache), "--output-dir", str(tmp_path / "results"),
    ])
    document = json.loads((tmp_path / "results" / "model_switch-cpu.json").read_text())
    assert document["benchmark"] == "model_switch" and document["results"] == json.loads(json.dumps(results))
    one, kept = results["modes"]["one_at_a_time"], results["modes"]["budget"]
    assert one["switch"]["n"] == kept["switch"]["n"] == 4 and one["job_after_switch"]["n"] == 4
    # The preload, the second model's first load, the first model back, then two per round.
    assert [load["model"] for load in one["loads"]] == ["first", "second", "first"] + ["second", "first"] * 2
    assert one["loads"][1]["evicted"] == ["first"] and one["loaded_at_end"] == ["first"]
    assert [load["model"] for load in kept["loads"]] == ["first", "second"]
    assert kept["loaded_at_end"] == ["second", "first"] and kept["loaded_mib"] > one["loaded_mib"]
    assert kept["loaded_mib"] <= results["budget_mb"]


def test_the_batching_benchmarks_members_differ_but_may_share_a_pass():
    from inference.batching import batch_key

    args = batching.parse_args(["--model", "tiny", "--images-per-job", "2"])
    requests = batching.requests_for(args, 8, first_job_id=10)
    assert [r.job_id for r in requests] == list(range(10, 18))
    assert len({r.prompt for r in requests}) == 8
    assert len({seed for r in requests for seed in r.seeds}) == 16
    assert len({batch_key(r) for r in requests}) == 1 and batch_key(requests[0]) is not None


def test_the_open_loop_load_benchmark_runs_and_loses_nothing(tmp_path, bench_model_cache):
    """bench.load's open loop (--every): bursts on a clock, not after each one settles; the
    bot still answers every interaction and delivers every job, in each member's order."""
    results = load.main([
        "--users", "3", "--jobs", "8", "--burst", "4", "--every", "0.5", "--max-seconds", "120", *FORKSERVER,
        "--model-cache", str(bench_model_cache), "--output-dir", str(tmp_path / "results"),
    ])
    assert [p.name for p in (tmp_path / "results").iterdir()] == ["load_open_loop-cpu.json"]
    document = json.loads((tmp_path / "results" / "load_open_loop-cpu.json").read_text())
    assert document["settings"]["every_s"] == 0.5 and document["results"] == json.loads(json.dumps(results))
    assert results["interactions_sent"] == 8 and results["jobs_by_status"] == {"completed": 8}
    assert results["acknowledgement_ms"]["n"] == 8 and results["answer_ms"]["n"] == 8
    assert results["lost"]["none_lost"], results["lost"]
    # What the loop ran, and how much of it was the simulated Discord's.
    assert results["loop_stalls"]["callbacks"] > 0 and results["loop_stalls"]["longest_ms"] > 0
    assert 0 < results["simulation_seconds"] < results["elapsed_seconds"]
    assert results["acknowledgement_less_simulation_ms"]["n"] == 8
    assert results["acknowledgement_less_simulation_ms"]["max"] <= results["acknowledgement_ms"]["max"]
    assert list(results["acknowledgement_p50_ms_by_place_in_burst"]) == ["1-10"]
    assert len(results["acknowledgement_max_ms_by_burst"]) == 2
    # A full collection at the end, timed with the simulated Discord's history and without it.
    at_end = results["garbage_collector"]["full_collection_at_end"]
    assert at_end["bot_alone"]["tracked_objects"] < at_end["with_simulation_history"]["tracked_objects"]
    assert at_end["bot_alone"]["ms"] > 0


def test_the_bot_overhead_benchmark_runs_and_takes_the_simulation_off(tmp_path, bench_model_cache):
    results = bot_overhead.main([
        "--repeats", "2", "--warmup", "0", "--steps", "1", *FORKSERVER,
        "--model-cache", str(bench_model_cache), "--output-dir", str(tmp_path / "results"),
    ])
    assert [p.name for p in (tmp_path / "results").iterdir()] == ["bot_overhead-cpu.json"]
    measured, overhead = results["measured_ms"], results["overhead_ms"]
    assert measured["to_upload"]["n"] == 2 and measured["to_upload"]["min"] > 0
    # The simulated Discord's time comes off, and only that: less, never more, never negative.
    assert 0 < measured["to_upload_less_simulation"]["max"] <= measured["to_upload"]["max"]
    assert overhead["bot_side_less_simulation"]["p50"] <= overhead["bot_side"]["p50"]


def test_the_chatter_benchmark_runs_with_the_bots_own_intents(tmp_path, bench_model_cache):
    results = chatter.main([
        "--messages", "20", *FORKSERVER, "--model-cache", str(bench_model_cache), "--output-dir", str(tmp_path / "results"),
    ])
    assert json.loads((tmp_path / "results" / "chatter-cpu.json").read_text())["results"] == results
    # The gateway sends the bot its servers' events only: members' messages never reach it.
    assert results["intents"] == ["guilds"] and results["bot_process_cpu_ms_per_message"] > 0


def test_a_benchmarks_quiet_logs_last_only_as_long_as_its_run():
    """A benchmark run inside the test session must not leave the bot's loggers at WARNING
    for the tests after it (their INFO records would vanish)."""
    loggers = [logging.getLogger(name) for name in simulated.QUIETED_LOGGERS]
    levels = [logger.level for logger in loggers]

    async def run() -> None:
        simulated.quiet_logs()
        assert all(logger.level == logging.WARNING for logger in loggers)

    asyncio.run(run())
    assert [logger.level for logger in loggers] == levels


def test_percentiles_interpolate_between_ranks():
    assert common.percentile([4.0, 1.0, 3.0, 2.0], 0.5) == 2.5
    assert common.percentile([1.0, 2.0, 3.0, 4.0, 5.0], 0.99) == 4.96
    stats = common.summary([0.010, 0.020, 0.030])
    assert (stats["n"], stats["min"], stats["p50"], stats["max"]) == (3, 0.010, 0.020, 0.030)
    assert common.scaled(stats, 1000)["p50"] == 20.0


async def test_the_callback_timer_names_what_blocked_the_loop():
    """A step that blocks the loop 60 ms is one slow callback, named by its coroutine; the
    short ones around it only count."""
    timer = simulated.CallbackTimer(slow_s=0.05)

    async def blocks() -> None:
        await asyncio.sleep(0)
        time.sleep(0.06)

    timer.install()
    try:
        await asyncio.gather(blocks(), asyncio.sleep(0.01))
    finally:
        timer.uninstall()
    report = timer.report()
    assert report["callbacks"] >= 3 and report["over_50ms"] == 1 and 60 <= report["longest_ms"] < 1000
    assert report["slowest"][0]["callback"].startswith("task test_the_callback_timer_names_what_blocked_the_loop.<locals>.blocks")
    assert asyncio.events.Handle._run.__name__ == "_run"  # uninstalled


class SleepingCollector:
    """Stands in for load.CollectorPauses, whose real pauses are a few ms, too short to test:
    ``seconds`` sums its pauses, and ``collect`` blocks the way a full collection would."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def collect(self, seconds: float) -> None:
        started = time.perf_counter()
        time.sleep(seconds)
        self.seconds += time.perf_counter() - started


async def callback_report(collector: SleepingCollector, *steps) -> dict:  # type: ignore[no-untyped-def]
    """CallbackTimer's report of running ``steps`` (coroutine functions), scheduled in order."""
    timer = simulated.CallbackTimer(slow_s=0.05, collector=collector)
    timer.install()
    try:
        await asyncio.gather(*(step() for step in steps))
    finally:
        timer.uninstall()
    return timer.report()


async def test_the_callback_timer_takes_off_the_garbage_collections_inside_a_callback():
    """A callback blocked 60 ms by a collection is slow, but not the bot's own stall; one that
    blocks 60 ms by itself is both."""
    collector = SleepingCollector()

    async def collected() -> None:
        await asyncio.sleep(0)
        collector.collect(0.06)  # as a full collection would, inside this step

    async def blocks_by_itself() -> None:
        await asyncio.sleep(0)
        time.sleep(0.06)

    report = await callback_report(collector, collected, blocks_by_itself)
    assert report["over_50ms"] == 2 and report["over_50ms_less_collections"] == 1
    assert 60 <= report["longest_less_collections_ms"] < report["longest_ms"] + 1
    by_name = {entry["callback"].split(".<locals>.")[-1].split(",")[0]: entry for entry in report["slowest"]}
    assert by_name["collected"]["of_it_in_collections_ms"] >= 60
    assert by_name["blocks_by_itself"]["of_it_in_collections_ms"] == 0


async def test_a_short_callback_mostly_collecting_does_not_lower_the_longest_stall():
    """The longest less collections is a maximum: a 10 ms stall of the bot's own stays the
    longest when a later 40 ms callback spent 35 ms of it collecting."""
    collector = SleepingCollector()

    async def own_stall() -> None:
        await asyncio.sleep(0)
        time.sleep(0.01)

    async def mostly_collected() -> None:
        await asyncio.sleep(0)
        time.sleep(0.005)
        collector.collect(0.035)

    report = await callback_report(collector, own_stall, mostly_collected)
    assert report["over_50ms"] == 0 and report["longest_ms"] >= 40
    assert 10 <= report["longest_less_collections_ms"] < 35


def test_the_collector_pauses_sum_what_the_timer_takes_off():
    pauses = load.CollectorPauses()
    pauses.start()
    try:
        gc.collect()
        gc.collect(0)
    finally:
        pauses.stop()
    every = [pause for generation in pauses.pauses.values() for pause in generation]
    assert len(every) >= 2 and pauses.seconds == sum(every) > 0
    assert len(pauses.full_collections) >= 1


def test_simulation_time_leaves_the_bots_own_parsing_on_the_bots_clock(monkeypatch):
    """Seconds inside the simulation are taken off the bot's clock, except discord.py's parse
    of what it delivers, which a real Discord's events cost the bot too. (A clock that moves
    only when told, so the arithmetic is exact.)"""
    now = [100.0]
    monkeypatch.setattr(simulated.time, "perf_counter", lambda: now[0])

    def parse_taking(seconds: float):  # type: ignore[no-untyped-def]
        def parse(data: dict) -> None:
            now[0] += seconds
        return parse

    simulation = simulated.SimulationTime()
    started = simulation.bot_clock()
    now[0] += 1.0  # the bot's own work
    simulation.begin()
    now[0] += 2.0  # the simulation's
    simulation._bots_own(parse_taking(4.0))({})  # the bot's, inside the simulation
    simulation.begin()  # nested: counted once
    now[0] += 8.0
    assert simulation.bot_clock() - started == 5.0  # mid-way, the running part is off too
    simulation.end()
    simulation.end()
    now[0] += 16.0  # the bot's again
    assert simulation.total == 10.0
    assert simulation.bot_clock() - started == 21.0


def test_the_garbage_benchmark_keeps_what_a_full_collection_frees_and_names_its_owner():
    """bench.garbage's collector hook: a cycle made on purpose is kept, once, and owned by
    "other"; an object of the bot's tied into it makes the component the bot's."""
    class Node:
        pass

    saved = garbage.SavedGarbage()
    gc.collect()
    gc.callbacks.append(saved)
    try:
        first, second = Node(), Node()
        first.other, second.other = second, first  # a cycle only the collector frees
        del first, second
        gc.collect()
        gc.collect()  # finds the kept cycle again: counted once
    finally:
        gc.callbacks.remove(saved)
        gc.set_debug(0)
    nodes = [o for o in saved.objects if isinstance(o, Node)]
    assert len(nodes) == 2 and saved.freed_by_collection[1] == 0
    assert [garbage.owner_of(c) for c in garbage.components(nodes)] == ["other"]
    assert garbage.owner_of([*nodes, Limits.__new__(Limits)]) == "the bot"


def test_the_garbage_benchmark_runs_the_load_and_attributes_everything_it_freed(tmp_path, bench_model_cache):
    results = garbage.main([
        "--users", "2", "--jobs", "4", "--burst", "2", "--max-seconds", "120", *FORKSERVER,
        "--model-cache", str(bench_model_cache), "--output-dir", str(tmp_path / "results"),
    ])
    document = json.loads((tmp_path / "results" / "garbage-cpu.json").read_text())
    assert document["results"] == json.loads(json.dumps(results))
    assert results["jobs_by_status"] == {"completed": 4} and results["none_lost"]
    assert sum(entry["objects"] for entry in results["by_owner"].values()) == results["freed_objects"]
    assert sum(results["full_collections_freed_objects"]) + results["freed_after_the_run"] == results["freed_objects"]


def test_the_big_database_benchmark_runs_at_a_tiny_size(tmp_path):
    results = big_database.main([
        "--jobs", "300", "--members", "20", "--pending", "10", "--repeats", "2",
        "--output-dir", str(tmp_path / "results"),
    ])
    document = json.loads((tmp_path / "results" / "big_database-cpu.json").read_text())
    assert document["results"]["filled"]["jobs"] == 300 and document["results"]["filled"]["images"] > 0
    for run in ("before", "after"):
        assert {"claim_ms", "entry_ms", "queue_ms", "history_first_ms", "history_last_ms", "show_ms", "audit_ms"} <= set(results[run])
        assert results[run]["claim_ms"]["n"] >= 2 and results[run]["startup_seconds"]["n"] == 3
    # A year of entries, kept for 335 days: the prune deletes about a month's, with claims beside it.
    pruned = results["retention"]
    assert 0 < pruned["deleted"] < document["results"]["filled"]["audit"] and pruned["claim_during_prune_ms"]["n"] >= 1
