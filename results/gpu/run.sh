#!/usr/bin/env bash
# One GPU, at most 10 minutes: `vitbench bench` (ViT-B/16 at 224 px in bf16 with MFU, then the micro
# models) and the micro suite, records under results/gpu/. Made for the lent H100/H200 machine
# (torch, timm, pandas, seaborn there; submitit carried as a wheel in .whl/ if it is missing):
#   device run:  bash results/gpu/run.sh        (carry .whl when submitit is not installed there)
# Runtime keys are not part of a run id, so GPU records (bf16 autocast) would share ids with the CPU
# ones: they go to their own store, results/gpu/store, and only their records are kept.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
if ! $PY -c 'import submitit' 2>/dev/null; then
  $PY -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
vb() { $PY -m vitbench.cli "$@"; }
OUT=results/gpu
STORE=$OUT/store
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/device.txt"
start=$(date +%s)

# 1. ViT-B/16 at 224 px, bf16: images/s and MFU beside the timm-style reference loop (~3 min).
timeout 300 vb bench --device cuda --model ViT-B/16 --img-size 224 --precision bf16 --repeats 4 --steps 10 \
  --ablations none --out "$OUT/bench" || echo "bench ViT-B/16: exit $?"
# 2. The micro models on the GPU (~1 min).
timeout 120 vb bench --device cuda --model ViT-micro/4 --model BiT-micro --repeats 4 --ablations none \
  --out "$OUT/bench" || echo "bench micro: exit $?"

# 3. The micro suite: every run of the four experiments, 8 at a time on the one GPU (local cluster).
EXPERIMENTS=$(python3 -m vitbench.plan.suite)  # the four paper experiments (vitbench/plan/suite.py)
for exp in $EXPERIMENTS; do
  timeout $(( 560 - ($(date +%s) - start) )) vb run "$exp" --scale micro --cluster local --profile local \
    --results "$STORE" --set runtime.device=cuda --set runtime.threads=2 || echo "$exp: exit $?"
done
mkdir -p "$OUT/micro/runs"
for d in "$STORE"/runs/*/; do
  [[ -f $d/result.json ]] && mkdir -p "$OUT/micro/runs/$(basename "$d")" && cp "$d/config.yaml" "$d/result.json" "$OUT/micro/runs/$(basename "$d")/"
done
for exp in $EXPERIMENTS; do
  vb table "$exp" --scale micro --results "$OUT/micro" --format md --out "$OUT/micro/$(basename "$exp" .yaml).md" || true
done
echo "wall_s=$(( $(date +%s) - start ))" | tee "$OUT/micro.wall"
