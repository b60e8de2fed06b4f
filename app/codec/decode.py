"""Upload bytes -> upright sRGB pixels plus what must survive (alpha, EXIF, grayscale depth).

Raises plain errors (``app.codec.limits``); the app maps them to HTTP. Choices (documented in the README):
colour-managed inputs (Display P3, Adobe RGB, CMYK with a profile) are converted
to sRGB and the output is tagged sRGB; grayscale stays grayscale at its own bit
depth (8 or 16); 16-bit colour is reduced to 8 bits by Pillow's decoders, so it
comes back as 8-bit; alpha is passed through untouched (dropped for JPEG output).
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass

import numpy as np
import pillow_heif
from PIL import ExifTags, Image, ImageCms, ImageOps, UnidentifiedImageError

from app.codec.encode import SRGB_PROFILE, to_8bit
from app.codec.limits import RLE_BMP_MAX_PIXELS, CorruptImage, ImageTooLarge, UnsupportedImage, check_upfront

log = logging.getLogger(__name__)

Image.init()  # load every plugin now, so the whitelist below names registered formats
pillow_heif.register_heif_opener()

# Pillow format names tried, in this order; everything else (GIF, SVG, PSD, ...) is 415. JPEG covers MPO.
ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "TIFF", "BMP", "HEIF")
ACCEPTED_NAMES = "JPEG, PNG, WebP, TIFF, BMP, HEIC/HEIF"
_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "F")


@dataclass
class DecodedImage:
    rgb: np.ndarray  # (H, W, 3) uint8 sRGB, upright: what the model sees
    alpha: np.ndarray | None  # (H, W) uint8, passed through unchanged
    gray: np.ndarray | None  # (H, W) uint8 or uint16 when the photo is grayscale; output stays so
    exif: bytes | None  # EXIF to return: orientation reset to 1, GPS removed if asked
    source_format: str
    had_profile: bool

    @property
    def megapixels(self) -> float:
        return self.rgb.shape[0] * self.rgb.shape[1] / 1e6


def decode(data: bytes, max_pixels: int, strip_gps: bool = True) -> DecodedImage:
    """Decode an upload: the up-front checks (``app.codec.limits``: signature, work limits), format whitelist,
    pixel limit from the header, EXIF orientation, ICC -> sRGB."""
    signature = check_upfront(data, max_pixels)  # before Pillow parses anything: its parsers are Python
    try:
        im = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except Image.DecompressionBombError:
        raise ImageTooLarge(f"image declares too many pixels (decompression bomb); the limit is {max_pixels}") from None
    except UnidentifiedImageError:
        if signature is not None:  # right magic bytes, but no decodable header after them
            raise CorruptImage("corrupt or truncated image: its header cannot be read") from None
        raise UnsupportedImage(f"not a supported image; accepted formats: {ACCEPTED_NAMES}") from None
    except (OSError, ValueError, SyntaxError, EOFError, RuntimeError) as exc:  # RuntimeError: libheif
        raise CorruptImage(f"corrupt or truncated image header: {exc}") from None
    width, height = im.size
    if width * height > max_pixels:
        raise ImageTooLarge(f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}")
    if width < 1 or height < 1:
        raise CorruptImage(f"image has no pixels ({width}x{height})")
    fmt = im.format or "unknown"
    if width * height > RLE_BMP_MAX_PIXELS and any(tile[0] == "bmp_rle" for tile in im.tile):
        raise ImageTooLarge(
            f"RLE-compressed BMP of {width}x{height} = {width * height} pixels; the limit for RLE-compressed BMP is "
            f"{RLE_BMP_MAX_PIXELS} (send it uncompressed, or as PNG)"
        )
    try:
        im.load()
        ImageOps.exif_transpose(im, in_place=True)  # not a copy of the photo when it is already upright
        exif = _output_exif(im, strip_gps)
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(str(exc)) from None
    except (OSError, ValueError, SyntaxError, EOFError, RuntimeError, KeyError, IndexError) as exc:
        raise CorruptImage(f"corrupt or truncated {fmt} image: {exc}") from None
    try:
        return _pixels(im, fmt, exif)
    except (OSError, ValueError) as exc:
        raise UnsupportedImage(f"unsupported pixel layout {im.mode} in {fmt}: {exc}") from None


def _pixels(im: Image.Image, fmt: str, exif: bytes | None) -> DecodedImage:
    if im.mode in _GRAY_MODES:
        alpha = np.asarray(im.getchannel("A")) if im.mode == "LA" else None
        gray = _gray_array(im)
        gray8 = gray if gray.dtype == np.uint8 else to_8bit(gray)
        return DecodedImage(np.repeat(gray8[..., None], 3, axis=2), alpha, gray, exif, fmt, False)
    alpha = None
    if im.mode in ("RGBA", "RGBa", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        alpha = np.asarray(im.getchannel("A"))
    base = im if im.mode in ("RGB", "CMYK") else im.convert("RGB")
    icc = im.info.get("icc_profile")
    if icc:
        try:
            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            out = ImageCms.profileToProfile(base, src, SRGB_PROFILE, outputMode="RGB")
            return DecodedImage(np.asarray(out), alpha, None, exif, fmt, True)
        except (ImageCms.PyCMSError, OSError, ValueError) as exc:
            log.warning("ignoring unusable ICC profile: %s", exc)
    rgb = base if base.mode == "RGB" else base.convert("RGB")  # no extra copy of an RGB photo
    return DecodedImage(np.asarray(rgb), alpha, None, exif, fmt, False)


def _gray_array(im: Image.Image) -> np.ndarray:
    """(H, W) uint8 for 8-bit and bilevel grayscale, uint16 for deeper grayscale."""
    if im.mode in ("1", "L", "LA"):
        return np.asarray(im.convert("L"))
    arr = np.asarray(im)
    if im.mode == "F":
        arr = arr * 65535.0
    return np.clip(arr, 0, 65535).astype(np.uint16)


def _output_exif(im: Image.Image, strip_gps: bool) -> bytes | None:
    """The photo's EXIF as it should be returned: orientation 1 (pixels are upright), GPS gone if asked."""
    exif = im.getexif()
    if not len(exif):
        return None
    exif[ExifTags.Base.Orientation] = 1
    if strip_gps:
        exif.pop(ExifTags.IFD.GPSInfo, None)
    try:
        return exif.tobytes()
    except Exception as exc:  # malformed EXIF must not cost the photo
        log.warning("dropping EXIF that cannot be re-encoded: %s", exc)
        return None
