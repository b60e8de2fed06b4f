"""The correction pipeline stage by stage, timed, in three versions.

``before``: the code before issue 6 (``bench/baseline.py``). ``prev``: issue 6's first round
(faster mapping and statistics, one thread each; Pillow's single-threaded PNG encoder).
``after``: now: the mapping runs inside the strip-parallel PNG writer (``app.png``) on the CPU, or
on the GPU before it. ``after-cpumap`` (CUDA only): the model on the GPU, the mapping on the CPU
threads inside the writer, to see which placement of the mapping is faster there.
"""
from __future__ import annotations

import time
from functools import partial

import numpy as np
import torch

from app.imaging import decode, encode
from app.pipeline import StageClock, limit_cpu_threads, map_pixels
from bench import baseline
from model.corrector import Corrector
from model.mapping import apply_matrix
from model.stats import analyse_small, downsample

STAGES = ("decode", "fit", "vae", "apply", "encode")
VARIANTS = ("before", "prev", "after", "after-cpumap")
DEFAULT_THREADS = torch.get_num_threads()


class Pipeline:
    """decode -> fit (downsample + statistics) -> vae (model forward) -> apply -> encode."""

    def __init__(self, variant: str = "after", device: str = "cpu", corrector: Corrector | None = None):
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; one of {VARIANTS}")
        self.variant = variant
        self.corrector = corrector or Corrector.from_checkpoint(device=device)
        self.corrector.warm_up()
        self.map_on_cpu = self.corrector.device.type == "cpu" or variant == "after-cpumap"

    def _sync(self) -> None:
        if self.corrector.device.type == "cuda":
            torch.cuda.synchronize(self.corrector.device)

    def run(self, data: bytes, fmt: str, own_floor: bool = False) -> tuple[dict[str, float], bytes]:
        """Seconds per stage and the encoded output. ``own_floor`` (after): also time ``app.png``'s encode
        of the already-mapped pixels alone (``t["own_encode"]``), outside the total."""
        t, out = {}, None
        start = time.perf_counter()

        def lap(name):
            nonlocal start
            self._sync()
            now = time.perf_counter()
            t[name] = now - start
            start = now

        if self.variant == "before":
            torch.set_num_threads(DEFAULT_THREADS)  # torch's default, as before issue 6
            rgb = baseline.decode_rgb(data)
            lap("decode")
            analysis = analyse_small(*baseline.downsample(rgb))
            lap("fit")
            matrix = self.corrector.estimate_batch([analysis])[0].matrix
            lap("vae")
            pixels = baseline.apply_matrix(rgb, matrix)
            lap("apply")
            out = baseline.encode(pixels, fmt)
            lap("encode")
            return t, out
        limit_cpu_threads(self.corrector.device)
        image = decode(data, 100_000_000)
        lap("decode")
        analysis = analyse_small(*downsample(image.rgb))
        lap("fit")
        matrix = np.asarray(self.corrector.estimate_batch([analysis])[0].matrix, np.float32)
        lap("vae")
        if self.variant == "prev":
            pixels = map_pixels(image.rgb, matrix, self.corrector.device)
            lap("apply")
            out = encode(pixels, None, fmt, compress_level=1, exif=image.exif, png_writer="pillow")
            lap("encode")
            return t, out
        if self.map_on_cpu:  # fused: mapping inside the writer's strips; split apportioned as the service does
            clock = StageClock(partial(apply_matrix, matrix=matrix))
            out = encode(image.rgb, None, fmt, compress_level=1, exif=image.exif, map_rows=clock.map_rows)
            lap("encode")
            t["apply"] = clock.wall_share(t["encode"])
            t["encode"] -= t["apply"]
        else:
            pixels = map_pixels(image.rgb, matrix, self.corrector.device)
            lap("apply")
            out = encode(pixels, None, fmt, compress_level=1, exif=image.exif)
            lap("encode")
        if own_floor:
            pixels = apply_matrix(image.rgb, matrix)
            begin = time.perf_counter()
            encode(pixels, None, fmt, compress_level=1, exif=image.exif)
            t["own_encode"] = time.perf_counter() - begin
        return t, out
