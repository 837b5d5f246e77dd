"""Uploaded images and masks: every kind of bad file refused by name, good ones normalized."""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import discord
import pytest
from PIL import Image, ImageFile

from bot.config import ImageSettings, Settings
from bot.errors import InvalidOption
from bot.inputs import read_image_upload, read_mask_upload
from bot.jobs.workflow_params import SourceImage


class FakeAttachment:
    """What bot.inputs uses of a discord.Attachment."""

    def __init__(self, filename: str, data: bytes, *, size: int | None = None, error: Exception | None = None):
        self.filename = filename
        self.size = len(data) if size is None else size
        self.data = data
        self.error = error
        self.reads = 0

    async def read(self) -> bytes:
        self.reads += 1
        if self.error is not None:
            raise self.error
        return self.data


def encoded(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def png_bytes(width: int = 64, height: int = 64, color=(200, 40, 40)) -> bytes:
    return encoded(Image.new("RGB", (width, height), color))


def noise_png(width: int, height: int) -> bytes:
    return encoded(Image.effect_noise((width, height), 64).convert("RGB"))


def mask_png(width: int, height: int, box: tuple[int, int, int, int] | None = None) -> bytes:
    """Black, with a white rectangle (left, top, right, bottom) when given."""
    mask = Image.new("L", (width, height), 0)
    if box is not None:
        mask.paste(255, box)
    return encoded(mask)


def animated(fmt: str) -> bytes:
    frames = [Image.new("RGB", (32, 32), color) for color in ("red", "green", "blue")]
    return encoded(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100)


def bomb_png(width: int, height: int) -> bytes:
    """A valid 1-bit PNG of this size, all black: zlib squeezes its rows ~1000:1, so a
    20000x20000 image (400 M pixels, gigabytes decoded) is a few tens of kilobytes."""
    row = b"\x00" * (1 + (width + 7) // 8)
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.fixture
def upload_settings(tmp_path) -> Settings:
    return Settings(outputs_dir=str(tmp_path / "outputs"))


async def refusal(coroutine) -> str:
    with pytest.raises(InvalidOption) as raised:
        await coroutine
    return raised.value.message


def saved_files(settings: Settings) -> list[Path]:
    folder = Path(settings.outputs_dir) / "inputs"
    return sorted(folder.iterdir()) if folder.exists() else []


async def test_an_upload_is_saved_as_rgb_png_named_by_its_pixels(upload_settings):
    source = await read_image_upload(FakeAttachment("cat.png", png_bytes(96, 64)), upload_settings)
    assert (source.width, source.height) == (96, 64)
    assert source.seed is None and source.parent_job_id is None
    path = Path(source.path)
    assert path.is_absolute() and path.parent == (Path(upload_settings.outputs_dir) / "inputs").resolve()
    with Image.open(path) as saved:
        assert saved.format == "PNG" and saved.mode == "RGB" and saved.size == (96, 64)
        assert saved.getpixel((0, 0)) == (200, 40, 40)

    # The same picture again, even as another format, is the same file; other pixels are not.
    again = await read_image_upload(FakeAttachment("again.png", png_bytes(96, 64)), upload_settings)
    as_bmp = await read_image_upload(
        FakeAttachment("cat.bmp", encoded(Image.new("RGB", (96, 64), (200, 40, 40)), "BMP")), upload_settings
    )
    other = await read_image_upload(FakeAttachment("dog.png", png_bytes(96, 64, (1, 2, 3))), upload_settings)
    assert again.path == as_bmp.path == source.path != other.path
    assert saved_files(upload_settings) == sorted([path, Path(other.path)])  # no temporary files left


async def test_phone_photos_are_turned_upright_and_keep_their_first_frame(upload_settings):
    # Stored sideways (64 wide, red left, blue right) with EXIF orientation 6: "rotate 90°
    # clockwise to display", so upright it is 32 wide with red on top.
    sideways = Image.new("RGB", (64, 32), (255, 0, 0))
    sideways.paste((0, 0, 255), (32, 0, 64, 32))
    exif = Image.Exif()
    exif[0x0112] = 6
    photo = encoded(sideways, "JPEG", exif=exif.tobytes(), quality=95)
    source = await read_image_upload(FakeAttachment("IMG_0001.jpg", photo), upload_settings)
    assert (source.width, source.height) == (32, 64)
    with Image.open(source.path) as saved:
        top, bottom = saved.getpixel((16, 4)), saved.getpixel((16, 60))
        assert "exif" not in saved.info
    assert top[0] > 200 > top[2] and bottom[2] > 200 > bottom[0]

    # An MPO (a JPEG with a depth or gain map as a second picture) is the photo, not an animation.
    mpo = encoded(Image.new("RGB", (48, 48), (0, 200, 0)), "MPO", save_all=True,
                  append_images=[Image.new("RGB", (48, 48), (0, 0, 0))])
    assert Image.open(io.BytesIO(mpo)).format == "MPO"
    source = await read_image_upload(FakeAttachment("depth.jpg", mpo), upload_settings)
    with Image.open(source.path) as saved:
        red, green, blue = saved.getpixel((24, 24))
    assert (source.width, source.height) == (48, 48) and green > 180 and red < 30 and blue < 30


async def test_transparency_becomes_white_and_sixteen_bit_grey_is_scaled(upload_settings):
    sticker = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    sticker.paste((10, 20, 30, 255), (0, 0, 32, 64))
    source = await read_image_upload(FakeAttachment("sticker.png", encoded(sticker)), upload_settings)
    with Image.open(source.path) as saved:
        assert saved.mode == "RGB"
        assert saved.getpixel((10, 10)) == (10, 20, 30) and saved.getpixel((50, 10)) == (255, 255, 255)

    sixteen_bit = encoded(Image.new("I;16", (64, 64), 40000))
    deep = await read_image_upload(FakeAttachment("deep.png", sixteen_bit), upload_settings)
    with Image.open(deep.path) as saved:
        assert saved.getpixel((0, 0)) == (156, 156, 156)  # 40000 / 256, not clipped to white


@pytest.mark.parametrize(
    ("filename", "data", "expected"),
    [
        ("notes.png", b"just some text, not a picture\n" * 20, "The image `notes.png` is not an image I can read"),
        ("page.eps", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 64\n", "is not an image I can read"),
        ("empty.png", b"", "is not an image I can read"),
        ("half.png", noise_png(96, 96)[:9000], "The image `half.png` is damaged or incomplete"),
        ("loop.gif", animated("GIF"), "The image `loop.gif` is animated or has 3 frames"),
        ("loop.png", animated("PNG"), "is animated or has 3 frames"),
        ("loop.webp", animated("WEBP"), "is animated or has 3 frames"),
        ("big.png", bomb_png(5000, 5000), "is 5000x5000 (25,000,000 pixels); this server accepts at most 16,777,216"),
        ("bomb.png", bomb_png(20000, 20000), "The image `bomb.png` has far too many pixels"),
    ],
)
async def test_bad_files_are_refused_by_name(upload_settings, filename, data, expected):
    message = await refusal(read_image_upload(FakeAttachment(filename, data), upload_settings))
    assert expected in message, message
    assert saved_files(upload_settings) == []


async def test_decompression_bombs_are_refused_from_their_header(upload_settings, monkeypatch):
    def must_not_decode(self):  # type: ignore[no-untyped-def]
        raise AssertionError("a decompression bomb was decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", must_not_decode)
    before = Image.MAX_IMAGE_PIXELS
    for side in (5000, 20000):
        message = await refusal(read_image_upload(FakeAttachment("x.png", bomb_png(side, side)), upload_settings))
        assert "pixels" in message
    assert Image.MAX_IMAGE_PIXELS == before  # Pillow's process-wide backstop is never lowered


async def test_server_limits_on_bytes_and_pixels(upload_settings):
    small = replace(upload_settings, images=ImageSettings(max_upload_bytes=200 * 1024, max_upload_pixels=64 * 64))
    # Refused from the size Discord states, before downloading anything.
    declared = FakeAttachment("huge.png", png_bytes(), size=3 * 1024 * 1024)
    message = await refusal(read_image_upload(declared, small))
    assert message == "The image `huge.png` is 3.0 MB; this server accepts uploads of up to 200 KB."
    assert declared.reads == 0
    # And from the bytes received, should the stated size be wrong.
    understated = FakeAttachment("odd.png", b"\x89PNG" + bytes(300 * 1024), size=10)
    message = await refusal(read_image_upload(understated, small))
    assert "is 300 KB; this server accepts uploads of up to 200 KB" in message

    message = await refusal(read_image_upload(FakeAttachment("wide.png", png_bytes(65, 64)), small))
    assert message == "The image `wide.png` is 65x64 (4,160 pixels); this server accepts at most 4,096 pixels."
    assert (await read_image_upload(FakeAttachment("ok.png", png_bytes(64, 64)), small)).width == 64


async def test_a_failed_download_is_explained(upload_settings):
    gone = discord.NotFound(SimpleNamespace(status=404, reason="Not Found"), "Unknown attachment")
    broken = FakeAttachment("x.png", png_bytes(), error=gone)
    message = await refusal(read_image_upload(broken, upload_settings, what="mask"))
    assert message == "The mask `x.png` could not be downloaded from Discord (HTTP 404); please try again."


async def test_backticks_in_filenames_stay_inside_the_code_span(upload_settings):
    message = await refusal(read_image_upload(FakeAttachment("a`b`.txt", b"text"), upload_settings))
    assert message.startswith("The image `a'b'.txt` is not an image")


# --- masks ---------------------------------------------------------------------------------


IMAGE = SourceImage(path="/unused/image.png", width=64, height=64)


async def test_a_mask_is_saved_as_greyscale_at_the_image_size(upload_settings):
    square = FakeAttachment("mask.png", mask_png(64, 64, (16, 16, 48, 48)))
    path, note = await read_mask_upload(square, upload_settings, IMAGE)
    assert note is None
    with Image.open(path) as saved:
        assert saved.mode == "L" and saved.size == (64, 64)
        assert saved.getpixel((32, 32)) == 255 and saved.getpixel((2, 2)) == 0
    assert Path(path).parent == (Path(upload_settings.outputs_dir) / "inputs").resolve()

    # A mask of the same shape but another size is resized, and the user is told.
    big = FakeAttachment("big.png", mask_png(256, 256, (0, 0, 128, 256)))
    path, note = await read_mask_upload(big, upload_settings, IMAGE)
    assert note == "The mask was 256x256 and was resized to the image's 64x64."
    with Image.open(path) as saved:
        assert saved.size == (64, 64) and saved.getpixel((10, 32)) == 255 and saved.getpixel((54, 32)) == 0

    # Within 1% of the image's shape is the same shape (sizes rounded when it was scaled).
    wide = SourceImage(path="/unused/wide.png", width=200, height=100)
    _, note = await read_mask_upload(FakeAttachment("m.png", mask_png(399, 200, (0, 0, 50, 50))), upload_settings, wide)
    assert note == "The mask was 399x200 and was resized to the image's 200x100."


async def test_a_mask_on_a_transparent_layer_repaints_only_what_was_painted(upload_settings):
    layer = Image.new("RGBA", (64, 64), (255, 255, 255, 0))
    layer.paste((255, 255, 255, 255), (0, 0, 20, 20))
    path, _ = await read_mask_upload(FakeAttachment("layer.png", encoded(layer)), upload_settings, IMAGE)
    with Image.open(path) as saved:
        assert saved.getpixel((5, 5)) == 255 and saved.getpixel((40, 40)) == 0


async def test_bad_masks_are_refused(upload_settings):
    cases = [
        (mask_png(64, 32, (0, 0, 32, 32)), "The mask `m.png` is 64x32 but the image is 64x64: they must have the same"),
        (mask_png(64, 64), "The mask `m.png` is all black, so there is nothing to repaint: paint the area to change"),
        (encoded(Image.new("L", (64, 64), 100)), "is all black"),
        # One white pixel of a 256 px mask fades to almost nothing at 64 px: nothing left to repaint.
        (mask_png(256, 256, (100, 100, 101, 101)), "is all black"),
        (b"not a mask", "The mask `m.png` is not an image I can read"),
        (animated("GIF"), "The mask `m.png` is animated"),
    ]
    for data, expected in cases:
        message = await refusal(read_mask_upload(FakeAttachment("m.png", data), upload_settings, IMAGE))
        assert expected in message, message
    assert saved_files(upload_settings) == []
