"""A PNG writer that filters rows with NumPy and compresses strips on several threads (pigz-style).

The image is cut into strips of about ``STRIP_BYTES`` of filtered rows. Each strip is, on a
worker thread: optionally mapped (``map_rows``: the colour correction, so mapping overlaps
compression and no full-size corrected copy is ever held), interleaved with alpha, Paeth-filtered
(every row; the filter Pillow's adaptive choice picks for nearly every row of a photo) and
compressed as raw deflate by its own ``zlib.compressobj`` ending in ``Z_SYNC_FLUSH`` (the last
strip in ``Z_FINISH``), so the pieces concatenate into one valid deflate stream. The zlib stream
is one two-byte header, the pieces, and the Adler-32 of all filtered bytes, combined from the
strips' own (``adler32_combine``). Each piece is written as its own IDAT chunk. zlib, Adler-32,
CRC-32 and NumPy's ufuncs release the GIL, so the strips really run in parallel.

A strip's Paeth filter needs the raw row above it: a worker maps one extra row (the previous
strip's last) instead of waiting for its neighbour. Lossless whatever the level and strategy;
written chunks are Pillow's for the same image and options: IHDR, iCCP, eXIf, IDAT..., IEND.
"""

from __future__ import annotations

import math
import os
import struct
import threading
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"
STRIP_BYTES = 1 << 19  # filtered bytes per strip (about 41 rows of a 12 MP RGB photo)
ADLER_BASE = 65521
PAETH = 4
NONE = 0
ZLIB_HEADER = b"\x78\x01"  # deflate, 32 KB window, no preset dictionary

MapRows = Callable[[np.ndarray], np.ndarray]


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


def adler32_combine(adler1: int, adler2: int, len2: int) -> int:
    """Adler-32 of ``A + B`` from those of ``A`` and ``B`` and ``len(B)`` (zlib's ``adler32_combine``)."""
    rem = len2 % ADLER_BASE
    sum1 = adler1 & 0xFFFF
    sum2 = (rem * sum1) % ADLER_BASE
    sum1 = (sum1 + (adler2 & 0xFFFF) + ADLER_BASE - 1) % ADLER_BASE
    sum2 = (sum2 + (adler1 >> 16) + (adler2 >> 16) + ADLER_BASE - rem) % ADLER_BASE
    return sum1 | (sum2 << 16)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)))


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
        level: int,
        strategy: int,
    ):
        self.layout, self.pixels, self.alpha, self.map_rows = layout, pixels, alpha, map_rows
        self.level, self.strategy = level, strategy
        n, width, bpp = rows, layout.row_bytes, layout.bpp
        self.filter = PAETH if level > 0 else NONE  # stored blocks gain nothing from a filter
        self.out = np.empty((n, 1 + width), np.uint8)  # filter byte + filtered row
        self.out[:, 0] = self.filter
        self.inter = np.empty((n + 1, layout.width, layout.samples), np.uint8) if alpha is not None else None
        if self.filter == PAETH:
            self.wide = np.zeros((n + 1, bpp + width), np.int16)  # row above first, bpp zero bytes on the left
            self.d1, self.d2, self.pc, self.pred = (np.empty((n, width), np.int16) for _ in range(4))
            self.ma, self.mb = np.empty((n, width), bool), np.empty((n, width), bool)

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
        n = stop - start
        first = start - 1 if start > 0 and self.filter == PAETH else start
        raw = self._raw_rows(first, stop)
        out = self.out[:n]
        if self.filter == PAETH:
            self._paeth(raw, start > 0, out[:, 1:])
        else:
            out[:, 1:] = raw
        comp = zlib.compressobj(self.level, zlib.DEFLATED, -15, 9, self.strategy)
        piece = comp.compress(out.data) + comp.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)
        crc = zlib.crc32(piece, zlib.crc32(b"IDAT" + (ZLIB_HEADER if start == 0 else b"")))
        return piece, zlib.adler32(out.data), out.nbytes, crc

    def _paeth(self, raw: np.ndarray, has_above: bool, dst: np.ndarray) -> None:
        """PNG's Paeth filter of ``raw`` (with the row above it first when ``has_above``) into ``dst``."""
        bpp, n = self.layout.bpp, dst.shape[0]
        wide = self.wide[: n + 1]
        if has_above:
            wide[:, bpp:] = raw
        else:
            wide[0, bpp:] = 0
            wide[1:, bpp:] = raw
        x, a = wide[1:, bpp:], wide[1:, :-bpp]  # the byte, the one bpp to its left,
        b, c = wide[:-1, bpp:], wide[:-1, :-bpp]  # the one above, above-left (zero outside the image)
        d1, d2, pc, pred, ma, mb = (t[:n] for t in (self.d1, self.d2, self.pc, self.pred, self.ma, self.mb))
        np.subtract(b, c, out=d1)  # p - a, where p = a + b - c
        np.subtract(a, c, out=d2)  # p - b
        np.add(d1, d2, out=pc)  # p - c
        np.abs(pc, out=pc)
        np.abs(d1, out=d1)
        np.abs(d2, out=d2)
        np.less_equal(d1, d2, out=ma)  # a if pa <= pb and pa <= pc
        np.less_equal(d1, pc, out=mb)
        ma &= mb
        np.less_equal(d2, pc, out=mb)  # else b if pb <= pc, else c
        np.copyto(pred, c)
        np.copyto(pred, b, where=mb)
        np.copyto(pred, a, where=ma)
        np.subtract(x, pred, out=dst, casting="unsafe")  # modulo 256


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
    strategy: int = zlib.Z_RLE,
    icc_profile: bytes | None = None,
    exif: bytes | None = None,
    map_rows: MapRows | None = None,
    threads: int = 0,
    strip_bytes: int = STRIP_BYTES,
) -> bytes:
    """PNG bytes of uint8 ``(H, W, 3)`` RGB or uint8/uint16 ``(H, W)`` grayscale pixels, plus optional alpha.

    ``map_rows`` (rows -> same-shaped rows) is applied to each strip of ``pixels`` before it is written.
    ``threads``: worker threads (0: one per core; 1: the calling thread only).
    """
    layout = _Layout(pixels, alpha)
    if not 0 <= compress_level <= 9:
        raise ValueError(f"compress_level must be 0-9, got {compress_level}")
    rows = max(1, min(layout.height, strip_bytes // (1 + layout.row_bytes)))
    strips = [(s, min(s + rows, layout.height)) for s in range(0, layout.height, rows)]
    workers = max(1, min(threads or default_threads(), len(strips)))
    results: list = [None] * len(strips)

    def work() -> None:
        coder = _StripCoder(layout, pixels, alpha, map_rows, rows, compress_level, strategy)
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
            crc = zlib.crc32(trailer, crc)
        idat += [struct.pack(">I", sum(map(len, data))), b"IDAT", *data, struct.pack(">I", crc)]
    return b"".join([*head, *idat, _chunk(b"IEND", b"")])
