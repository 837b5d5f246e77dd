"""/promptmatrix and /xyplot through the bot: one job, one labelled grid, each cell's own
infotext; bad values refused privately with nothing queued."""

from __future__ import annotations

from PIL import Image

from bot.jobs.job_rows import parameters_of, plot_options
from bot.jobs.workflow_params import without_workflow
from db.models import JobStatus
from inference.common.infotext import parse_infotext
from inference.common.protocol import JobKind
from tests.harness import attachment_image, button_labels, private_answer

CELL = 64  # the tiny model's images
ROW_LABELS = CELL * 3 // 4  # A1111's margin for row labels


def infotexts(job) -> list[dict[str, str]]:
    infos = []
    for image in sorted(job.images, key=lambda image: image.index):
        with Image.open(image.path) as saved:
            saved.load()
            infos.append(parse_infotext(saved.info["parameters"]))
    return infos


async def finished(harness, result):
    assert result.acknowledged and not result.ephemeral
    job = await harness.wait_for_job((await harness.latest_job()).id)
    assert job.status == JobStatus.COMPLETED, job.error
    return job, harness.message(result.response.id)


async def test_prompt_matrix_makes_every_combination_in_one_labelled_grid(harness):
    alice = harness.member("alice")
    job, message = await finished(
        harness, await alice.slash(harness.channel, "promptmatrix", prompt="a cat|red|wearing a hat", seed=42)
    )
    assert (job.kind, job.count, job.prompt) == (JobKind.PLOT, 4, "a cat|red|wearing a hat")
    infos = infotexts(job)
    assert [info["Prompt"] for info in infos] == ["a cat", "a cat, red", "a cat, wearing a hat", "a cat, red, wearing a hat"]
    assert {info["Seed"] for info in infos} == {"42"}  # A1111's default: one seed for all

    grid = await attachment_image(message)
    assert grid.width == ROW_LABELS + 2 * CELL and grid.height > 2 * CELL
    plot = plot_options(job.plot_json)
    assert plot.x_labels == ("~~red~~", "red") and plot.y_labels == ("~~wearing a hat~~", "wearing a hat")
    assert button_labels(message) == ["Reroll", "Remove"]
    fields = {field.name: field.value for field in message.embeds[0].fields}
    assert fields["Workflow"] == "Prompt matrix (4 cells)" and fields["Seed"] == "42"

    # Reroll: the same matrix, a new seed.
    await alice.click(message, label="Reroll")
    again = await harness.wait_for_job((await harness.latest_job()).id)
    assert again.status == JobStatus.COMPLETED and again.kind == JobKind.PLOT
    assert again.plot_json == job.plot_json and again.seed != job.seed and len(again.images) == 4


async def test_xy_plot_of_steps_and_cfg(harness):
    alice = harness.member("alice")
    result = await alice.slash(
        harness.channel, "xyplot", prompt="a lighthouse --seed 7", x_type="Steps", x_values="2, 3",
        y_type="CFG Scale", y_values="5-7 (+2)",
    )  # inline parameters work in every prompt field
    job, message = await finished(harness, result)
    assert (job.kind, job.count) == (JobKind.PLOT, 4)
    infos = infotexts(job)
    assert [(info["Steps"], info["CFG scale"], info["Seed"]) for info in infos] == [
        ("2", "5", "7"), ("3", "5", "7"), ("2", "7", "7"), ("3", "7", "7"),
    ]
    assert all(info["Prompt"] == "a lighthouse" for info in infos)
    plot = plot_options(job.plot_json)
    assert (plot.x_title, plot.x_labels, plot.y_title, plot.y_labels) == ("Steps", ("2", "3"), "CFG Scale", ("5", "7"))
    grid = await attachment_image(message)
    assert grid.width == ROW_LABELS + 2 * CELL and grid.height > 2 * CELL
    # What is made from one cell's image (Upscale 2x under a cell posted alone) is no plot: it
    # kept the cells, and the worker failed it ("a upscale job is not a plot").
    assert without_workflow(parameters_of(job)).plot_json is None


async def test_prompt_search_and_replace_and_samplers(harness):
    alice = harness.member("alice")
    result = await alice.slash(
        harness.channel, "xyplot", prompt="a red fox", x_type="Prompt S/R", x_values='red, "blue, shiny"',
        y_type="Sampler", y_values="euler a, ddim", seed=3,
    )
    job, _ = await finished(harness, result)
    infos = infotexts(job)
    assert [(info["Prompt"], info["Sampler"]) for info in infos] == [
        ("a red fox", "Euler a"), ("a blue, shiny fox", "Euler a"), ("a red fox", "DDIM"), ("a blue, shiny fox", "DDIM"),
    ]


async def test_bad_plots_are_refused_privately_and_queue_nothing(harness):
    alice = harness.member("alice")
    cases = [
        ("xyplot", {"x_type": "Steps", "x_values": "1-5", "y_type": "CFG Scale", "y_values": "1-5"},
         "5 x 5 values make 25 images; this server allows at most 16 per plot."),
        ("xyplot", {"x_type": "Sampler", "x_values": "Euler a, Euler z"}, "Unknown sampler `Euler z`."),
        ("xyplot", {"x_type": "Prompt S/R", "x_values": "dog, cat"}, "Prompt S/R: `dog` is not in the prompt"),
        # A cell's prompt is checked as /imagine's is: it queued, and failed in the worker.
        ("xyplot", {"x_type": "Prompt S/R", "x_values": "cat, <lora:missing:0.8>"},
         "Prompt S/R: Unknown LoRA `missing`"),
        ("xyplot", {"x_type": "Prompt S/R", "x_values": "cat, [" + "(a:1.2) " * 12 + ":b:0.5]"},
         "Prompt S/R: Prompt editing and alternation can't be read"),
        ("xyplot", {"x_type": "Steps", "x_values": "2-"}, "Steps value `2-` is not a whole number or a range"),
        ("xyplot", {"x_type": "Steps", "x_values": "5-1 (+1)"}, "Steps range `5-1 (+1)` never gets from 5 to 1."),
        ("xyplot", {"x_type": "Steps", "x_values": "2, 99"}, "Steps values must be between 1 and 60, got 99."),
        ("xyplot", {"x_type": "Denoising", "x_values": "0.3, 0.6"}, "give a hires_scale above 1"),
        ("xyplot", {"x_type": "Model", "x_values": "tiny, sdxl"}, "Unknown model `sdxl`."),
        ("xyplot", {"x_type": "Steps", "x_values": "2", "y_type": "Steps", "y_values": "3"}, "X and Y are both Steps"),
        ("promptmatrix", {"prompt": "a cat|a|b|c|d|e"}, "5 parts after the first make 32 images"),
        ("promptmatrix", {"prompt": "a cat [red|blue]"}, "A prompt matrix needs parts separated by `|`"),
    ]
    for command, options, expected in cases:
        options = {"prompt": "a cat", **options}
        result = await alice.slash(harness.channel, command, **options)
        assert expected in (text := private_answer(result)), (command, options, text)
        [error] = harness.expect_user_errors()
        assert expected in error.message
    assert await harness.job_count() == 0
