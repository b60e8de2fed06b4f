"""One correction, stage by stage (decode, model, mapping, encode), each timed. Runs in a worker thread."""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from PIL import Image

from app.imaging import decode, encode
from app.metrics import Metrics
from app.settings import Settings
from model.corrector import Corrector
from model.mapping import apply_matrix
from model.mapping16 import apply_gray_gain, gray_gain
from model.stats import STATS_SIZE


@dataclass(frozen=True)
class Options:
    """What the client asked for."""

    fmt: str = "png"        # png, jpeg or webp
    quality: int = 90       # JPEG/WebP quality, 1-100
    strength: float = 1.0   # 0: photo unchanged, 1: full correction


def blend(matrix: np.ndarray, strength: float) -> np.ndarray:
    """``(1 - s) I + s M``: the correction at strength ``s`` (exactly the identity at 0, exactly M at 1)."""
    if strength == 1.0:
        return np.asarray(matrix, dtype=np.float32)
    return ((1.0 - strength) * np.eye(3) + strength * np.asarray(matrix, dtype=np.float64)).astype(np.float32)


def analysable(rgb: np.ndarray) -> np.ndarray:
    """The photo, or for extreme aspect ratios (e.g. 100000 x 1) a box-reduced copy, for ``estimate``.

    ``model.stats.downsample`` reduces by ``ceil(long side / STATS_SIZE)`` and needs the short side to
    be at least that factor; thinner photos get the same statistics from a copy reduced here instead.
    """
    h, w = rgb.shape[:2]
    factor = -(-max(h, w) // STATS_SIZE)
    if min(h, w) >= factor:
        return rgb
    size = (max(1, round(w / factor)), max(1, round(h / factor)))
    return np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BOX))


@contextmanager
def _timed(metrics: Metrics, stage: str):
    start = time.perf_counter()
    yield
    metrics.stage_duration.labels(stage).observe(time.perf_counter() - start)


def correct_upload(corrector: Corrector, data: bytes, options: Options, settings: Settings,
                   metrics: Metrics) -> bytes:
    """Upload bytes -> corrected image bytes in ``options.fmt``; plain ValueErrors for bad input."""
    with _timed(metrics, "decode"):
        image = decode(data, settings.max_pixels, settings.strip_gps)
    metrics.input_megapixels.observe(image.megapixels)
    start = time.perf_counter()
    with _timed(metrics, "model"):
        correction = corrector.estimate(analysable(image.rgb))
    matrix = blend(correction.matrix, options.strength)
    with _timed(metrics, "mapping"):
        if image.gray is not None:
            pixels = apply_gray_gain(image.gray, gray_gain(matrix))
        else:
            pixels = apply_matrix(image.rgb, matrix)
    metrics.inference_duration.observe(time.perf_counter() - start)
    with _timed(metrics, "encode"):
        return encode(pixels, image.alpha, options.fmt, quality=options.quality,
                      compress_level=settings.png_compress_level, exif=image.exif)
