"""The paper suite: the four experiments every scale's committed results come from (results/make_micro.sh,
results/gpu/run.sh, the smoke and committed-results tests all read this list)."""

PAPER_EXPERIMENTS = ("ablations/pos_embed.yaml", "ablations/class_vs_gap.yaml", "experiments/data_scaling.yaml",
                     "experiments/model_compute.yaml")

if __name__ == "__main__":  # `python3 -m vitbench.plan.suite`: the list for shell scripts
    print(" ".join(PAPER_EXPERIMENTS))
