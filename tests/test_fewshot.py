"""Few-shot linear evaluation: the closed-form solve against a direct one, and the protocol."""

import numpy as np
import pytest
import torch

from vitbench.train.fewshot import BIAS_CONSTANT, fewshot_eval, ridge_fit, ridge_predict, sample_shots


def _direct(x: np.ndarray, y: np.ndarray, k: int, l2: float) -> np.ndarray:
    """Textbook ridge regression: argmin ||A w - T||^2 + l2 ||w||^2 via numpy's lstsq on the
    stacked system [A; sqrt(l2) I] w = [T; 0]."""
    mean, std = x.mean(0, keepdims=True), x.std(0, keepdims=True) + 1e-5
    a = np.concatenate([(x - mean) / std, np.full((len(x), 1), BIAS_CONSTANT)], 1)
    t = 2.0 * np.eye(k)[y] - 1.0
    stacked = np.concatenate([a, np.sqrt(l2) * np.eye(a.shape[1])])
    rhs = np.concatenate([t, np.zeros((a.shape[1], k))])
    return np.linalg.lstsq(stacked, rhs, rcond=None)[0]


@pytest.mark.parametrize("n,d", [(40, 8), (12, 30)])  # primal (N >= D) and dual (D > N) paths
@pytest.mark.parametrize("l2", [1e-3, 1.0, 1024.0])
def test_ridge_matches_direct_solve(n: int, d: int, l2: float) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, d)) * rng.uniform(0.1, 5, size=d)
    y = rng.integers(0, 3, size=n)
    w, _, _ = ridge_fit(torch.from_numpy(x), torch.from_numpy(y), 3, l2)
    np.testing.assert_allclose(w.numpy(), _direct(x, y, 3, l2), rtol=1e-6, atol=1e-8)


def test_separable_features_are_classified_perfectly() -> None:
    # Class c sits at a distinct corner of feature space: 5-shot must be perfect.
    g = torch.Generator().manual_seed(0)
    centers = torch.eye(4) * 10
    y = torch.arange(4).repeat_interleave(50)
    x = centers[y] + 0.1 * torch.randn(200, 4, generator=g)
    res = fewshot_eval(x, y, x, y, num_classes=4, shots=[1, 5], seeds=3, l2=1.0)
    assert res["5"]["mean"] == 1.0 and len(res["5"]["per_seed"]) == 3


def test_random_features_are_near_chance() -> None:
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(1000, 16, generator=g), torch.randint(0, 10, (1000,), generator=g)
    xt, yt = torch.randn(1000, 16, generator=g), torch.randint(0, 10, (1000,), generator=g)
    res = fewshot_eval(x, y, xt, yt, num_classes=10, shots=[10], seeds=2, l2=1024.0)
    assert 0.03 < res["10"]["mean"] < 0.2


def test_shot_sampling_is_seeded_and_balanced() -> None:
    labels = torch.arange(5).repeat(20)
    a, b = sample_shots(labels, 3, seed=7), sample_shots(labels, 3, seed=7)
    assert torch.equal(a, b) and not torch.equal(a, sample_shots(labels, 3, seed=8))
    assert torch.bincount(labels[a]).tolist() == [3] * 5
    with pytest.raises(ValueError, match="fewer than"):
        sample_shots(labels, 21, seed=0)


def test_predict_uses_training_statistics() -> None:
    x = torch.tensor([[0.0], [1.0], [10.0], [11.0]])
    y = torch.tensor([0, 0, 1, 1])
    w, mean, std = ridge_fit(x, y, 2, 1e-3)
    assert ridge_predict(w, mean, std, torch.tensor([[0.5], [10.5]])).tolist() == [0, 1]
