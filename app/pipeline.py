"""One correction, stage by stage (decode, model, mapping, encode), each timed. Runs in a worker thread."""
from __future__ import annotations

import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from app.imaging import decode, encode
from app.metrics import Metrics
from app.settings import Settings
from model.corrector import Corrector
from model.mapping import apply_matrix, apply_matrix_torch
from model.mapping16 import apply_gray_gain, gray_gain


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


CPU_INTRA_OP_THREADS = 1


def limit_cpu_threads(device: torch.device) -> None:
    """One intra-op thread for the small model on a CPU: requests run in parallel slots already, and on
    busy or shared cores torch's thread pool oversubscribes them (12 MP bench: the model forward took
    0.23-0.47 s with 2 threads, 3-9 ms with 1; docs/benchmark.md). Process-wide and idempotent."""
    if device.type == "cpu" and torch.get_num_threads() != CPU_INTRA_OP_THREADS:
        torch.set_num_threads(CPU_INTRA_OP_THREADS)


def map_pixels(rgb: np.ndarray, matrix: np.ndarray, device: torch.device, use_torch: bool | None = None) -> np.ndarray:
    """``apply_matrix`` on the corrector's device: NumPy tables on the CPU, the same maths in torch on a GPU.

    ``use_torch`` forces the torch path (tests run it on the CPU); by default it is taken off the CPU.
    """
    if not (device.type != "cpu" if use_torch is None else use_torch):
        return apply_matrix(rgb, matrix)
    with warnings.catch_warnings():  # decoded pixels are read-only; they are only read
        warnings.simplefilter("ignore", UserWarning)
        src = torch.from_numpy(np.ascontiguousarray(rgb))
    return apply_matrix_torch(src.to(device), matrix).cpu().numpy()


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
        correction = corrector.estimate(image.rgb)
    matrix = blend(correction.matrix, options.strength)
    with _timed(metrics, "mapping"):
        if image.gray is not None:
            pixels = apply_gray_gain(image.gray, gray_gain(matrix))
        else:
            pixels = map_pixels(image.rgb, matrix, corrector.device)
    metrics.inference_duration.observe(time.perf_counter() - start)
    with _timed(metrics, "encode"):
        return encode(pixels, image.alpha, options.fmt, quality=options.quality,
                      compress_level=settings.png_compress_level, exif=image.exif)
