"""One correction: upload bytes -> decode -> model -> encode -> bytes, each stage timed.

Free of service plumbing: it takes the photo, the client's options and plain limits, and returns
the bytes with their stage times; the route records metrics, the CLI ignores them. Runs in a
worker thread (the route hands an ``Upload`` to the gate); raises plain ``ValueError`` subclasses
for bad input. The model is a ``Corrector``, or a ``ModelBatcher`` in front of one: both take a
photo and give its ``Correction``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np

from app.batcher import ModelBatcher, expecting
from app.codec import OutputFormat, check_output_size, decode, encode
from model.corrector import Correction, Corrector, MapRows


@dataclass(frozen=True)
class Options:
    """What the client asked for."""

    fmt: OutputFormat | None  # None: no pixels back, the correction only (POST /analyze)
    quality: int = 90  # JPEG/WebP quality, 1-100
    strength: float = 1.0  # 0: photo unchanged, 1: full correction
    kelvin: float | None = None  # render as a camera set to this white balance (None: the neutral output)
    tint: float = 0.0  # green (-) / magenta (+), photo editors' units
    adaptation: str = "full"  # "full" or "natural" (incomplete adaptation: the light's mood kept)


@dataclass(frozen=True)
class Limits:
    """What the operator allows and how the encoder works (from ``Settings``)."""

    max_pixels: int = 50_000_000
    strip_gps: bool = True
    png_compress_level: int = 1
    encode_threads: int = 0  # 0: one per core


@dataclass
class Result:
    """The corrected photo's bytes and what it took."""

    body: bytes
    megapixels: float
    correction: Correction  # as applied (strength, render)
    stages: dict[str, float] = field(default_factory=dict)  # seconds: decode, model, mapping, encode

    @property
    def inference_seconds(self) -> float:
        """Model plus mapping: the work a correction adds to decoding and encoding."""
        return self.stages.get("model", 0.0) + self.stages.get("mapping", 0.0)


class Abandoned(Exception):
    """Nobody waits for this correction any more (the client left or timed out): stopped between stages."""


def correct_upload(
    model: Corrector | ModelBatcher,
    data: bytes,
    options: Options,
    limits: Limits,
    abandoned: threading.Event | None = None,
) -> Result:
    """Upload bytes -> corrected image bytes in ``options.fmt`` (no ``fmt``: the correction only, empty bytes).

    With a ``ModelBatcher`` the model forward is shared with concurrent requests (``app.batcher``). When
    the correction maps rows inside the encoder (on the CPU), the fused map + encode wall time is
    apportioned between the two stages from the workers' own clocks. Once ``abandoned`` is set the
    work stops at the next stage boundary with ``Abandoned``, freeing its slot.
    """

    def check() -> None:
        if abandoned is not None and abandoned.is_set():
            raise Abandoned()

    stages: dict[str, float] = {}
    check()
    with expecting(model):
        start = time.perf_counter()
        image = decode(data, limits.max_pixels, limits.strip_gps)
        if options.fmt is not None:
            check_output_size(options.fmt, image.rgb.shape[1], image.rgb.shape[0])
        stages["decode"] = time.perf_counter() - start
        check()
        start = time.perf_counter()
        correction = model.estimate(image.rgb)
        stages["model"] = time.perf_counter() - start
    check()
    correction = (
        correction.adapted(options.adaptation).at_strength(options.strength).rendered_at(options.kelvin, options.tint)
    )
    if options.fmt is None:
        return Result(b"", image.megapixels, correction, stages)
    start = time.perf_counter()
    pixels, map_rows = correction.prepare(image.gray if image.gray is not None else image.rgb)
    stages["mapping"] = time.perf_counter() - start
    check()
    clock = StageClock(map_rows) if map_rows is not None else None
    start = time.perf_counter()
    body = encode(
        pixels,
        image.alpha,
        options.fmt.name,
        quality=options.quality,
        exif=image.exif,
        compress_level=limits.png_compress_level,
        map_rows=clock.map_rows if clock else None,
        threads=limits.encode_threads,
    )
    wall = time.perf_counter() - start
    fused = clock.wall_share(wall) if clock is not None else 0.0
    stages["mapping"] += fused
    stages["encode"] = wall - fused
    return Result(body, image.megapixels, correction, stages)


@dataclass
class Upload:
    """One upload's correction as the gate runs it (``CorrectionGate.run``): the work, and the flag that stops it."""

    model: Corrector | ModelBatcher
    data: bytes
    options: Options
    limits: Limits
    abandoned: threading.Event = field(default_factory=threading.Event)

    def run(self) -> Result:
        """``correct_upload`` of this upload, on the calling (worker) thread."""
        return correct_upload(self.model, self.data, self.options, self.limits, self.abandoned)

    def abandon(self) -> None:
        """Stop the work at its next stage boundary (``Abandoned``)."""
        self.abandoned.set()


class StageClock:
    """Wraps a row mapping run on several encoder threads; apportions the fused wall time to it."""

    def __init__(self, map_rows: MapRows):
        self.inner = map_rows
        self.seconds = 0.0
        self.threads: set[int] = set()
        self._lock = threading.Lock()

    def map_rows(self, rows: np.ndarray) -> np.ndarray:
        start = time.perf_counter()
        out = self.inner(rows)
        with self._lock:
            self.seconds += time.perf_counter() - start
            self.threads.add(threading.get_ident())
        return out

    def wall_share(self, wall: float) -> float:
        """Wall seconds of a fused map + encode run attributable to the mapping (its thread-seconds / threads)."""
        return min(wall, self.seconds / max(1, len(self.threads)))
