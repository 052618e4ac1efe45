"""Fine-tuning learning-rate selection (``summarise_finetune``): the lr is picked on the dev split,
never on test; the reported test accuracy is the one at that lr; ties go to the smaller lr;
diverged learning rates (and ones without a dev accuracy) take no part."""

import pytest

from vitbench.train.selection import summarise_finetune


def _ok(dev: float, test: float, converged: bool = True) -> dict:
    return {"status": "ok", "steps": 4, "final_loss": 1.0, "dev_top1": dev, "test_top1": test,
            "convergence": {"converged": converged}, "wall_s": 0.1}


def _diverged(step: int = 3) -> dict:
    return {"status": "diverged", "diverged_at": step, "dev_top1": None, "test_top1": None}


def test_lr_is_chosen_on_dev_not_on_test() -> None:
    per_lr = {"0.01": _ok(dev=0.9, test=0.5), "0.03": _ok(dev=0.8, test=0.95, converged=False)}
    out = summarise_finetune("digits", per_lr)
    assert out["best_lr"] == 0.01
    assert out["dev_top1"] == 0.9
    assert out["test_top1"] == 0.5  # the test accuracy at the dev-chosen lr, not the best test accuracy
    assert out["converged"] is True
    assert out["dataset"] == "digits" and out["per_lr"] is per_lr


def test_lr_is_chosen_on_dev_whichever_order_the_lrs_come_in() -> None:
    per_lr = {"0.003": _ok(dev=0.7, test=0.99), "0.03": _ok(dev=0.85, test=0.6), "0.01": _ok(dev=0.8, test=0.9)}
    out = summarise_finetune("digits", per_lr)
    assert (out["best_lr"], out["dev_top1"], out["test_top1"]) == (0.03, 0.85, 0.6)


@pytest.mark.parametrize("keys", [("0.01", "0.03", "0.1"), ("0.1", "0.03", "0.01"), ("0.03", "0.1", "0.01")])
def test_dev_ties_go_to_the_smaller_lr(keys: tuple[str, ...]) -> None:
    results = {"0.01": _ok(dev=0.8, test=0.4), "0.03": _ok(dev=0.8, test=0.9), "0.1": _ok(dev=0.8, test=0.7)}
    out = summarise_finetune("digits", {k: results[k] for k in keys})  # insertion order must not matter
    assert (out["best_lr"], out["test_top1"]) == (0.01, 0.4)


def test_ties_compare_lrs_as_numbers_not_strings() -> None:
    # as strings "1e-05" > "0.1"; as numbers 1e-05 is the smaller lr
    out = summarise_finetune("digits", {"0.1": _ok(dev=0.6, test=0.3), "1e-05": _ok(dev=0.6, test=0.8)})
    assert out["best_lr"] == 1e-05 and out["test_top1"] == 0.8


def test_diverged_lrs_are_skipped() -> None:
    per_lr = {"0.01": _ok(dev=0.7, test=0.6), "0.03": _diverged(), "0.1": _diverged(1)}
    out = summarise_finetune("digits", per_lr)
    assert (out["best_lr"], out["dev_top1"], out["test_top1"]) == (0.01, 0.7, 0.6)
    assert out["per_lr"]["0.03"]["status"] == "diverged"  # still reported, just not selectable


def test_results_without_a_dev_accuracy_are_skipped() -> None:
    broken = {"status": "ok", "dev_top1": None, "test_top1": 0.99}
    out = summarise_finetune("digits", {"0.001": broken, "0.01": _ok(dev=0.2, test=0.1)})
    assert (out["best_lr"], out["test_top1"]) == (0.01, 0.1)


def test_every_lr_diverged_gives_no_selection() -> None:
    out = summarise_finetune("digits", {"0.01": _diverged(), "0.03": _diverged()})
    assert out["best_lr"] is None and out["dev_top1"] is None and out["test_top1"] is None
    assert "converged" not in out
    assert summarise_finetune("digits", {})["best_lr"] is None


@pytest.mark.parametrize("first", ["0.01", "0.03"])
def test_a_nan_dev_accuracy_never_wins(first: str) -> None:
    per_lr = {first: _ok(float("nan"), 0.99), ("0.03" if first == "0.01" else "0.01"): _ok(0.7, 0.6)}
    out = summarise_finetune("digits", per_lr)
    assert out["best_lr"] == float(next(k for k in per_lr if k != first)) and out["test_top1"] == 0.6
