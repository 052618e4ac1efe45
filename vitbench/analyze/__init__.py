"""What a trained ViT learned: the paper's analyses of Figures 6 and 7 (arXiv 2010.11929, §4.5).

* ``metrics``  — pure tensor functions: :func:`patch_embed_pcs`, :func:`pos_embed_similarity`,
  :func:`mean_attention_distance`, :func:`attention_rollout` / :func:`rollout_to_patches`.
* ``runs``     — load a run directory's checkpointed model, compute the analyses (:func:`analyze_run`).
* ``figures``  — matplotlib drawing, one panel per analysis; ``output`` writes PNG + PDF + CSV.
* ``cli``      — the ``vitbench analyze`` sub-command (``register(subparsers)``).
"""

from vitbench.analyze.metrics import (attention_rollout, mean_attention_distance, normalize01, patch_distances,
                                      patch_embed_pcs, pos_embed_similarity, rollout_to_patches,
                                      uniform_attention_distance)

__all__ = [
    "attention_rollout", "mean_attention_distance", "normalize01", "patch_distances", "patch_embed_pcs",
    "pos_embed_similarity", "rollout_to_patches", "uniform_attention_distance",
]
