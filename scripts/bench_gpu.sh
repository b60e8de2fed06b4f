#!/usr/bin/env bash
# The benchmark on a lent GPU machine (the `device` tool), in under 8 minutes:
#   scripts/bench_gpu.sh            # tables to $OUT/benchmark-gpu.md (or runs/ without $OUT)
# Needs a Python with a CUDA build of torch and this project installed (pip install -e .[test]).
# Model and full-resolution mapping run on the GPU (WBVAE_DEVICE / --device cuda); decode and
# encode stay on the CPU. NOT YET RUN: no GPU was lent to the session that wrote it.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-runs}"
mkdir -p "$OUT"
PY="${PYTHON:-python}"
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name())"
"$PY" -m pytest -q tests/test_fast_paths.py tests/test_bench.py
timeout 420 "$PY" -m bench --device cuda --sizes 1 12 24 --reps 5 --http-reps 3 --out "$OUT/benchmark-gpu.md"
