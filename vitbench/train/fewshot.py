"""Few-shot linear evaluation (paper §4.1; big_vision ``fewshot_lsr``).

Frozen pre-logit features; closed-form regularised least squares onto {-1, 1}^K targets with a
bias feature; accuracy of the argmax on the test split. Features are standardised with the
training shots' statistics and the bias feature is a large constant so it is barely regularised,
as big_vision does.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch

BIAS_CONSTANT = 100.0  # big_vision: a large constant bias feature is almost unregularised


def ridge_fit(x: torch.Tensor, y: torch.Tensor, num_classes: int, l2: float
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Weights W (D+1, K) minimising ||[x̂, c] W − (2·onehot(y) − 1)||² + l2·||W||².

    Returns (W, mean, std) where x̂ = (x − mean) / std. Solves the primal (D+1)×(D+1)
    system when there are more points than dimensions, else the dual N×N one — the same
    answer, the cheaper solve (few-shot has N = shots·K ≪ D).
    """
    x = x.double()
    mean = x.mean(0, keepdim=True)
    std = x.std(0, unbiased=False, keepdim=True) + 1e-5
    xa = _augment((x - mean) / std)
    t = 2.0 * torch.nn.functional.one_hot(y, num_classes).double() - 1.0
    n, d = xa.shape
    eye = torch.eye(min(n, d), dtype=xa.dtype, device=xa.device)
    if n >= d:
        w = torch.linalg.solve(xa.T @ xa + l2 * eye, xa.T @ t)
    else:
        w = xa.T @ torch.linalg.solve(xa @ xa.T + l2 * eye, t)
    return w, mean, std


def _augment(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x, torch.full((x.shape[0], 1), BIAS_CONSTANT, dtype=x.dtype, device=x.device)], 1)


def ridge_predict(w: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return (_augment((x.double() - mean) / std) @ w).argmax(1)


def sample_shots(labels: torch.Tensor, shots: int, seed: int) -> torch.Tensor:
    """Indices of ``shots`` examples per class, drawn with a seeded generator."""
    g = torch.Generator().manual_seed(seed)
    labels = labels.cpu()
    out = []
    for c in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == c).flatten()
        if len(idx) < shots:
            raise ValueError(f"class {c} has {len(idx)} training examples, fewer than {shots} shots")
        out.append(idx[torch.randperm(len(idx), generator=g)[:shots]])
    return torch.cat(out)


def shot_seed(run_seed: int, draw: int) -> int:
    """Seed of the ``draw``-th draw of few-shot training examples of a run (final eval and probes alike)."""
    return run_seed * 1000 + draw


def fit_and_score(x: torch.Tensor, y: torch.Tensor, num_classes: int, l2: float,
                  *evals: tuple[torch.Tensor, torch.Tensor]) -> list[float]:
    """Fit the ridge probe on (x, y); accuracy on each (features, labels) pair given."""
    w, mean, std = ridge_fit(x, y, num_classes, l2)
    return [(ridge_predict(w, mean, std, fe) == le).double().mean().item() for fe, le in evals]


def fewshot_eval(train_feats: torch.Tensor, train_labels: torch.Tensor, test_feats: torch.Tensor,
                 test_labels: torch.Tensor, *, num_classes: int, shots: Iterable[int], seeds: int,
                 l2: float, seed: int, dev: tuple[torch.Tensor, torch.Tensor] | None = None
                 ) -> dict[str, Any]:
    """Accuracy per shot count: {"5": {"mean": .., "std": .., "per_seed": [..], "dev_mean": ..}, ...}.

    ``dev`` (features, labels of the held-out dev split) gives the accuracy used for choosing
    hyper-parameters, so that choice never looks at the test split. Runs on whatever device the
    features are on (the solve is small; it stays there).
    """
    out: dict[str, Any] = {}
    for k in shots:
        accs, dev_accs = [], []
        for s in range(seeds):
            idx = sample_shots(train_labels, k, seed=shot_seed(seed, s)).to(train_feats.device)
            scores = fit_and_score(train_feats[idx], train_labels[idx], num_classes, l2,
                                   (test_feats, test_labels), *([dev] if dev is not None else []))
            accs.append(scores[0])
            if dev is not None:
                dev_accs.append(scores[1])
        t = torch.tensor(accs, dtype=torch.float64)
        out[str(k)] = {"mean": t.mean().item(), "std": t.std(unbiased=False).item(), "per_seed": accs}
        if dev is not None:
            out[str(k)]["dev_mean"] = sum(dev_accs) / len(dev_accs)
            out[str(k)]["dev_per_seed"] = dev_accs
    return out
