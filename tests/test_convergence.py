"""The convergence rule every claim depends on (vitbench/train/convergence.py), on constructed loss curves."""

import pytest

from vitbench.train.convergence import check, curve

RULE = "drop over the last 20% of steps < 2% of the initial loss"


def test_a_flat_tail_has_converged_and_says_what_it_measured() -> None:
    points = [(0, 3.0)] + [(s, 0.5) for s in range(5, 101, 5)]
    assert check(points, 100) == {"rule": RULE, "converged": True, "rel_drop": 0.0, "first_half": 0.5,
                                  "second_half": 0.5, "initial": 3.0, "window": [80, 100], "points": 4}


def test_the_tail_is_the_steps_after_four_fifths_halved_and_relative_to_the_initial_loss() -> None:
    """Steps 81-100 (not 80): first half 85-90 mean 0.6, second half 95-100 mean 0.4, initial 4 → 0.05."""
    points = [(0, 4.0), (40, 2.0), (80, 100.0), (85, 0.7), (90, 0.5), (95, 0.45), (100, 0.35)]
    out = check(points, 100)
    assert out == {"rule": RULE, "converged": False, "rel_drop": 0.05, "first_half": 0.6, "second_half": 0.4,
                   "initial": 4.0, "window": [80, 100], "points": 4}


@pytest.mark.parametrize("drop, converged", [(0.019, True), (0.021, False), (-0.05, True)])
def test_the_two_percent_tolerance(drop: float, converged: bool) -> None:
    """A drop of 1.9 % of the initial loss is flat, 2.1 % is not; a rising tail is flat too."""
    tail = [(81, 0.5 + drop), (82, 0.5 + drop), (99, 0.5), (100, 0.5)]
    out = check([(0, 1.0), *tail], 100)
    assert out["converged"] is converged and out["rel_drop"] == pytest.approx(drop)


def test_an_odd_tail_puts_the_middle_point_in_the_second_half() -> None:
    out = check([(0, 1.0), (81, 0.6), (82, 0.6), (83, 0.3), (84, 0.3), (85, 0.3)], 100)
    assert (out["first_half"], out["second_half"], out["points"]) == (0.6, 0.3, 5)


def test_values_are_rounded_for_the_record() -> None:
    out = check([(0, 3.0), (81, 1 / 3), (82, 1 / 3), (99, 1 / 7), (100, 1 / 7)], 100)
    assert out["first_half"] == 0.333333 and out["second_half"] == 0.142857 and out["rel_drop"] == 0.06349


@pytest.mark.parametrize("points, n", [([], 0), ([(0, 1.0), (70, 0.5), (90, 0.4), (95, 0.4), (100, 0.4)], 3)])
def test_too_few_points_in_the_tail_is_unmeasurable(points: list, n: int) -> None:
    out = check(points, 100)
    assert out == {"rule": RULE, "converged": None, "rel_drop": None,
                   "reason": f"{n} logged losses in the last fifth (need 4)"}


def test_a_zero_initial_loss_does_not_divide_by_zero() -> None:
    out = check([(0, 0.0), (81, 0.0), (82, 0.0), (99, 0.0), (100, 0.0)], 100)
    assert out["converged"] is True and out["rel_drop"] == 0.0


def test_the_curve_is_one_phases_train_losses_the_last_line_per_step_wins() -> None:
    metrics = [{"event": "train", "phase": "pretrain", "step": "2", "loss": 1},
               {"event": "train", "phase": "pretrain", "step": 1, "loss": 2.0},
               {"event": "train", "phase": "finetune", "step": 1, "loss": 9.0},
               {"event": "eval", "phase": "pretrain", "step": 3, "loss": 9.0},
               {"event": "train", "phase": "pretrain", "step": 4, "loss": None},
               {"event": "train", "phase": "pretrain", "step": 2, "loss": 0.5}]
    out = curve(metrics, "pretrain")
    assert out == [(1, 2.0), (2, 0.5)] and all(type(s) is int and type(v) is float for s, v in out)


def test_a_drop_of_exactly_two_percent_is_not_flat() -> None:
    out = check([(0, 50.0), (81, 2.0), (82, 2.0), (99, 1.0), (100, 1.0)], 100)
    assert out["rel_drop"] == 0.02 and out["converged"] is False


def test_the_drop_is_relative_to_an_initial_loss_below_one_too() -> None:
    out = check([(0, 0.5), (81, 0.2), (82, 0.2), (99, 0.19), (100, 0.19)], 100)
    assert out["rel_drop"] == pytest.approx(0.02) and out["initial"] == 0.5


def test_the_initial_loss_is_recorded_rounded() -> None:
    assert check([(0, 1 / 3), (81, 0.1), (82, 0.1), (99, 0.1), (100, 0.1)], 100)["initial"] == 0.333333
