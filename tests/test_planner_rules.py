"""planner rules: each test kills mutants of vitbench/plan/planner.py that the older tests let live (tools/mutation.sh)."""
