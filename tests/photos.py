"""Test uploads made at test time from the real reference photos: P3, HEIC, CMYK, 16-bit, EXIF, bad files."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib

import numpy as np
from PIL import Image, ImageCms

# Display P3 (D65 white, sRGB transfer curve), primaries adapted to the D50 PCS as in Apple's profile.
_P3_XYZ = {
    b"rXYZ": (0.515102, 0.241182, -0.001050),
    b"gXYZ": (0.291965, 0.692236, 0.041882),
    b"bXYZ": (0.157153, 0.066582, 0.784378),
}
_D50 = (0.964203, 1.0, 0.824905)


def _s15(v: float) -> bytes:
    return struct.pack(">i", round(v * 65536))


def display_p3_icc() -> bytes:
    """A minimal ICC v2 matrix/TRC profile for Display P3 (LittleCMS accepts it)."""
    desc_text = b"Display P3 (test)\x00"
    tags = {
        b"desc": b"desc" + bytes(4) + struct.pack(">I", len(desc_text)) + desc_text + bytes(4 + 4 + 2 + 1 + 67),
        b"wtpt": b"XYZ " + bytes(4) + b"".join(_s15(v) for v in _D50),
        **{sig: b"XYZ " + bytes(4) + b"".join(_s15(v) for v in xyz) for sig, xyz in _P3_XYZ.items()},
        b"cprt": b"text" + bytes(4) + b"public domain\x00",
    }
    srgb_curve = (
        b"para"
        + bytes(4)
        + struct.pack(">HH", 3, 0)
        + b"".join(_s15(v) for v in (2.4, 1 / 1.055, 0.055 / 1.055, 1 / 12.92, 0.04045))
    )
    for sig in (b"rTRC", b"gTRC", b"bTRC"):
        tags[sig] = srgb_curve
    table, data = b"", b""
    offset = 128 + 4 + 12 * len(tags)
    for sig, body in tags.items():
        body += bytes(-len(body) % 4)
        table += sig + struct.pack(">II", offset + len(data), len(body))
        data += body
    size = offset + len(data)
    header = (
        struct.pack(">I", size)
        + bytes(4)
        + struct.pack(">I", 0x02100000)
        + b"mntrRGB XYZ "
        + bytes(12)
        + b"acsp"
        + bytes(4 + 4 + 4 + 4 + 8)
        + struct.pack(">I", 0)
        + b"".join(_s15(v) for v in _D50)
        + bytes(4 + 16 + 28)
    )
    return header + struct.pack(">I", len(tags)) + table + data


def to_display_p3_jpeg(rgb: np.ndarray) -> bytes:
    """The sRGB photo re-encoded as Display P3 pixels in a JPEG tagged with the P3 profile."""
    icc = display_p3_icc()
    p3 = ImageCms.profileToProfile(
        Image.fromarray(rgb),
        ImageCms.createProfile("sRGB"),
        ImageCms.ImageCmsProfile(io.BytesIO(icc)),
        outputMode="RGB",
    )
    return save(p3, "JPEG", quality=95, icc_profile=icc)


def save(im: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **options)
    return buf.getvalue()


def rotated_jpeg(rgb: np.ndarray, orientation: int = 6, gps: bool = True) -> bytes:
    """A JPEG whose stored pixels are ``rgb`` and whose EXIF says to rotate them (6: 90 degrees clockwise)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "TestCam"  # Make
    if gps:
        exif[0x8825] = {1: "N", 2: (52.0, 22.0, 0.0)}  # GPSInfo
    return save(Image.fromarray(rgb), "JPEG", quality=95, exif=exif)


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` but that carries only a tiny data stream."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def png16_gray(height: int = 40, width: int = 60) -> tuple[np.ndarray, bytes]:
    """A smooth 16-bit grayscale ramp and its PNG."""
    ramp = np.linspace(1000, 64000, width * height).reshape(height, width).astype(np.uint16)
    return ramp, save(Image.fromarray(ramp), "PNG")


def zip_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("photo.jpg", b"not really")
    return buf.getvalue()


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 255, 0))]
    return save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def heic(rgb: np.ndarray) -> bytes:
    import pillow_heif  # noqa: F401  (registers the HEIF writer)

    pillow_heif.register_heif_opener()
    return save(Image.fromarray(rgb), "HEIF", quality=90)


def cmyk_jpeg(rgb: np.ndarray) -> bytes:
    return save(Image.fromarray(rgb).convert("CMYK"), "JPEG", quality=95)
