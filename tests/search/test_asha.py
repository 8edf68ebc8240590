"""ASHA's promotion rule and BOHB's choice of rung, on plain values."""

from __future__ import annotations

import pytest

from vitcube.search.asha import model_rung, promotable, start_rung


def test_only_the_top_fraction_of_a_rung_is_promoted_and_only_if_it_waits_there() -> None:
    results = {1: 0.50, 2: 0.90, 3: 0.70, 4: 0.60, 5: 0.80, 6: 0.40}
    # The best 6 // 3 = 2 are trials 2 and 5; 2 went on already, so only 5 waits.
    assert promotable(results, paused=[1, 3, 4, 5, 6], eta=3) == [5]
    assert promotable(results, paused=[2, 5], eta=2) == [2, 5]  # top 3, best first
    assert promotable(results, paused=[3], eta=2) == [3]


def test_fewer_results_than_eta_promote_nobody() -> None:
    assert promotable({1: 0.9, 2: 0.1}, paused=[1, 2], eta=3) == []


def test_ties_go_to_the_first_result_seen() -> None:
    assert promotable({7: 0.5, 3: 0.5, 9: 0.5, 1: 0.5}, paused=[1, 3, 7, 9], eta=2) == [7, 3]


def test_eta_below_two_is_refused() -> None:
    with pytest.raises(ValueError, match="eta must be at least 2"):
        promotable({1: 0.5}, paused=[1], eta=1)


def test_the_model_uses_the_highest_rung_with_enough_results() -> None:
    assert model_rung([20, 7, 6, 2], min_points=6) == 2
    assert model_rung([20, 7, 6, 2], min_points=7) == 1
    assert model_rung([3, 1], min_points=6) == 0  # too few anywhere: the first rung


def test_brackets_share_new_configurations_in_hyperbands_proportions() -> None:
    counts = [0, 0, 0, 0]
    for _ in range(49):  # Hyperband with 4 rungs, eta 3: brackets of 27, 12, 6 and 4
        counts[start_rung(counts, eta=3, brackets=4)] += 1
    assert counts == [27, 12, 6, 4]
    assert start_rung([5, 0, 0], eta=3, brackets=1) == 0  # plain ASHA
    assert start_rung([0, 0], eta=3, brackets=9) == 0  # capped by the rungs
