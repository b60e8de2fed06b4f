#!/usr/bin/env bash
# Train on a lent GPU machine (the `device` tool), several runs side by side on its one GPU:
#   scripts/train_gpu.sh NAME "TRAIN ARGS" [NAME "TRAIN ARGS" ...]
# Each run: python -m model.training.train synthetic TRAIN ARGS --device ${DEVICE:-cuda} --out $OUT/NAME, with the
# machine's CPU cores shared out as data workers (the emulator renders on the CPU). Source photos come
# from $WBVAE_SOURCES (default ~/.cache/wbvae/sources; `python -m model.training.photos prepare` fills it).
# Logs stream to $OUT/NAME/train.log; checkpoints, metrics.csv and figures land in $OUT/NAME.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-runs}"
PY="${PYTHON:-python3}"
runs=$(( $# / 2 ))
[ "$runs" -ge 1 ] || { echo "usage: $0 NAME 'ARGS' [NAME 'ARGS' ...]" >&2; exit 2; }
workers=$(( ( $(nproc) - runs ) / runs )); [ "$workers" -ge 1 ] || workers=1
"$PY" -c "import torch; print(torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'NO CUDA')"
pids=()
while [ $# -ge 2 ]; do
  name=$1; args=$2; shift 2
  mkdir -p "$OUT/$name"
  # shellcheck disable=SC2086
  PYTHONUNBUFFERED=1 "$PY" -m model.training.train synthetic $args --device "${DEVICE:-cuda}" --workers "$workers" \
    --out "$OUT/$name" >"$OUT/$name/train.log" 2>&1 &
  pids+=($!)
  echo "started $name (pid $!, $workers workers): $args"
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
for d in "$OUT"/*/; do echo "== $d"; grep -a "^epoch=" "$d/train.log" | tail -2 | cut -c1-400; tail -c 300 "$d/train.log"; echo; done
exit $status
