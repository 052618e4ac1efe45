#!/usr/bin/env bash
# Mutation testing (mutmut, pinned in requirements-mutation.txt) of the modules whose mistakes would
# silently corrupt results. Each module is mutated against the fast tests that exercise it (TESTS below),
# in a scratch copy of the working tree: mutmut runs every test that reaches a mutated function, and the
# record writers are reached by nearly every test (hours a module under `mutmut run` with the whole fast
# suite, the [tool.mutmut] default in pyproject.toml). A mutant these tests miss may still be killed
# elsewhere in the suite, so the figures are lower bounds.
#   pip install -r requirements-mutation.txt
#   bash tools/mutation.sh [MODULE ...]      # default: all of TESTS; e.g. train/convergence
# Prints one line per module; the survivors and their diffs go to $MUTATION_DIR/<module>/survivors.txt.
set -euo pipefail
# one thread: mutmut forks a child per mutant, and a fork of a process with torch's thread pool running can hang
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
root=$(git rev-parse --show-toplevel)
out=${MUTATION_DIR:-/tmp/vitbench-mutation}
declare -A TESTS=(
  [train/fewshot]="tests/test_fewshot.py tests/test_fewshot_curve.py"
  [train/selection]="tests/test_lr_selection.py"
  [train/convergence]="tests/test_convergence.py tests/test_loss_logging.py"
  [aggregate/claims]="tests/test_claims.py tests/test_claims_rules.py tests/test_claims_validation.py tests/test_committed_results.py"
  [aggregate/compare]="tests/test_compare.py tests/test_aggregate.py tests/test_committed_results.py"
  [plan/ids]="tests/test_run_ids.py tests/test_spec.py"
  [plan/planner]="tests/test_planner_rules.py tests/test_grid_rules.py tests/test_malformed_corpus.py tests/test_spec.py tests/test_budget_recipes.py tests/test_paper_recipes.py tests/test_plan_cost.py tests/test_yaml_limits.py tests/test_report_plan_time.py"
  [spec/grid]="tests/test_grid_rules.py tests/test_planner_rules.py tests/test_malformed_corpus.py tests/test_spec.py tests/test_yaml_limits.py tests/test_plan_cost.py"
  [launch/state]="tests/test_run_state.py tests/test_state_rules.py tests/test_launch_wait.py"
  [record/result]="tests/test_result_record.py tests/test_rundir_rules.py tests/test_aggregate.py tests/test_claims_rules.py tests/test_reliability.py"
  [record/verify]="tests/test_result_record.py tests/test_reliability.py"
  [record/rundir]="tests/test_atomic_records.py tests/test_rundir_rules.py tests/test_run_state.py tests/test_train_utils.py"
  [train/checkpoint]="tests/test_checkpoint_rules.py tests/test_train_utils.py tests/test_weights_io.py"
  [train/distributed]="tests/test_shard.py tests/test_ddp.py tests/test_distributed_rules.py"
)
modules=("$@")
[ ${#modules[@]} -gt 0 ] || modules=(train/fewshot train/selection train/convergence aggregate/claims
  aggregate/compare plan/ids plan/planner spec/grid launch/state record/result record/verify record/rundir train/checkpoint train/distributed)
for mod in "${modules[@]}"; do
  tests=${TESTS[$mod]:-}
  [ -n "$tests" ] || { echo "tools/mutation.sh: unknown module '$mod'; allowed: ${!TESTS[*]}" >&2; exit 2; }
  work="$out/${mod//\//-}"
  rm -rf "$work" && mkdir -p "$work"
  (cd "$root" && git ls-files -co --exclude-standard -z | tar --null -cf - -T -) | tar -C "$work" -xf -
  python3 - "$work/pyproject.toml" "vitbench/$mod.py" $tests <<'EOF'
import json, re, sys
path, module, tests = sys.argv[1], sys.argv[2], sys.argv[3:]
text = open(path).read()
text = re.sub(r"only_mutate = \[.*?\]", "only_mutate = " + json.dumps([module]), text, count=1, flags=re.S)
text = re.sub(r"pytest_add_cli_args_test_selection = \[.*?\]",
              "pytest_add_cli_args_test_selection = " + json.dumps([*tests, "-m", "not slow"]), text, count=1, flags=re.S)
open(path, "w").write(text)
EOF
  (cd "$work" && mutmut run --max-children "${JOBS:-2}" > mutmut.log 2>&1) || { tail -20 "$work/mutmut.log"; exit 1; }
  (cd "$work" && mutmut results --all true 2>/dev/null) > "$work/results.txt"
  (cd "$work" && for m in $(grep -E ": (survived|no tests)$" results.txt | cut -d: -f1); do
     echo "## $m ($(grep -F "$m:" results.txt | cut -d: -f2 | tr -d ' '))"
     mutmut show "$m" 2>/dev/null | grep '^[-+]' | grep -v '^+++\|^---'
   done) > "$work/survivors.txt"
  python3 - "$mod" "$work/results.txt" <<'EOF'
import collections, sys
mod, path = sys.argv[1], sys.argv[2]
status = collections.Counter(line.rsplit(":", 1)[1].strip() for line in open(path) if ":" in line)
total = sum(status.values())
print(f"{mod}: {status['killed']} of {total} mutants killed ({100 * status['killed'] / max(total, 1):.1f} %); "
      + ", ".join(f"{k} {v}" for k, v in sorted(status.items()) if k != "killed"))
EOF
done
