"""Few-shot linear evaluation: the closed-form solve against a direct one, and the protocol."""

import numpy as np
import pytest
import torch

from vitbench.train.fewshot import BIAS_CONSTANT, fewshot_eval, ridge_fit, ridge_predict, sample_shots, shot_seed


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
    res = fewshot_eval(x, y, x, y, num_classes=4, shots=[1, 5], seeds=3, l2=1.0, seed=0)
    assert res["5"]["mean"] == 1.0 and len(res["5"]["per_seed"]) == 3


def test_random_features_are_near_chance() -> None:
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(1000, 16, generator=g), torch.randint(0, 10, (1000,), generator=g)
    xt, yt = torch.randn(1000, 16, generator=g), torch.randint(0, 10, (1000,), generator=g)
    res = fewshot_eval(x, y, xt, yt, num_classes=10, shots=[10], seeds=2, l2=1024.0, seed=0)
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


def test_predictions_are_the_direct_solves_on_new_points() -> None:
    """Standardised with the training shots' mean and std (features on scales 0.1-5), then the ridge weights."""
    rng = np.random.default_rng(3)
    scale = rng.uniform(0.1, 5, size=6)
    x, y = rng.normal(size=(30, 6)) * scale + 2.0, rng.integers(0, 4, size=30)
    new = rng.normal(size=(200, 6)) * scale + 2.0
    w, mean, std = ridge_fit(torch.from_numpy(x), torch.from_numpy(y), 4, 1.0)
    m, s = x.mean(0, keepdims=True), x.std(0, keepdims=True) + 1e-5
    a = np.concatenate([(new - m) / s, np.full((len(new), 1), BIAS_CONSTANT)], 1)
    want = (a @ _direct(x, y, 4, 1.0)).argmax(1)
    assert ridge_predict(w, mean, std, torch.from_numpy(new)).tolist() == want.tolist()


def test_a_class_missing_from_the_shots_still_has_a_column() -> None:
    w, _, _ = ridge_fit(torch.randn(6, 3, dtype=torch.float64), torch.tensor([0, 1, 0, 1, 0, 1]), 5, 1.0)
    assert w.shape == (4, 5)


def test_a_class_with_exactly_the_shot_count_is_enough() -> None:
    labels = torch.arange(3).repeat(4)
    assert sorted(labels[sample_shots(labels, 4, seed=0)].tolist()) == [0] * 4 + [1] * 4 + [2] * 4


def test_shot_seeds_are_the_run_seed_times_1000_plus_the_draw() -> None:
    """The draws behind every committed few-shot number: changing this rule changes past results."""
    assert [shot_seed(r, d) for r, d in [(0, 0), (0, 2), (3, 1), (7, 999)]] == [0, 2, 3001, 7999]


def test_per_shot_summary_dev_and_test_in_double_precision() -> None:
    """mean and population std of the per-seed test accuracies (float64), and the dev split's own numbers."""
    g = torch.Generator().manual_seed(2)
    y = torch.arange(3).repeat_interleave(40)
    x = torch.eye(3)[y] * 1.5 + torch.randn(120, 3, generator=g)
    xt, yt = torch.eye(3)[y] * 1.5 + torch.randn(120, 3, generator=g), y
    xd, yd = torch.randn(120, 3, generator=g), y  # dev features carry no signal: dev accuracy differs
    res = fewshot_eval(x, y, xt, yt, num_classes=3, shots=[2], seeds=4, l2=1.0, seed=5, dev=(xd, yd))["2"]
    acc = np.array(res["per_seed"], dtype=np.float64)
    assert len(acc) == 4 and len(set(acc)) > 1
    assert res["mean"] == pytest.approx(acc.mean(), rel=1e-12) and res["std"] == pytest.approx(acc.std(), rel=1e-12)
    assert len(res["dev_per_seed"]) == 4 and res["dev_per_seed"] != res["per_seed"]
    assert res["dev_mean"] == pytest.approx(float(np.mean(res["dev_per_seed"])), rel=1e-12)
    same = fewshot_eval(x, y, xt, yt, num_classes=3, shots=[2], seeds=4, l2=1.0, seed=5)["2"]
    assert same["per_seed"] == res["per_seed"] and "dev_mean" not in same
