"""Peak RSS of a fresh process that serves one correction:
``python -m bench.rss PHOTO.jpg FMT [--device cpu|cuda] [--map-on-cpu]``.

Prints the process's peak resident set size in MB (model loaded, one photo through
``app.pipeline.correct_upload``: decoded, analysed, mapped and encoded), and, on a second line, the
peak before the request.

The peak is the kernel's high-water mark of this process's own memory (``VmHWM``). Not
``ru_maxrss``: Linux carries that across ``execve``, so a child of a big parent (the benchmark,
holding its resampled photos) read the parent's size whatever its own (every size read 637 MB).
"""

from __future__ import annotations

import argparse
import resource
from pathlib import Path


def peak_rss_mb(status: Path = Path("/proc/self/status")) -> float:
    """This process's peak RSS in MB: ``VmHWM`` where /proc has it, else ``ru_maxrss`` (not Linux)."""
    try:
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("photo", type=Path)
    ap.add_argument("fmt")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--map-on-cpu", action="store_true", help="on CUDA: the mapping on the CPU inside the encoder")
    args = ap.parse_args(argv)
    from app.memory import retain_freed_memory
    from app.settings import Settings

    if Settings().retain_freed_memory:
        retain_freed_memory()  # as the service does at start-up
    from bench.stages import Bench

    data = args.photo.read_bytes()  # made by the parent: resampling costs memory
    bench = Bench(args.device, map_on_device=not args.map_on_cpu)
    idle = peak_rss_mb()
    bench.run(data, args.fmt)
    print(f"{peak_rss_mb():.0f}\n{idle:.0f}")


if __name__ == "__main__":
    main()
