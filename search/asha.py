"""Asynchronous successive halving: which paused trials to promote, and which rung to model.

ASHA (Li et al., "A System for Massively Parallel Hyperparameter Tuning", MLSys 2020) trains
every configuration to the first rung, and whenever a worker is free promotes a trial paused at
rung k if its result is among the best 1/eta of *all* results seen at rung k so far, without
waiting for the rung to fill. `promotable` is that rule; the service applies it under its
planning lock (one promotion per trial) and the benchmarks' simulator applies the same function.

`start_rung` is asynchronous Hyperband's hedge (Li et al., 2018; the ASHA paper's brackets): a
share of the new configurations start at a later rung, in Hyperband's proportions, so a network
that starts slowly but ends best is not always judged on its first epochs.

`model_rung` is BOHB's choice of evidence for the GP (Falkner et al., 2018): fit on the highest
rung that holds enough results, so cheap early results steer the search until the expensive
ones are numerous enough to trust.

Pure Python on plain values; imports nothing (the service and benchmarks pass ids and floats).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import TypeVar

Key = TypeVar("Key", bound=Hashable)


def promotable(results: Mapping[Key, float], paused: Iterable[Key], eta: int) -> list[Key]:
    """The paused trials of one rung that ASHA promotes now, best first.

    results: every trial's score at this rung, higher is better (its top-1, or the service's
    score of the search's metric: -loss for a minimised loss), those still paused here and
    those that went on;
    paused: the trials waiting at this rung. A trial is promoted when it ranks in the top
    floor(len(results) / eta) of `results`; ties rank by the order of `results` (first seen
    first), so the answer is deterministic.
    """
    if eta < 2:
        raise ValueError(f"eta must be at least 2, got {eta}")
    order = {key: i for i, key in enumerate(results)}
    ranked = sorted(results, key=lambda key: (-results[key], order[key]))
    top = set(ranked[: len(results) // eta])
    waiting = [key for key in paused if key in top]
    return sorted(waiting, key=lambda key: (-results[key], order[key]))


def model_rung(counts: Sequence[int], *, min_points: int) -> int:
    """The highest rung index whose count of results is at least `min_points` (0 if none is).

    counts: results per rung, first rung first."""
    for k in range(len(counts) - 1, -1, -1):
        if counts[k] >= min_points:
            return k
    return 0


def start_rung(started: Sequence[int], *, eta: int, brackets: int) -> int:
    """The rung index a new configuration starts at.

    started: how many configurations started at each rung so far (one count per rung, first
    rung first). Start rung s < min(brackets, len(started)) has Hyperband's weight
    eta^(n-1-s) / (n-s) for n rungs (bracket s_max - s of Hyperband with s_max = n - 1: every
    bracket spends about the same epochs); the next configuration goes to the start rung whose
    count is furthest below its share, ties to the earlier rung. brackets 1: always rung 0.
    """
    n = len(started)
    choices = range(min(max(brackets, 1), n))
    weights = [eta ** (n - 1 - s) / (n - s) for s in choices]
    return min(choices, key=lambda s: (started[s] / weights[s], s))
