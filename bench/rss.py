"""Peak RSS of a fresh process that serves one correction: ``python -m bench.rss MP FMT [--before]``.

Prints the process's peak resident set size in MB (model loaded, one photo decoded, analysed,
mapped and encoded), and, on a second line, the peak before the request.
"""
from __future__ import annotations

import resource
import sys

from bench.photos import photo_jpeg
from bench.stages import Pipeline


def main() -> None:
    mp, fmt = float(sys.argv[1]), sys.argv[2]
    data = photo_jpeg(mp)
    pipe = Pipeline(before="--before" in sys.argv, device=(sys.argv[sys.argv.index("--device") + 1]
                                                             if "--device" in sys.argv else "cpu"))
    pipe.run(photo_jpeg(0.05), fmt)  # warm up
    idle = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    pipe.run(data, fmt)
    print(f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}\n{idle:.0f}")


if __name__ == "__main__":
    main()
