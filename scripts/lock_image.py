"""Append the image's section to a requirements.lock: what the Dockerfile installs beyond the lock's own pins.

The lock's pins come from a local venv, where torch is the CPU build. The image installs PyPI's torch, the CUDA
build, which pulls in packages the CPU build does not (nvidia-*, cuda-*, triton). This resolves what the image's
pip installs (torch, the serving dependencies and the ``train`` extra, constrained by the lock's pins) against PyPI
alone, ignoring this machine's pip configuration and local wheels, for the image's platform (Linux x86_64,
CPython 3.11: this machine's), and appends every package the lock does not pin yet, under a header of its own.

    python scripts/lock_image.py requirements.lock.new      (``make lock`` runs it)

``make image-check`` checks the result: every package in the built image is pinned here, at the version installed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[1]
INDEX = "https://pypi.org/simple"
HEADER = (
    "# ---- The image only (Linux x86_64, CPython 3.11): what PyPI's torch, the CUDA build, pulls in beyond the pins\n"
    "# above. Resolved against PyPI by scripts/lock_image.py (`make lock`); make image-check fails when the image\n"
    "# installs a package that this file does not pin, or another version.\n"
)


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def main(lock: Path) -> None:
    text = lock.read_text()
    if HEADER.splitlines()[0] in text:
        text = text[: text.index(HEADER.splitlines()[0])]
    pins = [line for line in text.splitlines() if line and not line.startswith("#")]
    pinned = {canonical(line.split("==")[0]) for line in pins}
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = ["torch", *project["dependencies"], *project["optional-dependencies"]["train"]]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull  # no local wheels, no local index, no machine-wide constraints
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    with tempfile.TemporaryDirectory() as tmp:
        constraints = Path(tmp, "constraints.txt")
        constraints.write_text("\n".join(pins) + "\n")
        report = Path(tmp, "report.json")
        cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet"]
        cmd += ["--report", str(report), "--index-url", INDEX, "--only-binary=:all:", "-c", str(constraints), *wanted]
        subprocess.run(cmd, check=True, env=env, timeout=900)
        installs = json.loads(report.read_text())["install"]
    found = {canonical(i["metadata"]["name"]): i["metadata"]["version"] for i in installs}
    extra = sorted((n, v) for n, v in found.items() if n not in pinned)
    assert any(n.startswith("nvidia-") for n, _ in extra), f"no CUDA packages resolved for torch: {extra}"
    lock.write_text(text.rstrip("\n") + "\n" + HEADER + "".join(f"{n}=={v}\n" for n, v in extra))
    print(f"{lock}: {len(extra)} image-only pins", file=sys.stderr)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
