"""Pixels -> bytes: PNG (``app.codec.png``'s writer, or Pillow's), JPEG and WebP, tagged sRGB."""

from __future__ import annotations

import io
import struct

import numpy as np
from PIL import Image, ImageCms

from app.codec.formats import output_format
from app.codec.png import encode_png, map_strips
from model.corrector import MapRows

SRGB_PROFILE = ImageCms.createProfile("sRGB")
# LittleCMS stamps the profile with the time it was made (ICC header bytes 24-35); a fixed date
# makes the output of a photo the same bytes in every process (reproducible, cacheable).
_ICC = ImageCms.ImageCmsProfile(SRGB_PROFILE).tobytes()
SRGB_ICC = _ICC[:24] + struct.pack(">6H", 2000, 1, 1, 0, 0, 0) + _ICC[36:]


# zlib strategy of Pillow's PNG writer (the reference the tests and the bench compare ours with).
PNG_STRATEGY = 3  # zlib.Z_RLE
PNG_WRITERS = ("strips", "pillow")


def encode(
    pixels: np.ndarray,
    alpha: np.ndarray | None,
    fmt: str = "png",
    *,
    quality: int = 90,
    compress_level: int = 1,
    exif: bytes | None = None,
    png_strategy: int = PNG_STRATEGY,
    map_rows: MapRows | None = None,
    threads: int = 0,
    png_writer: str = "strips",
) -> bytes:
    """Encode a uint8 (H, W, 3) sRGB image, or a uint8/uint16 (H, W) grayscale one, as png, jpeg or webp.

    RGB output is tagged with an sRGB profile; 16-bit grayscale is kept only by PNG; JPEG drops alpha.
    PNG is lossless whatever ``compress_level`` (zlib's 0-9) says; it is written by ``app.codec.png`` on
    ``threads`` threads (0: one per core) with ISA-L's deflate (the level mapped onto ISA-L's 0-3,
    ``app.codec.png.isal_level``), or by Pillow (``png_writer="pillow"``: zlib, with ``png_strategy``, zlib 0-4).
    ``map_rows`` (rows -> same-shaped rows, e.g. the colour correction) is applied to ``pixels`` first,
    in strips on the same threads (the PNG writer maps each strip just before it compresses it).
    """
    spec = output_format(fmt)
    fmt = spec.name
    if png_writer not in PNG_WRITERS:
        raise ValueError(f"unknown PNG writer {png_writer!r}; choose one of {', '.join(PNG_WRITERS)}")
    reduce_depth = pixels.ndim == 2 and pixels.dtype == np.uint16 and (fmt != "png" or alpha is not None)
    if fmt == "png" and png_writer == "strips":
        if reduce_depth:
            pixels = to_8bit(map_rows(pixels) if map_rows else pixels)
            map_rows = None
        return encode_png(
            pixels,
            alpha,
            compress_level=compress_level,
            exif=exif,
            icc_profile=SRGB_ICC if pixels.ndim == 3 else None,
            map_rows=map_rows,
            threads=threads,
        )
    if map_rows is not None:
        pixels = map_strips(pixels, map_rows, threads)
    if reduce_depth:
        pixels = to_8bit(pixels)
    im = Image.fromarray(pixels)  # RGB, L or I;16
    if alpha is not None and fmt != "jpeg":
        im.putalpha(Image.fromarray(alpha))
    if fmt == "webp" and im.mode in ("L", "LA"):
        im = im.convert("RGBA" if im.mode == "LA" else "RGB")
    options: dict = {"exif": exif} if exif else {}
    if im.mode in ("RGB", "RGBA"):
        options["icc_profile"] = SRGB_ICC
    if spec.lossy:
        options["quality"] = quality
    else:
        options["compress_level"] = compress_level
        options["compress_type"] = png_strategy
    buf = io.BytesIO()
    im.save(buf, fmt.upper(), **options)
    return buf.getvalue()


def to_8bit(gray16: np.ndarray) -> np.ndarray:
    """16-bit gray -> 8-bit, rounded (65535 -> 255)."""
    return ((gray16.astype(np.uint32) + 128) // 257).astype(np.uint8)
