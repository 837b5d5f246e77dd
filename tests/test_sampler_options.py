"""A1111 1.10's samplers, schedule types and noise options as members give them: what is
accepted and kept on the job and its derived jobs, and every bad value refused privately with
nothing queued (issue 28)."""

from __future__ import annotations

import dataclasses
import pytest

from bot.config import ConfigError, LimitSettings, QueueSettings
from bot.errors import InvalidOption
from bot.jobs.params import GenerationOptions, resolve_parameters
from bot.jobs.job_rows import generate_request, plot_options
from bot.jobs.plot_params import xy_plot_parameters
from bot.jobs.queue import JobQueue
from db.models import Job, JobStatus
from inference.common.protocol import RNG_SOURCES
from tests.harness import private_answer
from tests.test_bot_settings import text_of
from tests.test_bot_admin import admin_member
from tests.test_bot_imagine import imagine_then_click
from tests.test_queue import ALICE, BOB, CAROL, params


def test_the_bots_rng_sources_are_the_workers():
    from inference import noise

    assert RNG_SOURCES == noise.RNG_SOURCES


BAD_SAMPLING_OPTIONS = [
    ({"sampler": "DPM++ 2N"}, "Unknown sampler `DPM++ 2N`. Did you mean `DPM++ 2M`"),
    ({"prompt": "a cat --schedule Karas"}, "Unknown schedule type `Karas`. Did you mean `Karras`?"),
    ({"sampler": "DDIM", "schedule_type": "Karras"}, "DDIM cannot use the schedule type Karras: it takes Automatic."),
    (
        {"sampler": "DPM++ 2M Karras", "schedule_type": "Exponential"},
        "The sampler `DPM++ 2M Karras` names the schedule type Karras but the schedule_type option is `Exponential`",
    ),
    ({"seed_resize_from": "1024x64"}, "seed_resize_from's width must be a multiple of 8 between 64 and 128, got 1024."),
    ({"seed_resize_from": "64x60"}, "seed_resize_from's height must be a multiple of 8 between 64 and 128, got 60."),
    ({"seed_resize_from": "big"}, "seed_resize_from takes WIDTHxHEIGHT, such as 512x512, got `big`."),
    ({"prompt": "a cat --eta 1.5", "sampler": "Euler a"}, "eta must be between 0 and 1, got 1.5."),
    ({"prompt": "a cat --eta 0.5", "sampler": "Euler"}, "Euler does not use eta; the samplers that do: DPM++ SDE"),
]


async def test_bad_sampling_options_are_refused_privately_and_queue_nothing(harness):
    alice = harness.member("alice")
    for options, expected in BAD_SAMPLING_OPTIONS:
        result = await alice.slash(harness.channel, "imagine", **{"prompt": "a cat", **options})
        assert expected in (text := private_answer(result)), (options, text)
        [error] = harness.expect_user_errors()
        assert expected in error.message, options
    assert await harness.job_count() == 0


async def test_a_combined_name_is_split_and_a_reroll_keeps_every_choice(harness):
    first, second = await imagine_then_click(
        harness, harness.member("alice"), "Reroll", prompt="a castle --scheduler exponential --eta 0.5", sampler="euler a",
        seed_resize_from="64x128",
    )
    assert first.status == JobStatus.COMPLETED, first.error
    for job in (first, second):
        assert (job.sampler, job.schedule_type, job.eta, job.seed_resize_from_width, job.seed_resize_from_height) == (
            "Euler a", "Exponential", 0.5, 64, 128,
        )
        assert (job.rng, job.eta_noise_seed_delta) == ("GPU", 0)  # the server's defaults
    request = generate_request(second)
    assert (request.sampler, request.schedule_type, request.eta, request.seed_resize_from) == (
        "Euler a", "Exponential", 0.5, (64, 128),
    )
    with_combined = await harness.member("bob").slash(harness.channel, "imagine", prompt="a boat", sampler="DPM++ 2M SDE Karras")
    assert not with_combined.ephemeral
    job = await harness.latest_job()
    assert (job.sampler, job.schedule_type) == ("DPM++ 2M SDE", "Karras")


async def test_a_server_sets_its_own_noise_under_a_members_own(harness):
    """/admin noise: this server's RNG source and ENSD for new jobs, between the bot's config
    and a member's /settings; shown in /admin policy show and /settings; "bot default" and -1
    go back to the config's."""
    mod, alice, bob = admin_member(harness, "mod"), harness.member("alice"), harness.member("bob")
    answer = private_answer(await mod.slash(harness.channel, "admin noise", rng="CPU", ensd=31337))
    assert "RNG source CPU (this server's), ENSD 31337 (this server's)" in answer
    await harness.bot.queue.update_user(bob.id, bob.name, default_rng="NV")

    await alice.slash(harness.channel, "imagine", prompt="a cat")
    assert ((job := await harness.latest_job()).rng, job.eta_noise_seed_delta) == ("CPU", 31337)
    await bob.slash(harness.channel, "imagine", prompt="a dog")
    assert ((job := await harness.latest_job()).rng, job.eta_noise_seed_delta) == ("NV", 31337)  # his own RNG wins
    assert "**RNG source**: server default · server: CPU" in text_of((await alice.slash(harness.channel, "settings")).response)
    assert "**Noise**: RNG source CPU (this server's)" in private_answer(await mod.slash(harness.channel, "admin policy show"))

    shown = private_answer(await mod.slash(harness.channel, "admin noise"))
    assert "RNG source CPU (this server's)" in shown and "Set `rng` or `ensd`" in shown
    await mod.slash(harness.channel, "admin noise", rng="bot default", ensd=-1)
    await alice.slash(harness.channel, "imagine", prompt="a hen")
    assert ((job := await harness.latest_job()).rng, job.eta_noise_seed_delta) == ("GPU", 0)


def test_server_defaults_and_member_settings_resolve_in_order(settings):
    limits = dataclasses.replace(settings.limits, default_sampler="DPM++ 2M Karras", default_rng="CPU", default_ensd=31337)
    server = dataclasses.replace(settings, limits=limits)
    params = resolve_parameters(GenerationOptions(prompt="a cat"), server)
    assert (params.sampler, params.schedule_type, params.rng, params.eta_noise_seed_delta) == ("DPM++ 2M", "Karras", "CPU", 31337)
    # A schedule type given alone replaces the one the default's combined name carries.
    given = resolve_parameters(GenerationOptions(prompt="a cat", schedule_type="uniform", rng="nv", ensd=0), server)
    assert (given.sampler, given.schedule_type, given.rng, given.eta_noise_seed_delta) == ("DPM++ 2M", "Uniform", "NV", 0)


@pytest.mark.parametrize(
    ("limits", "expected"),
    [
        (LimitSettings(default_sampler="DPM++ 2M Karas"), "limits.default_sampler: unknown sampler 'DPM++ 2M Karas'"),
        (LimitSettings(default_sampler="DDIM Karras"), "limits.default_sampler: DDIM cannot use the schedule type 'Karras'"),
        (LimitSettings(default_rng="TPU"), "limits.default_rng must be one of GPU, CPU, NV, got 'TPU'"),
        (LimitSettings(default_ensd=-1), "limits.default_ensd must be between 0 and 4294967295, got -1"),
    ],
)
def test_bad_server_defaults_are_named_at_start_up(settings, limits, expected):
    with pytest.raises(ConfigError) as error:
        dataclasses.replace(settings, limits=limits)
    assert expected in str(error.value)


def _cells(settings, x_type, x_values, y_type=None, y_values=None, **options):
    params = xy_plot_parameters(GenerationOptions(prompt="a cat", **options), settings, None, x_type, x_values, y_type, y_values)
    return params, plot_options(params.plot_json or "").cells


def test_plot_axes_for_schedule_type_eta_and_rng(settings):
    params, cells = _cells(settings, "Schedule type", "Karras, exponential", "RNG source", "cpu, NV", sampler="Euler a")
    assert [(c.schedule_type, c.rng) for c in cells] == [("Karras", "CPU"), ("Exponential", "CPU"), ("Karras", "NV"), ("Exponential", "NV")]
    # A Sampler axis with combined names sets the schedule type too; DDIM cannot use the
    # job's Karras, so its cell runs with Automatic, as A1111's DDIM ignores it.
    params, cells = _cells(settings, "Sampler", "DPM++ 2M SDE Karras, DDIM, Euler", sampler="Euler", schedule_type="Karras")
    assert [(c.sampler, c.schedule_type) for c in cells] == [("DPM++ 2M SDE", "Karras"), ("DDIM", "Automatic"), ("Euler", None)]
    # Eta reaches only the samplers that take it.
    params, cells = _cells(settings, "Sampler", "Euler a, Euler", "Eta", "0.25, 1", sampler="Euler a")
    assert [(c.sampler, c.eta) for c in cells] == [("Euler a", 0.25), ("Euler", None), ("Euler a", 1.0), ("Euler", None)]
    for axes, expected in (
        (("Schedule type", "Karras"), "DDIM cannot use the schedule type Karras"),
        (("Eta", "0.5, 2"), "Eta values must be between 0 and 1, got 2."),
        (("Eta", "0.5"), "The Eta axis needs a sampler that uses eta"),
        (("RNG source", "GPU, TPU"), "Unknown random number generator source `TPU`. Sources: GPU, CPU, NV."),
    ):
        with pytest.raises(InvalidOption) as error:
            _cells(settings, *axes, sampler="DDIM" if axes[0] == "Schedule type" else "Euler")
        assert expected in error.value.message


async def test_the_migration_splits_old_combined_names(tmp_path):
    """Jobs queued before 0013 with "X Karras" run, rerun and write infotext as they ran."""
    from sqlalchemy.ext.asyncio import create_async_engine

    from db.migrate import upgrade_database

    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'old.sqlite3'}")
    await upgrade_database(engine, "0012")
    columns = (
        "user_id, status, kind, prompt, negative_prompt, model, width, height, steps, cfg_scale, sampler, count, seed, "
        "subseed_strength, attempts, created_at"
    )
    async with engine.begin() as connection:
        await connection.exec_driver_sql("INSERT INTO users (id, name, created_at) VALUES (1, 'a', '2026-01-01')")
        for sampler in ("DPM++ 2M Karras", "Euler a"):
            await connection.exec_driver_sql(
                f"INSERT INTO jobs ({columns}) VALUES (1, 'completed', 'txt2img', 'p', '', 'tiny', 64, 64, 3, 7, ?, 1, 1, "
                "0, 0, '2026-01-01')",
                (sampler,),
            )
    await upgrade_database(engine, "0013")
    async with engine.connect() as connection:
        result = await connection.exec_driver_sql("SELECT sampler, schedule_type, rng, eta_noise_seed_delta FROM jobs ORDER BY id")
        rows = [tuple(row) for row in result.all()]
    await engine.dispose()
    assert rows == [("DPM++ 2M", "Karras", "GPU", 0), ("Euler a", "Automatic", "GPU", 0)]


def test_a_job_row_without_a_seed_resize_sends_none():
    job = Job(
        id=1, kind="txt2img", prompt="p", negative_prompt="", model="tiny", width=64, height=64, steps=3, cfg_scale=7.0,
        sampler="Euler", count=1, seed=1, subseed_strength=0.0, tiling=False, safety_check=False, vae="", clip_skip=1,
        schedule_type="Automatic", rng="GPU", eta_noise_seed_delta=0, eta=None,
        seed_resize_from_width=None, seed_resize_from_height=None,
    )
    assert generate_request(job).seed_resize_from is None


@pytest.fixture
def job_queue(database) -> JobQueue:
    return JobQueue(database, QueueSettings(max_pending_per_user=20))


async def test_jobs_share_a_pass_only_with_the_same_schedule_eta_and_noise(job_queue):
    """The queue's batch claim: one sampler run has one schedule type, eta and noise source."""
    queue = job_queue
    await queue.enqueue(params("a0"), ALICE)
    differing = [
        {"schedule_type": "Karras"}, {"eta": 0.5}, {"rng": "NV"}, {"eta_noise_seed_delta": 31337},
        {"seed_resize_from_width": 128, "seed_resize_from_height": 64},
    ]
    for changes in differing:
        await queue.enqueue(dataclasses.replace(params("b"), **changes), BOB)
    await queue.enqueue(params("c0"), CAROL)
    batch = await queue.claim_batch(max_images=8)
    assert [job.prompt for job in batch] == ["a0", "c0"]
