"""The public pipeline, timed: ``app.pipeline.correct_upload`` and the stage times it reports.

``Bench.run`` calls the same function the route and the CLI call, with the service's ``Limits``
(from ``Settings``, so ``WBVAE_*`` apply) and a ``Corrector`` set up as the service sets it up
(``limit_cpu_threads``, ``warm_up``); its stage times are the pipeline's own ``Result.stages``
(decode, model, mapping, encode), the same numbers the service's metrics record.

``Bench.floor`` is the codec floor beside it: the decode and the encode alone, no model and no
mapping. ``map_on_device=False`` (CUDA only) keeps the model on the GPU and maps on the CPU inside the
encoder, to compare the two placements of the mapping.
"""

from __future__ import annotations

import time

from app.formats import output_format
from app.imaging import decode, encode
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
        is Pillow's, so the two are the same)."""
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
        else:
            t["pillow"] = t["own"]
        return t
