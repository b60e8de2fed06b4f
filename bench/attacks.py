"""Hostile uploads built at test time (no binary files in the repository): small files that cost a decoder
far more than their size suggests, or that decode to something other than what they hold.

- :func:`scan_bomb_jpeg`: a flat progressive JPEG whose last scan (a ~100-byte AC refinement scan that
  codes every block of the image with a few end-of-band runs) is repeated thousands of times; libjpeg
  re-walks every block of the image for each copy (only warning that the progression is bogus), so the
  decode time grows with the number of copies, not with the file size.
- :func:`rle8_bomb_bmp`: an RLE8 BMP of one pixel then end-of-line per row; Pillow's RLE decoder is
  Python and pads each row to its width one byte at a time.
- :func:`rle_nop_bomb_bmp`: an RLE8 or RLE4 BMP within the RLE pixel limit whose runs after its first row add no
  pixel: millions of codes, each a turn of that decoder's loop, for a megapixel.
- :func:`short_progressive_jpeg`: a progressive JPEG whose frame header declares a much larger image
  than its scans code; libjpeg fills the missing blocks with zeros (a mostly gray image), with no error.
- :func:`marker_flood_jpeg`, :func:`chunk_flood_png`, :func:`strip_flood_tiff`: tiny images padded with
  segments that Pillow handles one by one in Python (empty COM markers, unknown PNG chunks, TIFF strips
  that all point at the same bytes): cost per byte of upload 10-100 times that of a photo.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image

SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


def jpeg_segments(data: bytes) -> list[tuple[int, int, int]]:
    """(marker, start, end) of each segment of a well-formed JPEG such as Pillow writes, in order; a scan's
    segment runs from its SOS marker to the end of its entropy-coded data. Not a validator."""
    assert data[:2] == b"\xff\xd8", "not a JPEG"
    out, pos = [(0xD8, 0, 2)], 2
    while pos < len(data):
        assert data[pos] == 0xFF, f"no marker at {pos}"
        marker = data[pos + 1]
        if marker == 0xD9:
            out.append((marker, pos, pos + 2))
            break
        end = pos + 2 + struct.unpack(">H", data[pos + 2 : pos + 4])[0]
        if marker == 0xDA:  # entropy-coded data: up to the next marker that is not stuffing or a restart
            while not (data[end] == 0xFF and data[end + 1] not in (0x00, *range(0xD0, 0xD8))):
                end += 1
        out.append((marker, pos, end))
        pos = end
    return out


def _progressive(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", progressive=True, quality=90)
    return buf.getvalue()


def scan_bomb_jpeg(side: int = 7000, scans: int = 7000) -> bytes:
    """A flat gray ``side`` x ``side`` progressive JPEG whose final AC refinement scan is there ``scans``
    times (7000 x 7000 with 7000 copies: about 0.9 MB, and two minutes of libjpeg's time)."""
    data = _progressive(Image.new("L", (side, side), 128))
    segments = jpeg_segments(data)
    # The last scan of libjpeg's progression for one component: AC 1-63, successive approximation Ah=1 Al=0.
    marker, start, end = [s for s in segments if s[0] == 0xDA][-1]
    ns = data[start + 4]
    ss, se, a = data[start + 5 + 2 * ns : start + 8 + 2 * ns]
    assert (ss, se, a >> 4) == (1, 63, 1), "expected an AC refinement scan last"
    return data[:end] + data[start:end] * (scans - 1) + data[end:]


def short_progressive_jpeg(declared: tuple[int, int] = (7000, 7000), actual: tuple[int, int] = (900, 600)) -> bytes:
    """A progressive colour JPEG that codes an ``actual`` (width, height) photo-like image, its frame header
    rewritten to declare ``declared``: every scan ends long before the blocks it should code."""
    width, height = actual
    rng = np.random.default_rng(13)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height)], axis=-1)
    rgb = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    data = bytearray(_progressive(Image.fromarray(rgb)))
    start = next(s for m, s, _ in jpeg_segments(bytes(data)) if m in SOF_MARKERS)
    struct.pack_into(">HH", data, start + 5, declared[1], declared[0])  # after marker, length, precision
    return bytes(data)


def rle8_bomb_bmp(width: int = 50000, height: int = 1000) -> bytes:
    """A ``width`` x ``height`` 8-bit BMP, RLE8-compressed: each row is one pixel then end-of-line, so the
    file is ~4 bytes a row (50000 x 1000: 5 KB) whatever the width."""
    palette = b"".join(bytes((i, i, i, 0)) for i in range(256))
    pixels = b"\x01\x80\x00\x00" * height + b"\x00\x01"  # (1 pixel of index 128, end of line) per row; end
    offset = 14 + 40 + len(palette)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 1, len(pixels), 2835, 2835, 256, 0)
    return b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset) + info + palette + pixels


def rle_nop_bomb_bmp(width: int = 1000, height: int = 1000, codes: int = 25_000_000, rle4: bool = False) -> bytes:
    """A ``width`` x ``height`` BMP, RLE8 (or RLE4) compressed: its first row filled by runs, then ``codes`` runs
    that add no pixel (a row is full: Pillow clips each run to nothing), then end of bitmap. 1000 x 1000 with
    25 M codes: 50 MB, each code a turn of Pillow's Python decoder loop."""
    colours = 16 if rle4 else 256
    palette = b"".join(bytes((i * 255 // (colours - 1),) * 3 + (0,)) for i in range(colours))
    first_row = b"\xff\x11" * (width // 255) + (bytes((width % 255, 0x11)) if width % 255 else b"")
    pixels = first_row + b"\x01\x11" * codes + b"\x00\x01"
    offset = 14 + 40 + len(palette)
    bits, compression = (4, 2) if rle4 else (8, 1)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, bits, compression, len(pixels), 2835, 2835, colours, 0)
    return b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset) + info + palette + pixels


def _small_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (180, 120, 90)).save(buf, "JPEG")
    return buf.getvalue()


def marker_flood_jpeg(markers: int = 250_000) -> bytes:
    """A 64 x 48 JPEG with ``markers`` empty COM segments (4 bytes each) before its first one."""
    data = _small_jpeg()
    return data[:2] + b"\xff\xfe\x00\x02" * markers + data[2:]


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def chunk_flood_png(chunks: int = 100_000) -> bytes:
    """A 64 x 48 PNG with ``chunks`` empty ancillary chunks (12 bytes each) before its image data."""
    rows = b"".join(b"\x00" + bytes((180, 120, 90)) * 64 for _ in range(48))
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 64, 48, 8, 2, 0, 0, 0))
        + _png_chunk(b"zzZz", b"") * chunks
        + _png_chunk(b"IDAT", zlib.compress(rows))
        + _png_chunk(b"IEND", b"")
    )


def strip_flood_tiff(width: int = 1000, height: int = 1000) -> bytes:
    """An uncompressed 8-bit gray ``width`` x ``height`` TIFF in 1 x 1 tiles that all point at the same byte:
    8 bytes of tile tables per pixel (1000 x 1000: 8 MB), each tile read by Pillow in Python."""
    tiles = width * height
    tables = 8 + 2  # pixel byte at 8, padding; then the offsets, the byte counts and the IFD
    offsets, counts = struct.pack(f"<{tiles}I", *[8] * tiles), struct.pack(f"<{tiles}I", *[1] * tiles)
    ifd_at = tables + len(offsets) + len(counts)
    tags = [  # (tag, type, count, value): ImageWidth, ImageLength, BitsPerSample, Compression (none),
        (256, 4, 1, width),  # Photometric (min-is-black), SamplesPerPixel, TileWidth, TileLength,
        (257, 4, 1, height),  # TileOffsets, TileByteCounts
        (258, 3, 1, 8),
        (259, 3, 1, 1),
        (262, 3, 1, 1),
        (277, 3, 1, 1),
        (322, 4, 1, 1),
        (323, 4, 1, 1),
        (324, 4, tiles, tables),
        (325, 4, tiles, tables + len(offsets)),
    ]
    ifd = struct.pack("<H", len(tags)) + b"".join(struct.pack("<HHII", *tag) for tag in tags) + bytes(4)
    return b"II*\x00" + struct.pack("<I", ifd_at) + b"\x80\x00" + offsets + counts + ifd
