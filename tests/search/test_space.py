from __future__ import annotations

import numpy as np
import pytest

from tests.imports import modules_loaded_by
from vitcube.models import count_macs
from vitcube.search import DEFAULT_SPACE, InfeasibleBudgetError, make_strategy, min_reachable_macs
from vitcube.search.space import FACTORS, Space, validate_space


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"r": (1.2, 1.2)}, "empty"),
        ({"w": (1.0, 0.5)}, "inverted"),
        ({"d_i": (0.0, 1.0)}, "> 0"),
        ({"d_m": (float("nan"), 1.0)}, "finite"),
        ({"x": (0.5, 1.0)}, "unknown factor"),
        ({"r": (1.0,)}, "pair"),
    ],
)
def test_bad_bounds_are_rejected_with_a_reason(space, message) -> None:
    with pytest.raises(ValueError, match=message):
        validate_space(space)


def test_missing_factors_take_the_paper_ranges() -> None:
    assert validate_space({"r": (0.5, 1.0)}) == {**DEFAULT_SPACE, "r": (0.5, 1.0)}


def test_strategy_rejects_bad_bounds_before_anything_else(base, m0) -> None:
    with pytest.raises(ValueError, match="inverted"):
        make_strategy("gp", base=base, max_macs=m0, space={"r": (1.5, 0.8)})


def test_infeasible_budget_names_the_smallest_reachable_macs(base) -> None:
    lowest = min_reachable_macs(base)
    with pytest.raises(InfeasibleBudgetError) as info:
        make_strategy("random", base=base, max_macs=lowest - 1)
    assert info.value.min_macs == lowest
    assert f"{lowest:,}" in str(info.value)
    assert isinstance(info.value, ValueError)
    # The lowest reachable budget itself is fine.
    make_strategy("random", base=base, max_macs=lowest)


def test_min_macs_above_max_macs_is_rejected(base, m0) -> None:
    with pytest.raises(ValueError, match="min_macs"):
        make_strategy("sobol", base=base, max_macs=m0, min_macs=m0 + 1)


def test_min_reachable_is_the_lower_corner(base) -> None:
    lower = {f: lo for f, (lo, _) in DEFAULT_SPACE.items()}
    assert min_reachable_macs(base) == count_macs(base.scale(**lower))


def test_levels_round_every_request_to_what_it_builds(base) -> None:
    space = Space(base)
    rng = np.random.default_rng(0)
    requests = space.from_unit(rng.random((60, 4)))
    cands = space.candidates(space.snap(requests))
    by_levels = {tuple(row): i for i, row in enumerate(cands.levels.tolist())}
    for request, levels in zip(requests, space.snap(requests).tolist(), strict=True):
        i = by_levels[tuple(levels)]
        direct = base.scale(**dict(zip(FACTORS, map(float, request), strict=True)))
        rounded = base.scale(**dict(zip(FACTORS, map(float, cands.requested[i]), strict=True)))
        # The rounded request builds the very same network, with the cached effective
        # factors and MACs.
        assert direct.key() == rounded.key()
        assert count_macs(direct) == cands.macs[i]
        eff = direct.effective_factors()
        assert np.allclose([eff[f] for f in FACTORS], cands.effective[i])


def test_projection_lands_in_the_budget_band(base, m0) -> None:
    space = Space(base)
    rng = np.random.default_rng(1)
    found = space.project(rng.random((200, 4)), max_macs=m0, min_macs=m0 // 2, rng=rng)
    assert len(found) > 50
    assert (found.macs <= m0).all() and (found.macs >= m0 // 2).all()


def test_importing_search_and_a_plain_strategy_does_not_import_botorch_or_ax() -> None:
    code = (
        "from vitcube import search\n"
        "from vitcube.models import ArchConfig, count_macs\n"
        "base = ArchConfig.preset('mobilevitv2_050')\n"
        "s = search.make_strategy('random', base=base, max_macs=count_macs(base))\n"
        "assert len(s.suggest([], [], 2)) == 2\n"
        "search.reference_trials(base, count_macs(base) // 2)\n"
        "search.pareto_front([(0.5, 10)])\n"
    )
    assert modules_loaded_by(code, ("botorch", "gpytorch", "ax")) == []


def test_round_gives_a_short_request_that_builds_the_same_network(base) -> None:
    space = Space(base)
    request = {"r": 1.2345, "d_i": 1.777, "d_m": 1.111, "w": 0.6789}
    rounded = space.round(request)
    assert base.scale(**rounded).key() == base.scale(**request).key()
    assert all(len(repr(v)) <= 8 for v in rounded.values())  # e.g. 1.25, not 1.2500000381
