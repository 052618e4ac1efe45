"""The paper suite: the four experiments every scale's committed results come from (results/gpu/run.sh, the smoke
and committed-results tests read this list), and the experiments whose micro results are committed
(results/make_micro.sh)."""

PAPER_EXPERIMENTS = ("ablations/pos_embed.yaml", "ablations/class_vs_gap.yaml", "experiments/data_scaling.yaml",
                     "experiments/model_compute.yaml")
# Masked patch prediction (§4.6) is committed at micro too; the SLURM smoke suite keeps to the four above.
MICRO_EXPERIMENTS = PAPER_EXPERIMENTS + ("experiments/self_supervised.yaml",)

if __name__ == "__main__":  # `python3 -m vitbench.plan.suite [--micro]`: the list for shell scripts
    import sys

    print(" ".join(MICRO_EXPERIMENTS if "--micro" in sys.argv[1:] else PAPER_EXPERIMENTS))
