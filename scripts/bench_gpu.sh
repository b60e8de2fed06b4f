#!/usr/bin/env bash
# The benchmark on a lent GPU machine (the `device` tool), in under 4 minutes all told:
#   bash scripts/bench_gpu.sh         # from the repo root; results under $OUT (runs/gpu without $OUT)
#
# That machine has python3 with a CUDA torch, numpy, Pillow, SciPy, scikit-image, httpx, psutil,
# prometheus-client, uvicorn's h11/click/uvloop, and no network. The service's other packages
# travel as wheels in .whl/ (cp312 manylinux x86_64, one version each; see docs/benchmark.md for the
# download command), the test photo in .benchdata/ (the ../shared beside the checkout does not
# travel); both are ignored by git and named in the call's carry list.
#
# Every stage has its own time limit, cut to what is left of a 225 s budget; a failing stage is
# logged and the next one runs. Written under $OUT as they come: benchmark-gpu.md (the tables,
# rewritten after each section), gpu-check.txt, bench-gpu.log (everything), server.log.
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-runs/gpu}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
LOG="$OUT/bench-gpu.log"
BUDGET_S="${BUDGET_S:-225}"
DEVICE="${DEVICE:-cuda}"       # DEVICE=cpu SIZES=1 bash scripts/bench_gpu.sh: a dry run of the script here
SIZES="${SIZES:-1 12 24}"
export PYTHONUNBUFFERED=1
: >"$LOG"

stage() {  # stage NAME LIMIT_S COMMAND...: run with min(LIMIT_S, what is left) seconds; never fails
    local name=$1 limit=$2 left=$((BUDGET_S - SECONDS))
    shift 2
    if ((left < 10)); then
        echo "== $name: skipped, budget spent" | tee -a "$LOG"
        return 0
    fi
    ((limit > left)) && limit=$left
    echo "== $name (limit ${limit}s, ${SECONDS}s in)" | tee -a "$LOG"
    local start=$SECONDS
    timeout --kill-after=5 "$limit" "$@" >>"$LOG" 2>&1
    echo "== $name: exit $? after $((SECONDS - start))s" | tee -a "$LOG"
    return 0
}

stage nvidia-smi 10 nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
if compgen -G ".whl/*.whl" >/dev/null; then
    stage wheels 45 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
[ -d .benchdata ] && export WBVAE_BENCH_PHOTOS="$PWD/.benchdata"
stage imports 40 "$PY" -c "import torch, fastapi, pillow_heif, app.main, bench.stages; \
print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name())"
stage gpu-check 40 sh -c "\"$PY\" -m bench.gpu_check | tee \"$OUT/gpu-check.txt\""

# Four correction slots so that concurrency 4 can share model forwards (default 2); batching is on for CUDA.
export WBVAE_MAX_CONCURRENT_CORRECTIONS=4
stage bench 170 "$PY" -m bench --device "$DEVICE" --sizes $SIZES --reps 3 --http-reps 3 --concurrency 1 2 4 \
    --tput-mp 12 --tput-requests 8 --server-log "$OUT/server.log" \
    --note "GPU run (scripts/bench_gpu.sh): WBVAE_MAX_CONCURRENT_CORRECTIONS=4, batching auto (on for CUDA)." \
    --out "$OUT/benchmark-gpu.md"
echo "== done in ${SECONDS}s; $(ls "$OUT" | tr '\n' ' ')" | tee -a "$LOG"
tail -n 80 "$OUT/benchmark-gpu.md" 2>/dev/null
