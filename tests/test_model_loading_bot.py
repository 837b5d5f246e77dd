"""A first load through the bot: the member waiting sees "Loading model X…", and the bot keeps
answering everyone while the worker process loads (a slow load: SDBOT_TEST_SLOW_MODEL_LOAD_S).

The worker is one process with one GPU: a job on another model waits behind the load (it is
queued, and told its position at once); only the bot's answers never do."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from db.models import JobStatus
from tests.test_bot_policy import queued

SLOW_LOAD_S = 8.0
# tests/discord_address/sitecustomize.py slows a watched load in the worker processes it reaches.
TEST_HOOKS = Path(__file__).parent / "discord_address"


@pytest.fixture
def settings(settings, monkeypatch):
    """The tiny model twice ("night" is not preloaded), in a spawned worker that picks up the
    slow-load hook from PYTHONPATH (a forkserver's children keep its older environment)."""
    tiny = settings.models[0]
    night = replace(tiny, name="night", description="the same tiny model")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TEST_HOOKS), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("SDBOT_TEST_SLOW_MODEL_LOAD_S", str(SLOW_LOAD_S))
    return replace(
        settings, models=(tiny, night), model_entries=tuple(asdict(m) for m in (tiny, night)),
        worker=replace(settings.worker, start_method="spawn"),
    )


def status_edits(harness, text: str) -> list:
    return [
        request for request in harness.env.http_requests
        if request.method == "PATCH" and request.json and text in str(request.json)
    ]


async def test_a_first_load_shows_loading_and_the_bot_answers_meanwhile(harness):
    alice, bob = harness.member("alice"), harness.member("bob")
    await queued(harness, await alice.slash(harness.channel, "imagine", prompt="a lighthouse", model="night", count=1))
    night_job = await harness.latest_job()

    async def loading_shown() -> bool:
        return bool(status_edits(harness, "Loading model night…"))

    await harness.wait_for(loading_shown, "the status to say the model is loading")
    started = time.monotonic()
    answer = await bob.slash(harness.channel, "imagine", prompt="a cat", count=1)
    answered_in = time.monotonic() - started
    await queued(harness, answer)
    tiny_job = await harness.latest_job()
    # Answered while the worker still loads "night" (it sleeps SLOW_LOAD_S once it read the files).
    assert answered_in < SLOW_LOAD_S / 2, answered_in
    assert (await harness.queue.get(night_job.id)).status == JobStatus.RUNNING
    steps_shown = [edit for edit in status_edits(harness, "Generating · step") if f"Job #{night_job.id} ·" in str(edit.json)]
    assert not steps_shown  # still loading: no sampling step yet
    assert (await harness.wait_for_job(night_job.id)).status == JobStatus.COMPLETED
    assert time.monotonic() - started > SLOW_LOAD_S / 2  # the hook reached the worker: a slow load
    assert (await harness.wait_for_job(tiny_job.id)).status == JobStatus.COMPLETED
    # "tiny" was unloaded to make room (one model at a time): its job waited on a load too.
    assert status_edits(harness, "Loading model tiny…")
