from __future__ import annotations

import math

import numpy as np
import pytest

from vitcube.search import pareto_front
from vitcube.search.pareto import crowding_distance, hypervolume, non_dominated_ranks, select_top

# (top1, macs): maximise top-1, minimise MACs.
POINTS = [
    (0.70, 100),  # 0 front
    (0.80, 200),  # 1 front
    (0.75, 200),  # 2 dominated by 1
    (0.90, 400),  # 3 front
    (0.60, 150),  # 4 dominated by 0
    (0.90, 500),  # 5 dominated by 3 (same top-1, more MACs)
    (0.80, 200),  # 6 duplicate of 1: both on the front
    (0.65, 90),  # 7 front
    (0.55, 160),  # 8 dominated by 4, which is dominated by 0
]


def test_front_is_the_non_dominated_points_by_increasing_macs() -> None:
    assert pareto_front(POINTS) == [7, 0, 1, 6, 3]
    assert pareto_front([]) == []
    assert pareto_front([(0.5, 10)]) == [0]


def test_ranks_peel_fronts() -> None:
    assert non_dominated_ranks(POINTS) == [0, 0, 1, 0, 1, 1, 0, 0, 2]


def test_crowding_marks_the_extremes_infinite() -> None:
    d = crowding_distance([(0.6, 100), (0.7, 200), (0.8, 300), (0.9, 400)])
    assert math.isinf(d[0]) and math.isinf(d[3])
    assert d[1] == pytest.approx(d[2])


def test_top_fraction_takes_whole_fronts_then_spreads_the_last() -> None:
    # Ten points on one front, select 20 %: two, spread apart (the two extremes' niches).
    front = [(0.5 + 0.04 * i, 100 + 50 * i) for i in range(10)]
    chosen = select_top(front, 0.2)
    assert len(chosen) == 2
    assert abs(chosen[0] - chosen[1]) >= 5
    # A front of 5 plus dominated points: 20 % of 25 is exactly that front.
    dominated = [(0.3 + 0.01 * i, 1000 + i) for i in range(20)]
    chosen = select_top(front[:5] + dominated, 0.2)
    assert sorted(chosen) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError):
        select_top(front, 0.0)


def test_hypervolume_of_a_staircase() -> None:
    Y = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0], [1.0, 1.0]])
    # Union of boxes above (0, 0): 3 + 2 + 1 (dominated point adds nothing).
    assert hypervolume(Y, [0.0, 0.0]) == pytest.approx(6.0)
    assert hypervolume(Y, [5.0, 5.0]) == 0.0


def test_non_finite_points_are_rejected() -> None:
    with pytest.raises(ValueError, match="finite"):
        pareto_front([(float("nan"), 10)])
