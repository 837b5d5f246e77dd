"""Draw docs/screenshot.png: a mock of the bot's answer to /imagine in Discord.

The grid is real: the tiny random-weight model (`sdbot make-tiny-model`) makes it through
`sdbot generate`, the same queue and worker the bot uses, at 64 px and a few steps so it takes
a minute on a CPU. Its images are noise, since the weights are random. Around it, Pillow draws
what Discord shows: the author line, the result embed's title and fields, and the buttons the
bot puts under a grid (bot/ui/buttons.py, `result_view`). Nothing connects to Discord.

    python docs/make_screenshot.py [--output docs/screenshot.png]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

REPOSITORY = Path(__file__).resolve().parent.parent
PROMPT = "a lighthouse at dusk, oil painting"
SEED = 5
STEPS = 6
BASE_SIZE = 64
SAMPLER = "Euler a"

# Discord's dark theme.
BACKGROUND = (49, 51, 56)
EMBED_BACKGROUND = (43, 45, 49)
EMBED_BAR = (87, 242, 135)  # discord.Colour.green(), the finished job's colour
TEXT = (219, 222, 225)
MUTED = (148, 155, 164)
BUTTON = (78, 80, 88)
WHITE = (255, 255, 255)
BOT_TAG = (88, 101, 242)
FONT_FOLDER = Path("/usr/share/fonts/truetype/dejavu")

# The rows of buttons under a finished grid of four, as result_view builds them. Emoji are
# left out of the labels: DejaVu has no colour emoji, and a missing glyph draws a box.
GRID_BUTTON_ROWS = (
    ("U1", "U2", "U3", "U4", "Reroll"),
    ("V1", "V2", "V3", "V4", "Remix"),
    ("Remove",),
)
GRID_SHOWN_SIDE = 384


def make_grid(workdir: Path) -> tuple[int, Path]:
    """Run `sdbot make-tiny-model` and `sdbot generate` in workdir: the job's number and its grid."""
    model = workdir / "tiny-model"
    bot = [sys.executable, "-m", "bot"]
    subprocess.run([*bot, "make-tiny-model", str(model)], check=True, cwd=REPOSITORY)
    config = workdir / "config.toml"
    config.write_text(
        f'database_url = "sqlite+aiosqlite:///{workdir / "sdbot.sqlite3"}"\n'
        f'outputs_dir = "{workdir / "outputs"}"\n'
        'default_model = "tiny"\n'
        "[[models]]\n"
        'name = "tiny"\n'
        f'source = "{model}"\n'
        f"base_size = {BASE_SIZE}\n"
        "[limits]\n"
        f"min_size = {BASE_SIZE}\n"
        "[worker]\n"
        'device = "cpu"\n'
        "warmup = false\n"
    )
    generate = [*bot, "--config", str(config), "generate", PROMPT]
    generate += ["--count", "4", "--seed", str(SEED), "--steps", str(STEPS), "--sampler", SAMPLER]
    finished = subprocess.run(generate, check=True, cwd=REPOSITORY, capture_output=True, text=True)
    job = re.search(r"^job #(\d+) queued$", finished.stdout, re.MULTILINE)
    grid = re.search(r"^grid -> (.+)$", finished.stdout, re.MULTILINE)
    if job is None or grid is None:
        raise RuntimeError(f"sdbot generate printed no grid:\n{finished.stdout}{finished.stderr}")
    return int(job.group(1)), Path(grid.group(1))


def font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    try:
        return ImageFont.truetype(str(FONT_FOLDER / name), size)
    except OSError:
        return ImageFont.load_default(size=size)


def draw_message(job_id: int, grid: Image.Image) -> Image.Image:
    """The grid inside a mock of Discord's message: author, embed and button rows."""
    width, margin, embed_left = 640, 16, 72
    grid = grid.convert("RGB").resize((GRID_SHOWN_SIDE, GRID_SHOWN_SIDE), Image.Resampling.NEAREST)
    fields = (
        ("Seeds", f"{SEED}, {SEED + 1}, {SEED + 2}, {SEED + 3}"),
        ("Size", f"{BASE_SIZE}x{BASE_SIZE}"),
        ("Steps", str(STEPS)),
        ("Sampler", SAMPLER),
        ("CFG", "7"),
        ("Model", "tiny"),
    )
    field_rows = (len(fields) + 2) // 3
    embed_height = 16 + 24 + 8 + field_rows * 44 + GRID_SHOWN_SIDE + 12 + 20 + 12
    button_height, button_gap = 32, 8
    buttons_height = len(GRID_BUTTON_ROWS) * (button_height + button_gap)
    height = margin + 24 + 8 + embed_height + 8 + buttons_height + margin
    image = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)

    # Author line: avatar, name, APP tag, time.
    draw.ellipse((margin, margin, margin + 40, margin + 40), fill=BOT_TAG)
    draw.text((margin + 11, margin + 8), "SD", font=font(16, bold=True), fill=WHITE)
    draw.text((embed_left, margin), "sdbot", font=font(16, bold=True), fill=WHITE)
    draw.rounded_rectangle((embed_left + 56, margin + 2, embed_left + 92, margin + 18), 3, fill=BOT_TAG)
    draw.text((embed_left + 61, margin + 3), "APP", font=font(11, bold=True), fill=WHITE)
    draw.text((embed_left + 102, margin + 2), "Today at 21:07", font=font(12), fill=MUTED)

    # The result embed: green bar, title (the prompt), fields in threes, the image, the footer.
    top = margin + 32
    right = width - margin
    draw.rounded_rectangle((embed_left, top, right, top + embed_height), 4, fill=EMBED_BACKGROUND)
    draw.rectangle((embed_left, top, embed_left + 4, top + embed_height), fill=EMBED_BAR)
    x, y = embed_left + 16, top + 16
    draw.text((x, y), PROMPT, font=font(16, bold=True), fill=WHITE)
    y += 32
    column_width = (right - x - 16) // 3
    for number, (name, value) in enumerate(fields):
        column, row = number % 3, number // 3
        field_x, field_y = x + column * column_width, y + row * 44
        draw.text((field_x, field_y), name, font=font(13, bold=True), fill=TEXT)
        draw.text((field_x, field_y + 18), value, font=font(13), fill=TEXT)
    y += field_rows * 44
    image.paste(grid, (x, y))
    y += GRID_SHOWN_SIDE + 12
    draw.text((x, y), f"Job #{job_id}", font=font(11), fill=MUTED)

    # The buttons under the message, five to a row at most, as Discord lays them out.
    y = top + embed_height + 8
    label_font = font(14)
    for row in GRID_BUTTON_ROWS:
        x = embed_left
        for label in row:
            label_width = int(draw.textlength(label, font=label_font))
            button_width = max(56, label_width + 32)
            draw.rounded_rectangle((x, y, x + button_width, y + button_height), 4, fill=BUTTON)
            draw.text((x + (button_width - label_width) // 2, y + 7), label, font=label_font, fill=WHITE)
            x += button_width + button_gap
        y += button_height + button_gap
    return image


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=REPOSITORY / "docs" / "screenshot.png")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sdbot-screenshot-") as workdir:
        job_id, grid_path = make_grid(Path(workdir))
        with Image.open(grid_path) as grid:
            screenshot = draw_message(job_id, grid)
    screenshot.save(args.output, optimize=True)
    print(args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
