"""The correction pipeline stage by stage, timed; ``before=True`` runs the pre-issue-6 code."""
from __future__ import annotations

import time

import numpy as np
import torch

from app.imaging import decode, encode
from app.pipeline import limit_cpu_threads, map_pixels
from bench import baseline
from model.corrector import Corrector
from model.stats import analyse_small, downsample

STAGES = ("decode", "fit", "vae", "apply", "encode")
DEFAULT_THREADS = torch.get_num_threads()


class Pipeline:
    """decode -> fit (downsample + statistics) -> vae (model forward) -> apply -> encode."""

    def __init__(self, before: bool = False, device: str = "cpu"):
        self.before = before
        self.corrector = Corrector.from_checkpoint(device=device)
        self.corrector.warm_up()

    def _sync(self) -> None:
        if self.corrector.device.type == "cuda":
            torch.cuda.synchronize(self.corrector.device)

    def run(self, data: bytes, fmt: str) -> tuple[dict[str, float], bytes]:
        """Seconds per stage and the encoded output."""
        t, out = {}, None
        start = time.perf_counter()

        def lap(name):
            nonlocal start
            self._sync()
            now = time.perf_counter()
            t[name] = now - start
            start = now

        if self.before:
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
        else:
            limit_cpu_threads(self.corrector.device)
            image = decode(data, 100_000_000)
            lap("decode")
            analysis = analyse_small(*downsample(image.rgb))
            lap("fit")
            matrix = self.corrector.estimate_batch([analysis])[0].matrix
            lap("vae")
            pixels = map_pixels(image.rgb, np.asarray(matrix, np.float32), self.corrector.device)
            lap("apply")
            out = encode(pixels, None, fmt, compress_level=1, exif=image.exif)
            lap("encode")
        return t, out
