"""grid rules: each test kills mutants of vitbench/spec/grid.py that the older tests let live (tools/mutation.sh)."""
