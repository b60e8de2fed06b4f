"""The public pipeline, timed: ``app.pipeline.correct_upload`` and the stage times it reports.

``Bench.run`` calls the same function the route and the CLI call, with the service's ``Limits``
(from ``Settings``, so ``WBVAE_*`` apply) and a ``Corrector`` set up as the service sets it up
(``limit_cpu_threads``, ``warm_up``); its stage times are the pipeline's own ``Result.stages``
(decode, model, mapping, encode), the same numbers the service's metrics record.

``Bench.floor`` is the codec floor beside it: the decode and the encode alone, no model and no
mapping; for PNG also issue 14's floor, the decode plus ONE thread of ISA-L level-1 deflate of the
decoded photo's Paeth-filtered rows (``isal``; the filtering done beforehand, outside the clock).

``Bench.png_stages`` splits the PNG writer's work on one thread into its steps (map, filter, deflate).

``map_on_device=False`` (CUDA only) keeps the model on the GPU and maps on the CPU inside the
encoder, to compare the two placements of the mapping.
"""

from __future__ import annotations

import time

import numpy as np
from isal import isal_zlib

from app.codec import decode, encode, output_format, png
from app.pipeline import Limits, Options, correct_upload
from app.settings import Settings
from model.corrector import Corrector

STAGES = ("decode", "model", "mapping", "encode")


def service_limits(settings: Settings | None = None) -> Limits:
    """The ``Limits`` the service builds from its settings."""
    s = settings or Settings()
    return Limits(
        max_pixels=s.max_pixels,
        strip_gps=s.strip_gps,
        png_compress_level=s.png_compress_level,
        encode_threads=s.encode_threads,
    )


class Bench:
    """One corrector, set up as the service sets it up, and the pipeline's limits."""

    def __init__(
        self,
        device: str = "cpu",
        map_on_device: bool = True,
        corrector: Corrector | None = None,
        limits: Limits | None = None,
        quality: int | None = None,
    ):
        settings = Settings()
        self.corrector = corrector or Corrector.from_checkpoint(
            settings.checkpoint, device, map_on_device=map_on_device
        )
        self.corrector.limit_cpu_threads()  # once per process, as the service's start-up does
        self.corrector.warm_up()
        self.limits = limits or service_limits(settings)
        self.quality = quality or settings.default_quality
        mapping = self.corrector.mapping_device
        self.label = mapping.type if mapping is not None else "cpu"  # where whole photos are mapped

    def run(self, data: bytes, fmt: str) -> tuple[float, dict[str, float], bytes]:
        """One correction through ``correct_upload``: wall seconds, the pipeline's stage seconds, the output."""
        options = Options(output_format(fmt), quality=self.quality)
        start = time.perf_counter()
        result = correct_upload(self.corrector, data, options, self.limits)
        return time.perf_counter() - start, result.stages, result.body

    def floor(self, data: bytes, fmt: str) -> dict[str, float]:
        """The codec floor: seconds of ``decode`` and of encoding the corrected pixels with the service's
        encoder (``own``: all encode threads; the mapping done beforehand, outside the clock) and, for PNG,
        Pillow's PNG encoder (``pillow``: level 1, Z_RLE, one thread; for JPEG/WebP the service's encoder
        is Pillow's, so the two are the same) and ISA-L's level-1 deflate on one thread of the decoded
        photo's filtered rows (``isal``, PNG only: issue 14's floor)."""
        start = time.perf_counter()
        image = decode(data, self.limits.max_pixels, self.limits.strip_gps)
        t = {"decode": time.perf_counter() - start}
        pixels = self.corrector.estimate(image.rgb).map_rows(image.rgb)
        kw = {"quality": self.quality, "exif": image.exif, "compress_level": self.limits.png_compress_level}
        start = time.perf_counter()
        encode(pixels, image.alpha, fmt, threads=self.limits.encode_threads, **kw)
        t["own"] = time.perf_counter() - start
        if output_format(fmt).name == "png":
            start = time.perf_counter()
            encode(pixels, image.alpha, fmt, png_writer="pillow", **kw)
            t["pillow"] = time.perf_counter() - start
            rows = filtered_rows(image.gray if image.gray is not None else image.rgb, image.alpha)
            start = time.perf_counter()
            isal_zlib.compress(rows, 1)
            t["isal"] = time.perf_counter() - start
        else:
            t["pillow"] = t["own"]
        return t

    def png_stages(self, data: bytes) -> dict[str, float]:
        """Seconds of each step of the PNG writer (``app.codec.png``, the service's level) for one photo on one
        thread, strip by strip as the writer runs them: ``map`` (the correction's row mapping, plus alpha
        interleaving), ``filter`` (Paeth), ``deflate`` (ISA-L, with the chunk's CRC-32 and Adler-32); and
        ``mb``, the deflated size in MB. On CUDA, where the photo is mapped on the device, ``map`` is 0."""
        image = decode(data, self.limits.max_pixels, self.limits.strip_gps)
        pixels, map_rows = self.corrector.estimate(image.rgb).prepare(
            image.gray if image.gray is not None else image.rgb
        )
        layout = png._Layout(pixels, image.alpha)
        rows = max(1, min(layout.height, png.STRIP_BYTES // (1 + layout.row_bytes)))
        level = png.isal_level(self.limits.png_compress_level)
        coder = png._StripCoder(layout, pixels, image.alpha, map_rows, rows, level)
        t = {"map": 0.0, "filter": 0.0, "deflate": 0.0, "mb": 0.0}
        for start in range(0, layout.height, rows):
            stop = min(start + rows, layout.height)
            t0 = time.perf_counter()
            raw = coder.rows(start, stop)
            t1 = time.perf_counter()
            out = coder.filter(raw, start, stop)
            t2 = time.perf_counter()
            piece = coder.deflate(out, start == 0, stop == layout.height)[0]
            t3 = time.perf_counter()
            t["map"] += t1 - t0
            t["filter"] += t2 - t1
            t["deflate"] += t3 - t2
            t["mb"] += len(piece) / 2**20
        return t


def filtered_rows(pixels: np.ndarray, alpha: np.ndarray | None = None) -> bytes:
    """The PNG image data of ``pixels`` (uint8 RGB or uint8/uint16 gray, plus optional uint8 alpha) before
    compression: every row Paeth-filtered (filter byte 4), whole image at once. A plain reference
    implementation, independent of ``app.codec.png``."""
    px = pixels if pixels.ndim == 3 else pixels[..., None]
    if pixels.dtype == np.uint16:
        px = px.astype(">u2")
    if alpha is not None:
        px = np.concatenate([px, alpha[..., None]], axis=2)
    h, w, ch = px.shape
    bpp = ch * px.dtype.itemsize
    raw = np.ascontiguousarray(px).view(np.uint8).reshape(h, w * bpp).astype(np.int16)
    wide = np.zeros((h + 1, bpp + w * bpp), np.int16)  # a zero row above, bpp zero bytes on the left
    wide[1:, bpp:] = raw
    a, b, c = wide[1:, :-bpp], wide[:-1, bpp:], wide[:-1, :-bpp]
    pa, pb, pc = np.abs(b - c), np.abs(a - c), np.abs(a + b - 2 * c)
    pred = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
    out = np.empty((h, 1 + w * bpp), np.uint8)
    out[:, 0] = 4
    out[:, 1:] = (raw - pred).astype(np.uint8)
    return out.tobytes()
