from __future__ import annotations

import math

import pytest

from vitcube.models import ArchConfig, count_macs
from vitcube.search import Observation, make_strategy, min_reachable_macs, reference_trials
from vitcube.search.space import FACTORS
from vitcube.search.strategies import SOBOL_INIT


def _check_proposals(base, proposals, *, max_macs, min_macs=None, taken=()):
    keys = {base.scale(**p).key() for p in taken}
    for p in proposals:
        assert set(p) == set(FACTORS)
        arch = base.scale(**p)
        macs = count_macs(arch)
        assert macs <= max_macs
        if min_macs is not None:
            assert macs >= min_macs
        assert arch.key() not in keys, "proposed a network already observed/pending/in batch"
        keys.add(arch.key())


@pytest.mark.parametrize("name", ["random", "sobol", "gp"])
@pytest.mark.parametrize("objective", ["accuracy", "pareto"])
def test_every_proposal_fits_the_budget_and_is_new(observe, base, m0, name, objective) -> None:
    """A whole small search: batches of 4 with one batch pending, 100 % within budget."""
    max_macs = m0 // 2
    min_macs = m0 // 6 if objective == "pareto" else None
    strategy = make_strategy(
        name, base=base, max_macs=max_macs, objective=objective, seed=3, min_macs=min_macs
    )
    observations: list[Observation] = []
    requested: list[dict[str, float]] = []
    pending: list[dict[str, float]] = []
    rounds = 5 if name == "gp" else 8
    for _ in range(rounds):
        batch = strategy.suggest(observations, pending, 4)
        assert len(batch) == 4
        _check_proposals(
            base, batch, max_macs=max_macs, min_macs=min_macs, taken=requested + pending
        )
        # The previous batch completes, this one becomes pending.
        observations += [observe(p) for p in pending]
        requested += pending
        pending = batch
    assert len(observations) >= SOBOL_INIT  # the GP really ran


def test_gp_batch_is_diverse_and_respects_pending(observe, base, m0) -> None:
    strategy = make_strategy("gp", base=base, max_macs=m0, seed=0)
    sobol = make_strategy("sobol", base=base, max_macs=m0, seed=5)
    observations = [observe(p) for p in sobol.suggest([], [], 10)]
    first = strategy.suggest(observations, [], 4)
    _check_proposals(base, first, max_macs=m0)
    again = strategy.suggest(observations, first, 4)
    _check_proposals(base, again, max_macs=m0, taken=first)
    # Fantasies spread the batch: it is not four copies of one neighbourhood.
    spread = max(
        math.dist([a[f] for f in FACTORS], [b[f] for f in FACTORS]) for a in first for b in first
    )
    assert spread > 0.05


def test_gp_improves_on_its_initial_design(observe, base, m0) -> None:
    max_macs = m0 // 2
    strategy = make_strategy("gp", base=base, max_macs=max_macs, seed=1)
    observations: list[Observation] = []
    for _ in range(5):
        observations += [observe(p) for p in strategy.suggest(observations, [], 4)]
    initial = max(o.top1 for o in observations[:8])
    assert max(o.top1 for o in observations) > initial


@pytest.mark.parametrize("name", ["random", "gp"])
def test_duplicates_of_observed_networks_are_never_proposed(observe, base, name) -> None:
    # A tiny space: few networks, so repeats would be likely without dedupe, and the
    # search runs until the space is exhausted.
    space = {"r": (1.0, 1.1), "d_i": (1.0, 1.1), "d_m": (1.0, 1.3), "w": (1.0, 1.01)}
    lowest = min_reachable_macs(base, space)
    strategy = make_strategy(name, base=base, max_macs=lowest * 3, space=space, seed=0)
    seen: list[dict[str, float]] = []
    while True:
        batch = strategy.suggest([observe(p) for p in seen], [], 4)
        _check_proposals(base, batch, max_macs=lowest * 3, taken=seen)
        seen += batch
        if len(batch) < 4:
            break
    assert len(seen) == len({base.scale(**p).key() for p in seen})
    assert strategy.suggest([observe(p) for p in seen], [], 4) == []


def test_nan_and_out_of_range_observations_are_rejected(observe, base, m0) -> None:
    strategy = make_strategy("gp", base=base, max_macs=m0)
    good = observe({"r": 1.0, "d_i": 1.5, "d_m": 1.0, "w": 0.6})
    for bad, message in [
        (Observation(good.factors, float("nan"), good.macs), "top1"),
        (Observation(good.factors, 1.5, good.macs), r"\[0, 1\]"),
        (Observation({**good.factors, "w": float("nan")}, 0.5, good.macs), "w="),
        (Observation(good.factors, 0.5, 0), "macs"),
    ]:
        with pytest.raises(ValueError, match=message):
            strategy.suggest([good, bad], [], 2)
    with pytest.raises(ValueError, match="pending"):
        strategy.suggest([good], [{"r": 1.0, "d_i": 1.0, "d_m": 1.0}], 2)


def test_unknown_strategy_and_objective(observe, base, m0) -> None:
    with pytest.raises(ValueError, match="unknown strategy"):
        make_strategy("hyperband", base=base, max_macs=m0)
    with pytest.raises(ValueError, match="objective"):
        make_strategy("gp", base=base, max_macs=m0, objective="speed")  # type: ignore[arg-type]


@pytest.mark.parametrize("c", [0.25, 0.5, 0.9, 1.5])
def test_reference_trials_fit_the_budget(observe, base, m0, c) -> None:
    max_macs = int(c * m0)
    refs = {t.name: t.factors for t in reference_trials(base, max_macs)}
    assert set(refs) == {"width_only", "compound"}
    width = refs["width_only"]
    assert (width["r"], width["d_i"], width["d_m"]) == (1.0, 1.0, 1.0)
    for factors in refs.values():
        assert count_macs(base.scale(**factors)) <= max_macs
    # Width-only is the largest width under the budget: a bit more width overshoots.
    bigger = base.scale(**{**width, "w": width["w"] * 1.02})
    assert count_macs(bigger) > max_macs or bigger.key() == base.scale(**width).key()
    compound = refs["compound"]
    assert compound["d_i"] == compound["d_m"]
    phi = math.log(compound["w"]) / math.log(1.1)
    assert math.isclose(compound["r"], 1.15**phi, rel_tol=1e-9)
    # Shrinking needs phi < 0 (growing phi >= 0, possibly 0: one more block per stage
    # may already overshoot).
    assert phi < 0 if c < 1 else phi > -1e-9


def test_compound_reference_exists_for_a_small_base_resolution() -> None:
    # At R0 = 64 px the most negative phi builds an input below the 32 px minimum; the
    # compound shrink must still be found between "unbuildable" and "over budget".
    small = ArchConfig.from_dict(
        {"family": "mobilevit_v2", "width": 0.5, "resolution": 64, "num_classes": 10}
    )
    max_macs = count_macs(small) // 2
    refs = {t.name: t.factors for t in reference_trials(small, max_macs)}
    assert set(refs) == {"width_only", "compound"}
    compound = small.scale(**refs["compound"])
    assert count_macs(compound) <= max_macs
    assert compound.resolution < 64  # it shrank resolution, not only width


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["accuracy", "pareto"])
def test_ax_strategy_fits_the_budget(observe, base, m0, objective) -> None:
    max_macs = m0 // 2
    min_macs = m0 // 6 if objective == "pareto" else None
    strategy = make_strategy(
        "ax", base=base, max_macs=max_macs, objective=objective, min_macs=min_macs, seed=0
    )
    # Enough completed trials that Ax leaves its Sobol stage and runs its own BO.
    sobol = make_strategy("sobol", base=base, max_macs=max_macs, min_macs=min_macs, seed=2)
    requested = sobol.suggest([], [], 10)
    observations = [observe(p) for p in requested]
    pending = strategy.suggest(observations, [], 4)
    assert len(pending) == 4
    _check_proposals(base, pending, max_macs=max_macs, min_macs=min_macs, taken=requested)
    more = strategy.suggest(observations, pending, 2)
    _check_proposals(base, more, max_macs=max_macs, min_macs=min_macs, taken=requested + pending)
