"""``python -m bench.gpu_check``: what the GPU path gives on a real CUDA device, in a few seconds.

1. A correction mapped on the GPU (``Correction.map_on(rgb, device)``, what ``prepare`` does with
   the model on a GPU) against the CPU's row mapping (``Correction.map_rows``, what the encoder runs)
   on a 12 MP photo: differing values, largest difference, time of each (GPU: upload, map, download).
2. Micro-batching: each of 8 different photos' corrections alone and in one batch of 8 on the
   GPU (largest matrix difference, how many identical), the time of 8 single forwards against
   one batch of 8, and the largest difference between the CPU's and the GPU's matrices.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch

from app.codec import decode
from bench.photos import photo_jpeg
from model.corrector import Corrector


def timed(fn, device, reps=3):
    best, out = float("inf"), None
    for _ in range(reps):
        torch.cuda.synchronize(device)
        start = time.perf_counter()
        out = fn()
        torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA device")
        return 1
    dev = torch.device("cuda")
    print(f"device: {torch.cuda.get_device_name(dev)}; torch {torch.__version__}")
    gpu, cpu = Corrector.from_checkpoint(device=dev), Corrector.from_checkpoint(device="cpu")
    gpu.warm_up()
    rgb = decode(photo_jpeg(12), 100_000_000).rgb
    correction = gpu.estimate(rgb)

    start = time.perf_counter()
    want = correction.map_rows(rgb)
    numpy_s = time.perf_counter() - start
    gpu_s, got = timed(lambda: correction.map_on(rgb, dev), dev)
    diff = np.abs(got.astype(int) - want.astype(int))
    print(
        f"mapping 12 MP: CPU map_rows (NumPy) {numpy_s:.3f} s, GPU map_on {gpu_s:.3f} s "
        f"(upload+map+download); "
        f"values differing {(diff > 0).mean():.2e}, largest difference {diff.max()} levels"
    )

    h, w = rgb.shape[:2]
    crops = [rgb[y : y + h // 2, x : x + w // 2] for y in (0, h // 4, h // 2) for x in (0, w // 4, w // 2)][:8]
    analyses = [gpu.analyse(np.ascontiguousarray(c)) for c in crops]
    alone = [gpu.estimate_batch([a])[0].matrix for a in analyses]
    together = [c.matrix for c in gpu.estimate_batch(analyses)]
    same = sum(np.array_equal(a, t) for a, t in zip(alone, together))
    largest = max(float(np.abs(a - t).max()) for a, t in zip(alone, together))
    single_s, _ = timed(lambda: [gpu.estimate_batch([a]) for a in analyses], dev)
    batch_s, _ = timed(lambda: gpu.estimate_batch(analyses), dev)
    on_cpu = [cpu.estimate_batch([a])[0].matrix for a in analyses]
    cpu_gpu = max(float(np.abs(a - c).max()) for a, c in zip(alone, on_cpu))
    print(
        f"model on GPU, 8 photos: alone vs batch of 8 identical for {same}/8, largest matrix difference "
        f"{largest:.2e}; 8 single forwards {single_s * 1e3:.1f} ms, one batch of 8 {batch_s * 1e3:.1f} ms; "
        f"largest CPU-vs-GPU matrix difference {cpu_gpu:.2e}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
