"""Peak RSS of a fresh process that serves one correction: ``python -m bench.rss PHOTO.jpg FMT [--before]``.

Prints the process's peak resident set size in MB (model loaded, one photo decoded, analysed,
mapped and encoded), and, on a second line, the peak before the request.
"""
from __future__ import annotations

import resource
import sys

from pathlib import Path

from bench.stages import Pipeline


def main() -> None:
    data, fmt = Path(sys.argv[1]).read_bytes(), sys.argv[2]  # made by the parent: resampling costs memory
    pipe = Pipeline(before="--before" in sys.argv, device=(sys.argv[sys.argv.index("--device") + 1]
                                                             if "--device" in sys.argv else "cpu"))
    pipe.corrector.warm_up()
    idle = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    pipe.run(data, fmt)
    print(f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}\n{idle:.0f}")


if __name__ == "__main__":
    main()
