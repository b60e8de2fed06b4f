"""A PNG writer that filters rows with NumPy and deflates strips with ISA-L on several threads (pigz-style).

The image is cut into strips of about ``STRIP_BYTES`` of filtered rows. Each strip is, on a
worker thread: optionally mapped (``map_rows``: the colour correction, so mapping overlaps
compression and no full-size corrected copy is ever held), interleaved with alpha, Paeth-filtered
(every row; the filter Pillow's adaptive choice picks for nearly every row of a photo) and
compressed as raw deflate by its own ISA-L ``isal_zlib.compressobj`` ending in ``Z_SYNC_FLUSH``
(the last strip in ``Z_FINISH``), so the pieces concatenate into one valid deflate stream. The
zlib stream is one two-byte header, the pieces, and the Adler-32 of all filtered bytes, combined
from the strips' own (``adler32_combine``: ISA-L has none). Each piece is written as its own IDAT
chunk. ISA-L's deflate, Adler-32 and CRC-32 and NumPy's ufuncs release the GIL, so the strips
really run in parallel.

``compress_level`` keeps zlib's 0-9 scale (``WBVAE_PNG_COMPRESS_LEVEL``): 0 writes stored blocks
(zlib, no filter: no compression, as zlib's 0), 1-3 use ISA-L level 1, 4-6 level 2 and 7-9 level 3
(``isal_level``). ISA-L's levels differ little on photos (2 % in size at most, docs/benchmark.md).

The Paeth filter works on the uint8 bytes, no wider copies, in blocks of ``FILTER_BLOCK_BYTES``
that stay in cache, with a selection made of minimum/maximum and shifts instead of the spec's three
absolute differences (``_paeth_block``: the same predictor for every (a, b, c)). A strip's filter
needs the raw row above it: a worker maps one extra row (the previous strip's last) instead of
waiting for its neighbour. Lossless whatever the level; written chunks are Pillow's for the same
image and options: IHDR, iCCP, eXIf, IDAT..., IEND.
"""

from __future__ import annotations

import math
import os
import struct
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from isal import isal_zlib

from model.corrector import MapRows

SIGNATURE = b"\x89PNG\r\n\x1a\n"
STRIP_BYTES = 1 << 19  # filtered bytes per strip (about 41 rows of a 12 MP RGB photo)
FILTER_BLOCK_BYTES = 1 << 18  # rows Paeth-filtered at once: its six buffers stay in a core's L2 cache
ADLER_BASE = 65521
PAETH = 4
NONE = 0
ZLIB_HEADER = b"\x78\x01"  # deflate, 32 KB window, no preset dictionary


def default_threads(cpu_max: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """The cores this process may use: its CPU affinity, capped by a cgroup v2 CPU quota (a container's
    CPU limit; affinity alone would show every core of the host there)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    try:
        quota, period = cpu_max.read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cores


def isal_level(compress_level: int) -> int | None:
    """The ISA-L level (0-3) for a zlib-scale ``compress_level`` (0-9): 0 -> None (stored blocks, no
    compression, as zlib's 0), 1-3 -> 1, 4-6 -> 2, 7-9 -> 3."""
    if not 0 <= compress_level <= 9:
        raise ValueError(f"compress_level must be 0-9, got {compress_level}")
    return None if compress_level == 0 else (compress_level + 2) // 3


def adler32_combine(adler1: int, adler2: int, len2: int) -> int:
    """Adler-32 of ``A + B`` from those of ``A`` and ``B`` and ``len(B)`` (zlib's ``adler32_combine``)."""
    rem = len2 % ADLER_BASE
    sum1 = adler1 & 0xFFFF
    sum2 = (rem * sum1) % ADLER_BASE
    sum1 = (sum1 + (adler2 & 0xFFFF) + ADLER_BASE - 1) % ADLER_BASE
    sum2 = (sum2 + (adler1 >> 16) + (adler2 >> 16) + ADLER_BASE - rem) % ADLER_BASE
    return sum1 | (sum2 << 16)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", isal_zlib.crc32(data, isal_zlib.crc32(kind)))


class _Layout:
    """What one row of the output looks like: PNG colour type, bit depth, bytes per pixel and per row."""

    def __init__(self, pixels: np.ndarray, alpha: np.ndarray | None):
        gray = pixels.ndim == 2
        if not (gray or (pixels.ndim == 3 and pixels.shape[2] == 3)):
            raise ValueError(f"expected (H, W) or (H, W, 3) pixels, got shape {pixels.shape}")
        if pixels.dtype == np.uint16:
            if not gray or alpha is not None:
                raise ValueError("16-bit PNG output is grayscale without alpha only")
            self.depth = 16
        elif pixels.dtype == np.uint8:
            self.depth = 8
        else:
            raise ValueError(f"expected uint8 or uint16 pixels, got {pixels.dtype}")
        self.height, self.width = pixels.shape[:2]
        if alpha is not None and (alpha.shape != (self.height, self.width) or alpha.dtype != np.uint8):
            raise ValueError(f"alpha must be uint8 {(self.height, self.width)}, got {alpha.dtype} {alpha.shape}")
        self.gray = gray
        self.samples = (1 if gray else 3) + (alpha is not None)
        self.color_type = {1: 0, 2: 4, 3: 2, 4: 6}[self.samples]  # gray, gray+alpha, RGB, RGBA
        self.bpp = self.samples * self.depth // 8  # filter distance in bytes
        self.row_bytes = self.width * self.bpp

    def ihdr(self) -> bytes:
        return struct.pack(">IIBBBBB", self.width, self.height, self.depth, self.color_type, 0, 0, 0)


class _StripCoder:
    """One worker's reusable buffers; ``code(start, stop)`` returns that strip's compressed piece."""

    def __init__(
        self,
        layout: _Layout,
        pixels: np.ndarray,
        alpha: np.ndarray | None,
        map_rows: MapRows | None,
        rows: int,
        level: int | None,
    ):
        self.layout, self.pixels, self.alpha, self.map_rows = layout, pixels, alpha, map_rows
        self.level = level  # ISA-L level; None: stored blocks
        width, bpp = layout.row_bytes, layout.bpp
        self.out = np.empty((rows, 1 + width), np.uint8)  # filter byte + filtered row
        self.out[:, 0] = NONE if level is None else PAETH  # stored blocks gain nothing from a filter
        self.inter = np.empty((rows + 1, layout.width, layout.samples), np.uint8) if alpha is not None else None
        if level is not None:
            self.block = max(1, min(rows, FILTER_BLOCK_BYTES // width))
            shape = (self.block, width - bpp)
            self.lo, self.hi, self.t, self.s, self.h = (np.empty(shape, np.uint8) for _ in range(5))
            self.mask = np.empty(shape, bool)

    def _raw_rows(self, first: int, stop: int) -> np.ndarray:
        """Rows ``first..stop-1`` as PNG row bytes (mapped, alpha interleaved, 16-bit big-endian)."""
        px = self.pixels[first:stop]
        if self.map_rows is not None:
            px = self.map_rows(px)
        m = stop - first
        if self.alpha is not None:
            assert self.inter is not None  # allocated whenever there is alpha
            inter = self.inter[:m]
            if self.layout.gray:
                inter[..., 0] = px
            else:
                inter[..., :3] = px
            inter[..., -1] = self.alpha[first:stop]
            px = inter
        elif self.layout.depth == 16:
            px = px.astype(">u2")
        return np.ascontiguousarray(px).view(np.uint8).reshape(m, self.layout.row_bytes)

    def code(self, start: int, stop: int, last: bool) -> tuple[bytes, int, int, int]:
        """Rows ``start..stop-1``: (compressed piece, Adler-32 and length of the filtered bytes, CRC-32 of
        its IDAT chunk so far: type, the zlib header if ``start`` is 0, the piece)."""
        return self.deflate(self.filter(self.rows(start, stop), start, stop), start == 0, last)

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Step 1 of ``code``: the strip's raw rows (mapped), with the row above it first when the filter needs it."""
        return self._raw_rows(start - 1 if start > 0 and self.level is not None else start, stop)

    def filter(self, raw: np.ndarray, start: int, stop: int) -> np.ndarray:
        """Step 2: the filtered rows, filter type byte first (a view of this coder's buffer)."""
        out = self.out[: stop - start]
        if self.level is None:
            out[:, 1:] = raw
        else:
            self._paeth(raw, start > 0, out[:, 1:])
        return out

    def deflate(self, out: np.ndarray, first: bool, last: bool) -> tuple[bytes, int, int, int]:
        """Step 3: ``code``'s result from the filtered rows (``first``: the image's first strip)."""
        comp: Any
        if self.level is None:
            comp = zlib.compressobj(0, zlib.DEFLATED, -15)  # stored blocks
        else:
            comp = isal_zlib.compressobj(self.level, isal_zlib.DEFLATED, -15)  # raw deflate
        piece = comp.compress(out) + comp.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)
        crc = isal_zlib.crc32(piece, isal_zlib.crc32(b"IDAT" + (ZLIB_HEADER if first else b"")))
        return piece, isal_zlib.adler32(out), out.nbytes, crc

    def _paeth(self, raw: np.ndarray, has_above: bool, dst: np.ndarray) -> None:
        """PNG's Paeth filter of ``raw`` (with the row above it first when ``has_above``) into ``dst``."""
        if not has_above:  # the image's first row: b = c = 0, so Paeth predicts a (the Sub filter)
            bpp = self.layout.bpp
            dst[0, :bpp] = raw[0, :bpp]
            np.subtract(raw[0, bpp:], raw[0, :-bpp], out=dst[0, bpp:])
            dst = dst[1:]
        for i in range(0, dst.shape[0], self.block):
            self._paeth_block(raw[i : i + self.block + 1], dst[i : i + self.block])

    def _paeth_block(self, rows: np.ndarray, dst: np.ndarray) -> None:
        """Paeth of ``rows[1:]`` (``rows[0]``: the row above) into ``dst``, all in uint8 arithmetic.

        The spec predicts whichever of a (left), b (above), c (above left) is nearest to a + b - c,
        ties in that order. Equivalently, with lo = min(a, b), hi = max(a, b), c' = c clamped to
        [lo, hi], t = c' - lo and s = hi - c': hi when 2t <= s, else lo when 2s <= t, else c' (c' is
        c itself then); 2t <= s is t <= s >> 1 in integers. Checked against the spec for all 2^24
        (a, b, c) in tests/app/test_png.py.
        """
        bpp, m = self.layout.bpp, dst.shape[0]
        x, a, b, c = rows[1:, bpp:], rows[1:, :-bpp], rows[:-1, bpp:], rows[:-1, :-bpp]
        lo, hi, t, s, h, mask = (buf[:m] for buf in (self.lo, self.hi, self.t, self.s, self.h, self.mask))
        res = dst[:, bpp:]
        np.minimum(a, b, out=lo)
        np.maximum(a, b, out=hi)
        np.maximum(c, lo, out=t)
        np.minimum(t, hi, out=t)  # c'
        np.subtract(hi, t, out=s)  # s = hi - c'
        np.subtract(x, t, out=res)  # x - c' (modulo 256, as the filter's bytes are) ...
        np.subtract(t, lo, out=t)  # t = c' - lo
        np.right_shift(s, 1, out=h)
        np.less_equal(t, h, out=mask)  # 2t <= s: the prediction is hi = c' + s
        np.multiply(s, mask, out=h)
        np.subtract(res, h, out=res)
        np.right_shift(t, 1, out=h)
        np.less_equal(s, h, out=mask)  # 2s <= t: the prediction is lo = c' - t
        np.multiply(t, mask, out=h)
        np.add(res, h, out=res)
        np.subtract(rows[1:, :bpp], rows[:-1, :bpp], out=dst[:, :bpp])  # a = c = 0: Paeth predicts b


def map_strips(
    pixels: np.ndarray, map_rows: MapRows, threads: int = 0, strip_bytes: int = 4 * STRIP_BYTES
) -> np.ndarray:
    """``map_rows(pixels)``, computed in strips of rows on ``threads`` threads (0: one per core)."""
    rows = max(1, strip_bytes // max(1, pixels[0].nbytes))
    starts = range(0, pixels.shape[0], rows)
    workers = max(1, min(threads or default_threads(), len(starts)))
    if workers == 1:
        return map_rows(pixels)
    out = np.empty_like(pixels)

    def one(start: int) -> None:
        out[start : start + rows] = map_rows(pixels[start : start + rows])

    with ThreadPoolExecutor(workers, thread_name_prefix="map") as pool:
        list(pool.map(one, starts))
    return out


def encode_png(
    pixels: np.ndarray,
    alpha: np.ndarray | None = None,
    *,
    compress_level: int = 1,
    icc_profile: bytes | None = None,
    exif: bytes | None = None,
    map_rows: MapRows | None = None,
    threads: int = 0,
    strip_bytes: int = STRIP_BYTES,
) -> bytes:
    """PNG bytes of uint8 ``(H, W, 3)`` RGB or uint8/uint16 ``(H, W)`` grayscale pixels, plus optional alpha.

    ``compress_level``: zlib's 0-9 scale, mapped onto ISA-L's levels (``isal_level``). ``map_rows`` (rows ->
    same-shaped rows) is applied to each strip of ``pixels`` before it is written. ``threads``: worker
    threads (0: one per core; 1: the calling thread only).
    """
    layout = _Layout(pixels, alpha)
    level = isal_level(compress_level)
    rows = max(1, min(layout.height, strip_bytes // (1 + layout.row_bytes)))
    strips = [(s, min(s + rows, layout.height)) for s in range(0, layout.height, rows)]
    workers = max(1, min(threads or default_threads(), len(strips)))
    results: list = [None] * len(strips)

    def work() -> None:
        coder = _StripCoder(layout, pixels, alpha, map_rows, rows, level)
        while True:
            with lock:
                if not pending:
                    return
                i = pending.pop()
            results[i] = coder.code(*strips[i], last=i == len(strips) - 1)

    lock = threading.Lock()
    pending = list(range(len(strips)))[::-1]  # popped from the end: top strip first
    if workers == 1:
        work()
    else:
        with ThreadPoolExecutor(workers, thread_name_prefix="png") as pool:
            for future in [pool.submit(work) for _ in range(workers)]:
                future.result()

    adler = 1
    for _, piece_adler, length, _ in results:
        adler = adler32_combine(adler, piece_adler, length)
    head = [SIGNATURE, _chunk(b"IHDR", layout.ihdr())]
    if icc_profile:
        head.append(_chunk(b"iCCP", b"ICC Profile\0\0" + zlib.compress(icc_profile)))
    if exif:
        head.append(_chunk(b"eXIf", exif[6:] if exif.startswith(b"Exif\0\0") else exif))
    idat = []
    for i, (piece, _, _, crc) in enumerate(results):  # one IDAT per piece
        data = [ZLIB_HEADER, piece] if i == 0 else [piece]
        if i == len(results) - 1:
            trailer = struct.pack(">I", adler)
            data.append(trailer)
            crc = isal_zlib.crc32(trailer, crc)
        idat += [struct.pack(">I", sum(map(len, data))), b"IDAT", *data, struct.pack(">I", crc)]
    return b"".join([*head, *idat, _chunk(b"IEND", b"")])
