"""Decoding field photos to 8-bit RGB: EXIF orientation, 16-bit and float images, transparency, bbox crops; and the
one check of whether a file is a usable image (Pillow and numpy only)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

BACKGROUND = (128, 128, 128)
"""Neutral grey that transparent pixels are composited on (black or white would look like a real edge)."""
_TRANSPOSED_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that swap width and height


def displayed_size(image: Image.Image) -> tuple[int, int]:
    """(width, height) of ``image`` as shown, i.e. after its EXIF orientation (read from the header only)."""
    orientation = image.getexif().get(ImageOps.ExifTags.Base.Orientation, 1)
    width, height = image.size
    return (height, width) if orientation in _TRANSPOSED_ORIENTATIONS else (width, height)


def _to_8bit(image: Image.Image) -> Image.Image:
    """Grey images of more than 8 bits → mode ``L``, scaled by the dtype's maximum (16-bit) or the range."""
    values = np.asarray(image, dtype=np.float64)
    if image.mode.startswith("I;16") or (image.mode == "I" and values.min() >= 0 and values.max() <= 65535):
        scaled = values / 65535.0
    elif image.mode == "F" and values.min() >= 0 and values.max() <= 1:
        scaled = values
    else:  # unknown range (signed 32-bit, float outside [0, 1]): stretch what is there
        low, high = values.min(), values.max()
        scaled = (values - low) / (high - low) if high > low else np.zeros_like(values)
    return Image.fromarray(np.round(scaled * 255).astype(np.uint8))


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB of a decoded image: EXIF orientation applied, transparency composited on :data:`BACKGROUND`.

    Handles 1, L, P, LA, PA, RGBA, CMYK, YCbCr, I, I;16 and F images. The input is not modified.
    """
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        image = _to_8bit(image)
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        image.mode == "P" and "transparency" in image.info
    )
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def load_rgb(path: str | Path) -> Image.Image:
    """Open and fully decode the image at ``path`` as 8-bit RGB (see :func:`to_rgb`)."""
    with Image.open(path) as file:
        return to_rgb(file)


def clip_box(box: list[float], size: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """``[x, y, w, h]`` → pixel box ``(left, top, right, bottom)`` inside an image of ``size`` (width, height).

    Returns ``None`` when the box does not overlap the image by at least one pixel.
    """
    width, height = size
    left, top = max(0, round(box[0])), max(0, round(box[1]))
    right, bottom = min(width, round(box[0] + box[2])), min(height, round(box[1] + box[3]))
    if right <= left or bottom <= top:
        return None
    return left, top, right, bottom


def crop_to_box(image: Image.Image, box: list[float], where: str) -> Image.Image:
    """Crop ``image`` to ``box`` ([x, y, w, h]) clipped to the image (the set-up check warns about clipping).

    Args:
        where: the image's file and row, for the message when the box misses the image.
    """
    pixels = clip_box(box, image.size)
    if pixels is None:
        raise ValueError(f"{where}: bbox {box} lies outside the {image.width}x{image.height} image")
    return image.crop(pixels)


FileCheck = tuple[int, int, int, int, str | None]  # size, mtime_ns, width, height, problem


def check_image_file(path: str) -> FileCheck:
    """Check one file: ``(size, mtime_ns, width, height, problem)``, ``problem`` ``None`` for a usable image.

    Width and height are those of the image as displayed (after its EXIF orientation).
    """
    try:
        stat = os.stat(path)
    except OSError as error:
        return 0, 0, 0, 0, f"file not found or unreadable ({error.strerror})"
    if stat.st_size == 0:
        return stat.st_size, stat.st_mtime_ns, 0, 0, "empty file (0 bytes)"
    try:
        with Image.open(path) as image:
            image.verify()  # checksums and structure, without decoding
        with Image.open(path) as image:
            width, height = displayed_size(image)
            image.load()  # a full decode finds truncated files
    except Exception as error:  # noqa: BLE001 - Pillow raises many types for broken files; each is a bad row
        return stat.st_size, stat.st_mtime_ns, 0, 0, f"cannot be decoded ({type(error).__name__}: {error})"
    return stat.st_size, stat.st_mtime_ns, width, height, None
