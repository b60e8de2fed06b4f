"""One correction, stage by stage (decode, model, mapping, encode), each timed. Runs in a worker thread."""
from __future__ import annotations

import threading
import time
import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from app.batcher import ModelBatcher
from app.imaging import check_output_size, decode, encode
from app.metrics import Metrics
from app.settings import Settings
from model.corrector import Corrector
from model.mapping import apply_matrix, apply_matrix_torch
from model.mapping16 import apply_gray_gain, gray_gain
from model.stats import analyse


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
                   metrics: Metrics, batcher: ModelBatcher | None = None) -> bytes:
    """Upload bytes -> corrected image bytes in ``options.fmt``; plain ValueErrors for bad input.

    With a ``batcher`` the model forward is shared with concurrent requests (``app.batcher``).
    On the CPU the mapping runs inside the encoder, strip by strip on its threads (the PNG writer
    overlaps it with compression; no corrected full-size copy is made), and the two stages' times are
    apportioned from the workers' own clocks. With the model on a GPU the whole photo is mapped there
    first (unless ``settings.gpu_mapping`` is off).
    """
    with batcher.expect() if batcher else nullcontext() as expected:
        with _timed(metrics, "decode"):
            image = decode(data, settings.max_pixels, settings.strip_gps)
        check_output_size(options.fmt, image.rgb.shape[1], image.rgb.shape[0])
        metrics.input_megapixels.observe(image.megapixels)
        start = time.perf_counter()
        with _timed(metrics, "model"):
            if batcher:
                correction = batcher.estimate(analyse(image.rgb), expected)
            else:
                correction = corrector.estimate(image.rgb)
    matrix = blend(correction.matrix, options.strength)
    source = image.gray if image.gray is not None else image.rgb
    if image.gray is not None:
        map_rows = partial(apply_gray_gain, gain=gray_gain(matrix))
    elif corrector.device.type != "cpu" and settings.gpu_mapping:
        map_rows = None
        with _timed(metrics, "mapping"):
            source = map_pixels(image.rgb, matrix, corrector.device)
    else:
        map_rows = partial(apply_matrix, matrix=matrix)
    clock = StageClock(map_rows) if map_rows is not None else None
    encode_start = time.perf_counter()
    body = encode(source, image.alpha, options.fmt, quality=options.quality, exif=image.exif,
                  compress_level=settings.png_compress_level, map_rows=clock and clock.map_rows,
                  threads=settings.encode_threads)
    wall = time.perf_counter() - encode_start
    mapping = clock.wall_share(wall) if clock is not None else 0.0
    if clock is not None:
        metrics.stage_duration.labels("mapping").observe(mapping)
    metrics.stage_duration.labels("encode").observe(wall - mapping)
    metrics.inference_duration.observe(encode_start - start + mapping)
    return body


class StageClock:
    """Wraps a row mapping run on several encoder threads; apportions the fused wall time to it."""

    def __init__(self, map_rows):
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
