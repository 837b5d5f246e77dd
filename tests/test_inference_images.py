"""PNG saving with infotext, grids, output paths, and latent previews."""

from __future__ import annotations

import datetime as dt
import io

import pytest
import torch
from PIL import Image

from inference.images import (
    grid_path,
    grid_shape,
    image_path,
    make_grid,
    read_infotext,
    save_png,
    save_pngs,
)
from inference.previews import latents_to_rgb, make_preview


def test_png_carries_parameters_chunk(tmp_path):
    image = Image.new("RGB", (64, 48), "red")
    text = "a cat\nSteps: 2, Sampler: Euler, Seed: 1"
    path = save_png(image, tmp_path / "deep" / "x.png", text, compress_level=9)
    assert read_infotext(path) == text
    with Image.open(path) as saved:
        assert saved.size == (64, 48)
        assert saved.text["parameters"] == text
    assert not list(path.parent.glob("*.partial"))


def test_a_jobs_pngs_are_written_side_by_side_each_with_its_own_infotext(tmp_path):
    colours = ["red", "green", "blue", "white", "black"]
    files = [
        (Image.new("RGB", (32 + 8 * i, 32), colour), tmp_path / "day" / f"{i}.png", f"image {i}: {colour}")
        for i, colour in enumerate(colours)
    ]
    save_pngs(files, compress_level=1)
    for image, path, text in files:
        assert read_infotext(path) == text
        with Image.open(path) as saved:
            assert saved.size == image.size and saved.getpixel((0, 0)) == image.getpixel((0, 0))
    assert sorted(p.name for p in (tmp_path / "day").iterdir()) == [f"{i}.png" for i in range(5)]


def test_a_failed_png_write_is_raised_after_the_others_end(tmp_path):
    (tmp_path / "not-a-folder").write_text("a file where a folder should be")
    files = [
        (Image.new("RGB", (16, 16)), tmp_path / "ok" / "0.png", "fine"),
        (Image.new("RGB", (16, 16)), tmp_path / "not-a-folder" / "1.png", "cannot be written"),
        (Image.new("RGB", (16, 16)), tmp_path / "ok" / "2.png", "fine too"),
    ]
    with pytest.raises(OSError):
        save_pngs(files)
    # The others were written whole; nothing is left half-written.
    assert read_infotext(tmp_path / "ok" / "0.png") == "fine"
    assert read_infotext(tmp_path / "ok" / "2.png") == "fine too"
    assert not list(tmp_path.rglob("*.partial"))


def test_non_latin_prompt_survives(tmp_path):
    text = "猫の写真 🐱\nSteps: 2, Sampler: Euler, Seed: 1"
    path = save_png(Image.new("RGB", (8, 8)), tmp_path / "x.png", text)
    assert read_infotext(path) == text


def test_bad_compress_level(tmp_path):
    with pytest.raises(ValueError, match="10"):
        save_png(Image.new("RGB", (8, 8)), tmp_path / "x.png", "", compress_level=10)


@pytest.mark.parametrize(
    ("count", "shape"),
    [(1, (1, 1)), (2, (1, 2)), (3, (1, 3)), (4, (2, 2)), (6, (2, 3)), (9, (3, 3))],
)
def test_grid_shapes(count, shape):
    assert grid_shape(count) == shape


def test_grid_places_images_row_by_row():
    colours = ["red", "green", "blue", "white"]
    grid = make_grid([Image.new("RGB", (10, 20), colour) for colour in colours])
    assert grid.size == (20, 40)
    assert grid.getpixel((5, 5)) == (255, 0, 0)
    assert grid.getpixel((15, 5)) == (0, 128, 0)
    assert grid.getpixel((5, 25)) == (0, 0, 255)
    with pytest.raises(ValueError, match="image 1"):
        make_grid([Image.new("RGB", (10, 10)), Image.new("RGB", (10, 12))])


def test_output_layout(tmp_path):
    day = dt.date(2025, 3, 9)
    assert image_path(tmp_path, 42, 1, 1234, day) == tmp_path / "2025-03-09" / "000042-1-1234.png"
    assert grid_path(tmp_path, 42, day) == tmp_path / "2025-03-09" / "000042-grid.png"


def test_preview_is_a_small_jpeg_of_the_batch():
    latents = torch.randn(4, 4, 64, 48)  # four 512x384 images
    jpeg = make_preview(latents, max_side=256)
    with Image.open(io.BytesIO(jpeg)) as preview:
        assert preview.format == "JPEG"
        assert max(preview.size) == 256
        assert preview.size == (192, 256)  # 2x2 grid of 48x64 latents, scaled by 2


def test_preview_never_upscales_past_the_image_size():
    with Image.open(io.BytesIO(make_preview(torch.randn(1, 4, 8, 8), max_side=256))) as preview:
        assert preview.size == (64, 64)


def test_preview_colours_follow_the_a1111_map():
    latents = torch.zeros(1, 4, 2, 2)
    latents[:, 0] = 1.0  # channel 0 alone: (0.298, 0.207, 0.208) -> ((x + 1) / 2) * 255
    rgb = latents_to_rgb(latents)
    assert rgb.shape == (1, 2, 2, 3)
    assert rgb[0, 0, 0].tolist() == [165, 154, 154]


def test_no_preview_for_unknown_latent_channels():
    assert make_preview(torch.randn(1, 16, 8, 8)) is None
