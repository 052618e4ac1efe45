#!/usr/bin/env bash
# Regenerates results/micro/: runs the four paper experiments at the micro scale on the local SLURM
# cluster (bash slurm/start-cluster.sh first; or CLUSTER=local), then builds their tables, plots and
# the Figure 6/7 analyses. The run store with checkpoints and logs stays in results/store/ (not
# committed); each run's config.yaml and result.json are copied to results/micro/runs/ (committed),
# which is all `vitbench table/plot/compare --results results/micro` need.
set -euo pipefail
cd "$(dirname "$0")/.."
CLUSTER=${CLUSTER:-slurm}
EXPERIMENTS="ablations/pos_embed.yaml ablations/class_vs_gap.yaml experiments/data_scaling.yaml experiments/model_compute.yaml"
STORE=results/store
OUT=results/micro

if [[ ${SKIP_RUNS:-0} != 1 ]]; then
  start=$(date +%s)
  for exp in $EXPERIMENTS; do vitbench run "$exp" --scale micro --cluster "$CLUSTER" --results "$STORE"; done
  for exp in $EXPERIMENTS; do vitbench run "$exp" --scale micro --cluster "$CLUSTER" --results "$STORE" --wait; done
  echo "wall_s=$(( $(date +%s) - start ))" > "$OUT.wall"
fi

mkdir -p "$OUT/runs" "$OUT/tables" "$OUT/plots"
for d in "$STORE"/runs/*/; do
  [[ -f $d/result.json ]] || continue
  id=$(basename "$d"); mkdir -p "$OUT/runs/$id"; cp "$d/config.yaml" "$d/result.json" "$OUT/runs/$id/"
done
for exp in $EXPERIMENTS; do
  name=$(basename "$exp" .yaml)
  vitbench table "$exp" --scale micro --results "$OUT" --format md --out "$OUT/tables/$name.md"
  vitbench table "$exp" --scale micro --results "$OUT" --format csv --out "$OUT/tables/$name.csv"
  vitbench plot "$exp" --scale micro --results "$OUT" --out "$OUT/plots"
done
