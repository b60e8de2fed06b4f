"""Upload bytes -> sRGB uint8 pixels, and pixels -> PNG bytes. Raises plain errors; routes map them to HTTP."""
from __future__ import annotations

import io
import logging
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

log = logging.getLogger(__name__)

ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "TIFF", "BMP")
_SRGB_PROFILE = ImageCms.createProfile("sRGB")
SRGB_ICC = ImageCms.ImageCmsProfile(_SRGB_PROFILE).tobytes()


class UnsupportedImage(ValueError):
    """Not an image in an accepted format (HTTP 415)."""


class CorruptImage(ValueError):
    """Recognised as an image but cannot be decoded (HTTP 422)."""


class ImageTooLarge(ValueError):
    """Over the configured pixel limit (HTTP 413)."""


@dataclass
class DecodedImage:
    rgb: np.ndarray                # (H, W, 3) uint8 sRGB, upright
    alpha: np.ndarray | None       # (H, W) uint8, passed through unchanged
    source_format: str
    had_profile: bool


def decode(data: bytes, max_pixels: int) -> DecodedImage:
    """Decode an upload: format whitelist, pixel limit from the header, EXIF orientation, ICC -> sRGB."""
    try:
        im = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(str(exc)) from None
    except UnidentifiedImageError:
        raise UnsupportedImage(f"not a supported image; accepted formats: {', '.join(ACCEPTED_FORMATS)}") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise CorruptImage(f"cannot read image header: {exc}") from None
    width, height = im.size
    if width * height > max_pixels:
        raise ImageTooLarge(f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}")
    if width < 1 or height < 1:
        raise CorruptImage(f"image has no pixels ({width}x{height})")
    fmt = im.format or "unknown"
    try:
        im.load()
        im = ImageOps.exif_transpose(im)
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(str(exc)) from None
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as exc:
        raise CorruptImage(f"corrupt or truncated {fmt} image: {exc}") from None

    alpha = None
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        alpha = np.asarray(im.getchannel("A"))
    icc = im.info.get("icc_profile")
    rgb_im = im.convert("RGB")
    had_profile = False
    if icc:
        try:
            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            rgb_im = ImageCms.profileToProfile(rgb_im, src, _SRGB_PROFILE, outputMode="RGB")
            had_profile = True
        except (ImageCms.PyCMSError, OSError, ValueError) as exc:
            log.warning("ignoring unusable ICC profile: %s", exc)
    return DecodedImage(np.asarray(rgb_im), alpha, fmt, had_profile)


def encode_png(rgb: np.ndarray, alpha: np.ndarray | None = None, compress_level: int = 1) -> bytes:
    """PNG bytes of a uint8 (H, W, 3) sRGB image (plus alpha), tagged with an sRGB profile."""
    im = Image.fromarray(rgb, "RGB")
    if alpha is not None:
        im.putalpha(Image.fromarray(alpha, "L"))
    buf = io.BytesIO()
    im.save(buf, "PNG", compress_level=compress_level, icc_profile=SRGB_ICC)
    return buf.getvalue()
