#!/usr/bin/env bash
# Regenerates results/micro/: runs the four paper experiments at the micro scale on the local SLURM
# cluster, then builds their tables, plots, claims (computed verdicts) and the core-seconds record. Start the cluster with one slot per core first
# (`VITBENCH_SLURM_CPUS=auto bash slurm/start-cluster.sh`: two runs at a time on a 2-core machine,
# how the core-minute budget is measured), or use CLUSTER=local. The run store with checkpoints and logs stays in results/store/ (not
# committed); each run's config.yaml and result.json are copied to results/micro/runs/ (committed),
# which is all `vitbench table/plot/compare --results results/micro` need.
set -euo pipefail
cd "$(dirname "$0")/.."
CLUSTER=${CLUSTER:-slurm}
EXPERIMENTS=$(python3 -m vitbench.plan.suite --micro)  # the paper experiments committed at micro (vitbench/plan/suite.py)
STORE=results/store
OUT=results/micro

if [[ ${SKIP_RUNS:-0} != 1 ]]; then
  start=$(date +%s)
  for exp in $EXPERIMENTS; do vitbench run "$exp" --scale micro --cluster "$CLUSTER" --results "$STORE"; done
  for exp in $EXPERIMENTS; do vitbench run "$exp" --scale micro --cluster "$CLUSTER" --results "$STORE" --wait; done
  echo "wall_s=$(( $(date +%s) - start ))" > "$OUT.wall"
fi

# Copy the records of exactly the runs these four plans name (the store may hold others), replacing
# what was committed before; a planned run without a result is left out and shows as missing.
rm -rf "$OUT/runs" "$OUT/claims"; mkdir -p "$OUT/runs" "$OUT/tables" "$OUT/plots" "$OUT/claims"
ids=$(python3 -c 'import sys
from vitbench.plan.planner import make_plan
print("\n".join(sorted({r.run_id for e in sys.argv[1:] for r in make_plan(e, scale="micro", check_data=False).runs})))' $EXPERIMENTS)
for id in $ids; do
  d=$STORE/runs/$id
  [[ -f $d/result.json ]] || { echo "missing: $id (no result in $d)" >&2; continue; }
  mkdir -p "$OUT/runs/$id"; cp "$d/config.yaml" "$d/result.json" "$OUT/runs/$id/"
done
# The plugin worked example (README, Plugins): 2D axial RoPE against Table 8's baselines with the same seeds;
# its three runs are copied like the plans' (their configs name the plugin file and its sha256).
ROPE=(--plugin ablations/plugins/rope2d.py --set model.pos_embed=rope_2d --set model.pos_placement=stem)
if [[ ${SKIP_RUNS:-0} != 1 ]]; then
  vitbench compare ablations/pos_embed.yaml --scale micro --cluster "$CLUSTER" --results "$STORE" "${ROPE[@]}" > /dev/null
fi
for cfg in $(grep -l "pos_embed: rope_2d" "$STORE"/runs/*/config.yaml); do
  d=$(dirname "$cfg"); [[ -f $d/result.json ]] || continue
  mkdir -p "$OUT/runs/$(basename "$d")"; cp "$d/config.yaml" "$d/result.json" "$OUT/runs/$(basename "$d")/"
done
for exp in $EXPERIMENTS; do
  name=$(basename "$exp" .yaml)
  vitbench table "$exp" --scale micro --results "$OUT" --format md --out "$OUT/tables/$name.md"
  vitbench table "$exp" --scale micro --results "$OUT" --format csv --out "$OUT/tables/$name.csv"
  vitbench plot "$exp" --scale micro --results "$OUT" --out "$OUT/plots"
  vitbench claims "$exp" --scale micro --results "$OUT" --out "$OUT/claims/$name.md"
done
# Where the compute went: core-seconds per run by phase, from the records (results/bench/runcost-*.json).
vitbench bench --runs "micro=$OUT"

# Reference: the same transfer evaluations of an unpretrained (initialised) ViT-micro and BiT-micro,
# three seeds each, to tell what pretraining added (records in $OUT/reference/runs).
rm -rf "$OUT/reference"
for m in vit bit; do
  for s in 0 1 2; do
    rd=$(vitbench run-one "experiments/single/$m-micro.yaml" --set seed=$s --set pretrain.steps=0 \
         --set pretrain.warmup_steps=0 --set runtime.threads=1 --results "$STORE" | sed -n 's/^done: //p')
    mkdir -p "$OUT/reference/runs/$(basename "$rd")"; cp "$rd/config.yaml" "$rd/result.json" "$OUT/reference/runs/$(basename "$rd")/"
  done
done

# The paper's compare use case on the committed records: a sincos 2D variant against the baselines.
vitbench compare ablations/pos_embed.yaml --scale micro --results "$OUT" --no-run \
  --set model.pos_embed=sincos_2d --set model.pos_placement=stem > "$OUT/tables/pos_embed-compare-sincos_2d-stem.md"
vitbench compare ablations/pos_embed.yaml --scale micro --results "$OUT" --no-run \
  --set model.pos_embed=none --metric pretrain/top1 > "$OUT/tables/pos_embed-compare-none-pretrain.md"
for metric in fewshot/digits/5shot finetune/digits/top1 pretrain/top1; do
  vitbench compare ablations/pos_embed.yaml --scale micro --results "$OUT" --no-run "${ROPE[@]}" --metric "$metric" \
    > "$OUT/tables/pos_embed-compare-rope_2d-$(echo "$metric" | cut -d/ -f1).md"
done

# Figures 6/7 need checkpoints (in the store): every ViT of the pos-emb ablation side by side, and one
# run in full (the micro default: learned 1D at the stem, [class], seed 0).
rm -rf "$OUT/analysis"
vitbench analyze ablations/pos_embed.yaml --scale micro --results "$STORE" --out "$OUT/analysis/pos_embed"
default_id=$(python3 -c 'from vitbench.plan.planner import make_plan
p = make_plan("ablations/pos_embed.yaml", scale="micro", check_data=False)
print(next(r.run_id for r in p.runs if r.config["seed"] == 0 and r.config["model"]["pos_embed"] == "learned_1d"
           and r.config["model"]["pos_placement"] == "stem"))')
vitbench analyze "$STORE/runs/$default_id" --out "$OUT/analysis/vit-micro-seed0"

# Re-quote the claims and tables that results/README.md shows (tests/test_committed_results.py checks them).
python3 results/quote_readme.py
