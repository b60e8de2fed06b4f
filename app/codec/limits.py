"""The up-front decode checks: the errors decoding raises, the accepted formats' signatures, and limits on the work
a file can ask of the decoders.

The pixel limit bounds the memory of a decode and the work of one pass over the image; ``check_upfront`` reads a
file's signature and walks its headers before Pillow parses anything, refusing what would cost far more than its
pixels and bytes suggest (the limits below, each with its reason).
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass


class UnsupportedImage(ValueError):
    """Not an image in an accepted format (HTTP 415)."""


class CorruptImage(ValueError):
    """Recognised as an image but cannot be decoded (HTTP 422)."""


class ImageTooLarge(ValueError):
    """Over the configured pixel limit, or over a limit on the work a file may ask of its decoder (HTTP 413)."""


# The limits bound what a file can add to its pixels' cost whatever its bytes: passes over the image (JPEG scans),
# the per-segment Python work of Pillow's parsers (JPEG markers, PNG chunks, TIFF strips and tiles), Pillow's
# Python RLE decoder (BMP: its codes as well as its pixels), and scans too short for the image their frame
# declares (libjpeg would decode them, filling the rest with gray). Each check reads headers only: well under a
# millisecond for a photo; at worst a regex scan for the next JPEG marker, a few ns per byte of upload (0.5 s for
# 50 MB of 0xFF fill bytes).

JPEG_MAX_SCANS = 100
"""Most scans a JPEG may hold. libjpeg decodes every scan a file holds, and each walks all the blocks it covers: a
~100-byte scan of end-of-band runs costs tens of ms at 49 MP, so 7000 copies of one cost minutes. Encoders write
about 10 (libjpeg's and mozjpeg's progressions: 10 for colour, 6 for gray; baseline: 1 to 3), and libtiff stops a
JPEG inside a TIFF past the same 100 (LIBTIFF_JPEG_MAX_ALLOWED_SCAN_NUMBER). 100 scans bound a decode to a few times
that of a progressive photo of the same size (49 MP gray: 3.2 s against 0.7 s)."""
JPEG_MAX_SEGMENTS = 10_000
"""Most marker segments a JPEG may hold (restart markers do not count). A photo has tens (APPn, DQT, DHT, SOF,
one SOS per scan); Pillow parses each segment before the first scan in Python (~1 us each)."""
PNG_MAX_CHUNKS = 65_536
"""Most chunks a PNG may hold: Pillow handles each in Python (~4 us). libpng writes 8 KiB IDAT chunks, so 65536
chunks is a 512 MiB PNG; past it the chunks are there to cost time (about 0.2 s at this limit)."""
TIFF_MAX_STRIPS = 65_536
"""Most strips or tiles the first IFD of a TIFF may list. Pillow reads an uncompressed TIFF strip by strip in
Python (~7 us each), and nothing ties their number to the image (offsets may all point at the same bytes): 8 MB
of them took 7 s. libtiff writes ~8 KiB strips, one row each in a wide photo: 65536 rows is far beyond a
50 MP photo."""
RLE_BMP_MAX_PIXELS = 1_000_000
"""Largest RLE-compressed BMP (RLE8, RLE4). Pillow's RLE decoder is Python and pads a row one byte at a time after
an end-of-line code: up to ~0.2 us a pixel whatever the file size (a 5 KB 50000x1000 file took 10-18 s). RLE BMPs
are palette icons and clip art, never camera photos; a 1 MP one decodes within ~0.2 s."""
RLE_BMP_MAX_CODES_PER_PIXEL = 2
"""Most RLE codes an RLE8/RLE4 BMP may hold per pixel (and row) of its image. Pillow's decoder takes each code in a
turn of its Python loop (~0.6 us), and runs past the end of a row are clipped to nothing, so a 1 MP file can ask for
25 M turns in 50 MB (12 s). An encoder writes at most one code per pixel (runs of one), one end-of-line per row and
an end-of-bitmap; every code is two bytes at least, so the bytes after the pixel-data offset bound the codes read."""

_JPEG_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
"""The next marker the way libjpeg finds it, in a scan's data or between segments: 0xFF 0x00 is a stuffed data
byte, a run of 0xFF is fill, and restart markers (0xFFD0-D7) belong to the scan around them."""
_JPEG_NO_LENGTH = frozenset({0x01, 0xD8})  # TEM, SOI: no length field follows (libjpeg fails at a second SOI)
_JPEG_FRAMES = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})  # SOFn
# Huffman-coded frames whose scans have a minimum size: every 8x8 block costs at least one Huffman code of one bit
# in the scan that first codes it (two in a sequential scan: DC and an AC code), every sample of a lossless frame one.
_JPEG_BITS_PER_UNIT = {0xC0: 2, 0xC1: 2, 0xC2: 1, 0xC3: 1}


SIGNATURES = {  # leading bytes -> the accepted format they announce (WebP and HEIF: see ``signature``)
    b"\xff\xd8\xff": "jpeg",
    b"\x89PNG\r\n\x1a\n": "png",
    b"II*\x00": "tiff",
    b"MM\x00*": "tiff",
    b"II+\x00": "tiff",  # BigTIFF
    b"MM\x00+": "tiff",
    b"BM": "bmp",
}
HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1")


def signature(data: bytes) -> str | None:
    """The accepted format ``data`` starts like (jpeg, png, tiff, bmp, webp, heif), else None."""
    found = next((fmt for magic, fmt in SIGNATURES.items() if data.startswith(magic)), None)
    if found is None and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if found is None and data[4:8] == b"ftyp" and data[8:12] in HEIF_BRANDS:
        return "heif"
    return found


def check_upfront(data: bytes, max_pixels: int) -> str | None:
    """The format ``data``'s signature announces (None: no accepted format's), after refusing a file whose decode
    would cost far more than its pixels and bytes suggest (see the limits above)."""
    fmt = signature(data)
    if fmt == "jpeg":
        _check_jpeg(data, max_pixels)
    elif fmt == "png":
        _check_png(data)
    elif fmt == "tiff":
        _check_tiff(data)
    elif fmt == "bmp":
        _check_bmp(data)
    return fmt


@dataclass
class _JpegFrame:
    marker: int  # SOFn
    width: int
    height: int
    units: dict[int, int]  # component id -> 8x8 blocks it has (samples, in a lossless frame)


def _jpeg_frame(marker: int, body: bytes) -> _JpegFrame | None:
    """The frame a SOF segment declares; None when libjpeg would refuse it anyway."""
    if len(body) < 6 or len(body) < 6 + 3 * body[5] or body[5] == 0:
        return None
    height, width = struct.unpack_from(">HH", body, 1)
    comps = [(body[i], body[i + 1] >> 4, body[i + 1] & 15) for i in range(6, 6 + 3 * body[5], 3)]
    if any(h < 1 or v < 1 for _, h, v in comps):
        return None
    hmax, vmax = max(h for _, h, _ in comps), max(v for _, _, v in comps)
    unit = 1 if marker in (0xC3, 0xC7, 0xCB, 0xCF) else 8  # lossless frames code samples, the others 8x8 blocks
    units = {
        cid: -(-width * h // (unit * hmax)) * -(-height * v // (unit * vmax)) for cid, h, v in comps
    }  # libjpeg's width_in_blocks x height_in_blocks: what a non-interleaved scan codes, an interleaved one more
    return _JpegFrame(marker, width, height, units)


def _check_jpeg(data: bytes, max_pixels: int) -> None:
    """Walk a JPEG's markers as libjpeg does, up to its EOI: at most ``JPEG_MAX_SCANS`` scans and
    ``JPEG_MAX_SEGMENTS`` segments; and when its frame is within the pixel limit and Huffman-coded, every
    component coded by a scan at least as long as the minimum code of its blocks (shorter: it was cut, or its
    frame header declares a larger image than it holds, and libjpeg would fill the rest with gray). Arithmetic-coded
    scans have no such minimum. A walk that runs off the end (a truncated file) is left to Pillow to report."""
    frame: _JpegFrame | None = None
    coded: set[int] = set()
    frames = scans = segments = 0
    pos = 2
    while True:
        found = _JPEG_NEXT_MARKER.search(data, pos)
        if found is None:
            return
        segments += 1
        if segments > JPEG_MAX_SEGMENTS:
            raise ImageTooLarge(
                f"JPEG has more than {JPEG_MAX_SEGMENTS} marker segments; the limit is {JPEG_MAX_SEGMENTS}"
            )
        marker, pos = data[found.start() + 1], found.end()
        if marker == 0xD9:  # EOI: libjpeg reads no further (an MPO's other images follow it)
            break
        if marker in _JPEG_NO_LENGTH:
            continue
        if pos + 2 > len(data):
            return
        length = max(2, int.from_bytes(data[pos : pos + 2], "big"))  # libjpeg goes on after a bogus 0 or 1
        body, pos = data[pos + 2 : pos + length], pos + length
        if marker in _JPEG_FRAMES and not frames:  # libjpeg fails at a second one
            frames += 1
            frame = _jpeg_frame(marker, body)
            if frame and (frame.width * frame.height > max_pixels or not frame.width or not frame.height):
                frame = None  # 413 or 422 from the header, after Pillow opens it
        elif marker == 0xDA:
            scans += 1
            if scans > JPEG_MAX_SCANS:
                raise ImageTooLarge(
                    f"JPEG has more than {JPEG_MAX_SCANS} scans; the limit is {JPEG_MAX_SCANS} "
                    "(a progressive photo has about 10)"
                )
            end = _JPEG_NEXT_MARKER.search(data, pos)
            if end is None:
                return
            if frame:
                _check_jpeg_scan(frame, body, end.start() - pos, coded)
            pos = end.start()
    if frame and frame.marker in _JPEG_BITS_PER_UNIT:
        missing = sorted(set(frame.units) - coded)
        if missing:
            raise CorruptImage(
                f"corrupt or truncated JPEG: no scan codes component {missing[0]} "
                f"of its {frame.width}x{frame.height} image"
            )


def _check_jpeg_scan(frame: _JpegFrame, header: bytes, size: int, coded: set[int]) -> None:
    """A scan that first codes components' blocks (``size`` bytes of data after its SOS ``header``) is long enough."""
    bits = _JPEG_BITS_PER_UNIT.get(frame.marker)
    if not bits or not header or len(header) < 4 + 2 * header[0]:
        return
    ns = header[0]
    ids = set(header[1 : 1 + 2 * ns : 2])
    ss, ah = header[1 + 2 * ns], header[3 + 2 * ns] >> 4
    if frame.marker == 0xC2 and (ss != 0 or ah != 0):  # progressive: only a first DC scan codes every block
        return
    coded.update(ids)
    units = sum(frame.units.get(cid, 0) for cid in ids)
    if size * 8 < units * bits:
        raise CorruptImage(
            f"corrupt or truncated JPEG: a scan of {size} bytes cannot code the {units} blocks of its "
            f"{frame.width}x{frame.height} image (it needs {-(-units * bits // 8)} bytes at least)"
        )


def _check_png(data: bytes) -> None:
    """At most ``PNG_MAX_CHUNKS`` chunks up to IEND."""
    pos, chunks = 8, 0
    while pos + 8 <= len(data) and data[pos + 4 : pos + 8] != b"IEND":
        chunks += 1
        if chunks > PNG_MAX_CHUNKS:
            raise ImageTooLarge(f"PNG has more than {PNG_MAX_CHUNKS} chunks; the limit is {PNG_MAX_CHUNKS}")
        pos += 12 + int.from_bytes(data[pos : pos + 4], "big")


def _check_tiff(data: bytes) -> None:
    """At most ``TIFF_MAX_STRIPS`` strips or tiles in the first IFD (the image Pillow opens), classic or BigTIFF."""
    order = "<" if data[:2] == b"II" else ">"
    big = data[2:4] in (b"+\x00", b"\x00+")
    try:
        if big:
            ifd = struct.unpack_from(order + "Q", data, 8)[0]
            count, entry, fmt = struct.unpack_from(order + "Q", data, ifd)[0], 20, order + "HHQ8x"
            start = ifd + 8
        else:
            ifd = struct.unpack_from(order + "I", data, 4)[0]
            count, entry, fmt = struct.unpack_from(order + "H", data, ifd)[0], 12, order + "HHI4x"
            start = ifd + 2
    except struct.error:  # no IFD where the header says: Pillow reports it
        return
    count = min(count, (len(data) - start) // entry)
    for tag, _, values in struct.iter_unpack(fmt, data[start : start + count * entry]):
        if tag in (273, 324) and values > TIFF_MAX_STRIPS:  # StripOffsets, TileOffsets
            raise ImageTooLarge(f"TIFF has {values} strips or tiles; the limit is {TIFF_MAX_STRIPS}")


def _check_bmp(data: bytes) -> None:
    """An RLE8/RLE4 BMP holds room for at most ``RLE_BMP_MAX_CODES_PER_PIXEL`` codes per pixel and row."""
    if len(data) < 34:
        return  # Pillow reports a header this short
    offset, header = struct.unpack_from("<II", data, 10)
    if header < 40:  # OS/2 1.x core header: no compression field
        return
    width, height, _, _, compression = struct.unpack_from("<iiHHI", data, 18)
    if compression not in (1, 2):  # BI_RLE8, BI_RLE4
        return
    codes = max(len(data) - offset, 0) // 2
    allowed = RLE_BMP_MAX_CODES_PER_PIXEL * (abs(width) * abs(height) + abs(height) + 1)
    if codes > allowed:
        raise ImageTooLarge(
            f"RLE-compressed BMP of {width}x{abs(height)} pixels holds room for {codes} RLE codes; the limit is "
            f"{allowed} ({RLE_BMP_MAX_CODES_PER_PIXEL} per pixel and row)"
        )
