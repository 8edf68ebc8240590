"""search/ ranks scores, higher is better, whatever the metric: a minimised loss is handed in
as -loss (the service's MetricSpec.score), and the GP, ASHA and the Pareto front then prefer
the lowest losses without knowing which way the metric goes."""

from __future__ import annotations

import pytest

from vitcube.search import Observation, make_strategy, pareto_front
from vitcube.search.asha import promotable


def _loss(top1: float) -> float:
    """A validation loss that falls as the surrogate's top-1 rises, in units far from [0, 1]."""
    return 4.0 * (1.0 - top1) + 0.5


def test_a_gp_minimising_a_loss_through_negated_scores_finds_lower_losses(
    observe, base, m0
) -> None:
    max_macs = m0 // 2
    strategy = make_strategy("gp", base=base, max_macs=max_macs, seed=1, score_range=None)
    losses: list[float] = []
    observations: list[Observation] = []
    for _ in range(5):
        for requested in strategy.suggest(observations, [], 4):
            seen = observe(requested)
            losses.append(_loss(seen.top1))
            observations.append(Observation(seen.factors, -losses[-1], seen.macs))
    # The first 8 are the space-filling design; the GP's picks must beat its lowest loss.
    assert min(losses) < min(losses[:8])


def test_scores_outside_a_fraction_need_score_range_none(observe, base, m0) -> None:
    seen = observe({"r": 1.0, "d_i": 1.5, "d_m": 1.0, "w": 0.6})
    negated = Observation(seen.factors, -2.5, seen.macs)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        make_strategy("random", base=base, max_macs=m0).suggest([negated], [], 1)
    free = make_strategy("random", base=base, max_macs=m0, score_range=None)
    assert len(free.suggest([negated], [], 1)) == 1


def test_asha_promotes_the_lowest_losses_given_their_scores() -> None:
    losses = {1: 0.9, 2: 0.3, 3: 1.7, 4: 0.5, 5: 2.2, 6: 0.4}
    scores = {trial: -loss for trial, loss in losses.items()}
    # floor(6 / 3) = 2 promoted: the two lowest losses, lowest first.
    assert promotable(scores, paused=list(losses), eta=3) == [2, 6]


def test_the_front_of_scores_keeps_low_loss_at_low_macs() -> None:
    # (loss, MACs): a point is dominated when another has a lower loss for no more MACs.
    points = [(0.9, 100), (0.5, 200), (0.7, 200), (0.3, 400), (1.2, 150), (0.3, 500)]
    front = pareto_front([(-loss, macs) for loss, macs in points])
    assert front == [0, 1, 3]
