"""Search strategies: given observations and pending trials, propose factors to try next.

What a proposal depends on: the strategy's inputs (base, space, budget, objective, seed), the
observations and the pending trials handed to ``suggest`` — and, for ``gp``, one piece of
process state: the GP's hyperparameters from this process's last fit of the same search
(``_WARM_STARTS``), from which the next fit starts. That cache only speeds fitting up; the fit
still optimises the marginal likelihood on the current data, but it may settle in a different
local optimum than a cold fit, so a restarted server or another replica (which starts cold)
can propose differently from the same data. ``sobol`` continues its sequence from the number
of trials seen, so it needs no state. The service may rebuild a strategy for every planning
step. Every strategy shares one guarantee: each proposal is a *requested* ``(r, d_i, d_m, w)`` that
builds, through ``base.scale``, a network whose exact MACs lie in ``[min_macs, max_macs]``
and that is neither observed nor pending nor repeated in the batch. Identity of a network
is its effective factors (what the GP sees; identical networks have identical ones).

- ``random`` — the paper's method: uniform requests, rejected until within budget.
- ``sobol`` — scrambled Sobol requests (the sequence continues across calls), same rejection.
- ``gp`` — Bayesian optimisation (:mod:`search.acquisition`) on effective factors, over a
  pool of buildable, in-budget, unseen networks: a fixed Sobol pool, the same projected onto
  the budget boundary, and local perturbations of the best observations (of the observed
  front for ``pareto``). The budget is a filter on the pool, not a penalty, so 100 % of the
  proposals are feasible by construction. ``accuracy``: qLogNoisyExpectedImprovement, the
  in-budget observations as incumbents. ``pareto``: qLogNoisyExpectedHypervolumeImprovement
  on (top-1, −MACs / max_macs): the GP models top-1 only and the exact MACs of every point
  are appended to each posterior sample by a lookup (an ``MCMultiOutputObjective`` of X), so
  MACs carry neither noise nor model error; reference point (a little below the worst
  in-budget top-1, −1 = the budget); ``[min_macs, max_macs]`` is again a pool filter.
  Until :data:`SOBOL_INIT` distinct observations exist it proposes like ``sobol``.
- ``ax`` — Ax's ``Client`` (ax-platform >= 1.0, imported lazily) with its default generation
  strategy; its proposals are rounded to the lattice and projected onto the budget.

When random sampling finds too few feasible points within :data:`MAX_DRAWS` draws (a budget
far below the typical network of the space), the rest come from the budget projection so
that a search never stalls; fewer than ``n`` come back only when the lattice is exhausted.

Observations carry a *score*, higher is better (the ``top1`` field, named for the default
metric): a trial's top-1 as a fraction, or, given ``score_range=None``, any finite number the
caller derived from the metric it optimises (the service hands ``-val_loss`` for a minimised
loss), so no strategy knows which way a metric goes.

Imports ``models``, numpy and (lazily, inside the GP/Ax strategies) torch, botorch and ax.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from scipy.stats import qmc

from vitcube.models import ArchConfig, count_macs
from vitcube.search.pareto import non_dominated_ranks, pareto_front
from vitcube.search.space import (
    FACTORS,
    Candidates,
    InfeasibleBudgetError,
    Space,
    check_budget,
    feasible_mask,
    identity,
)

Objective = Literal["accuracy", "pareto"]
STRATEGIES = ("gp", "random", "sobol", "ax")

# GP proposals start once this many distinct networks have been observed (d + 2 = 6; the
# reference trials count). The 4-D ARD Matérn GP has 7 hyperparameters, fitted under priors;
# a larger design (BoTorch's tutorials use 2(d + 1)) would spend a quarter of a 40-trial
# search on space filling. Below it, the batch comes from the Sobol sequence.
SOBOL_INIT = len(FACTORS) + 2
# Size of the random/Sobol draw per attempt and the cap on draws before projecting.
DRAW_BATCH = 1024
MAX_DRAWS = 16_384
# GP candidate pool: Sobol points, their budget projections and local perturbations.
POOL_SOBOL = 2048
POOL_PROJECTED = 512
POOL_LOCAL = 512
LOCAL_TOP = 8
LOCAL_SIGMAS = (0.03, 0.1)
# Pareto objective: at most this many observations, by non-dominated rank, are incumbents.
BASELINE_MAX = 32
# What an observation's score must lie in unless a caller says otherwise: a top-1 fraction.
TOP1_RANGE = (0.0, 1.0)
ScoreRange = tuple[float, float] | None


@dataclass(frozen=True)
class Observation:
    """A completed trial: ``factors`` are the EFFECTIVE factors (what was built); ``top1`` is
    its score, higher is better (its top-1 for the default metric; see the module docstring)."""

    factors: dict[str, float]
    top1: float
    macs: int


@dataclass(frozen=True)
class ReferenceTrial:
    """A baseline shrink the search must beat: ``name`` is "width_only" or "compound"."""

    name: str
    factors: dict[str, float] = field(default_factory=dict)


def validate_observations(
    observations: Sequence[Observation], *, score_range: ScoreRange = TOP1_RANGE
) -> None:
    """Raise ``ValueError`` naming the first bad observation (NaN, a score outside
    ``score_range`` — None: any finite score —, ...)."""
    for i, obs in enumerate(observations):
        if not isinstance(obs, Observation):
            raise ValueError(f"observation {i} must be an Observation, got {type(obs).__name__}")
        missing = [f for f in FACTORS if f not in obs.factors]
        if missing:
            raise ValueError(f"observation {i} lacks factor(s) {missing}")
        for f in FACTORS:
            v = obs.factors[f]
            if not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
                raise ValueError(f"observation {i} has factor {f}={v!r}; must be finite and > 0")
        if not (isinstance(obs.top1, int | float) and math.isfinite(obs.top1)):
            raise ValueError(f"observation {i} has top1={obs.top1!r}; must be a finite number")
        if score_range is not None and not score_range[0] <= obs.top1 <= score_range[1]:
            low, high = score_range
            raise ValueError(
                f"observation {i} has top1={obs.top1}; must be a fraction in [{low:g}, {high:g}]"
            )
        if not isinstance(obs.macs, int | np.integer) or obs.macs <= 0:
            raise ValueError(f"observation {i} has macs={obs.macs!r}; must be a positive integer")


def _validate_pending(pending: Sequence[Mapping[str, float]]) -> None:
    for i, p in enumerate(pending):
        for f in FACTORS:
            v = p.get(f) if isinstance(p, Mapping) else None
            if not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
                raise ValueError(f"pending {i} has factor {f}={v!r}; must be finite and > 0")


class Strategy:
    """Base class: budget checks, identities of seen networks, sampling helpers."""

    name = "base"

    def __init__(
        self,
        *,
        base: ArchConfig,
        max_macs: int,
        objective: Objective = "accuracy",
        space: Mapping[str, Sequence[float]] | None = None,
        seed: int = 0,
        min_macs: int | None = None,
        score_range: ScoreRange = TOP1_RANGE,
    ) -> None:
        if objective not in ("accuracy", "pareto"):
            raise ValueError(f"objective must be 'accuracy' or 'pareto', got {objective!r}")
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ValueError(f"seed must be an integer, got {seed!r}")
        self.space = Space(base, space)
        check_budget(base, self.space.bounds, max_macs=max_macs, min_macs=min_macs)
        self.base = base
        self.max_macs = int(max_macs)
        self.min_macs = None if min_macs is None else int(min_macs)
        self.objective: Objective = objective
        self.seed = seed
        self.score_range = score_range

    # -- public -------------------------------------------------------------------------
    def suggest(
        self,
        observations: Sequence[Observation],
        pending: Sequence[Mapping[str, float]],
        n: int,
    ) -> list[dict[str, float]]:
        """Propose up to ``n`` requested factor dicts (see the module docstring)."""
        if not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be a non-negative integer, got {n!r}")
        validate_observations(observations, score_range=self.score_range)
        _validate_pending(pending)
        if n == 0:
            return []
        seen = {identity([o.factors[f] for f in FACTORS]) for o in observations}
        seen |= {identity(self.effective_of(p)) for p in pending}
        chosen = self._propose(list(observations), list(pending), n, seen)
        return self._verified(chosen, seen)[:n]

    def effective_of(self, requested: Mapping[str, float]) -> list[float]:
        arch = self.base.scale(**{f: float(requested[f]) for f in FACTORS})
        eff = arch.effective_factors()
        return [eff[f] for f in FACTORS]

    # -- to implement -----------------------------------------------------------------
    def _propose(
        self,
        observations: list[Observation],
        pending: list[Mapping[str, float]],
        n: int,
        seen: set[tuple[float, ...]],
    ) -> Candidates:
        raise NotImplementedError

    # -- helpers ----------------------------------------------------------------------
    def _verified(self, chosen: Candidates, seen: set[tuple[float, ...]]) -> list[dict[str, float]]:
        """Rebuild every proposal and keep those that are in budget and new (belt and braces)."""
        out: list[dict[str, float]] = []
        taken = set(seen)
        for request in chosen.requested_dicts():
            arch = self.base.scale(**request)
            macs = count_macs(arch)
            eff = arch.effective_factors()
            key = identity([eff[f] for f in FACTORS])
            ok = macs <= self.max_macs and (self.min_macs is None or macs >= self.min_macs)
            if ok and key not in taken:
                taken.add(key)
                out.append(request)
        return out

    def _unseen(self, cands: Candidates, seen: set[tuple[float, ...]]) -> Candidates:
        keep = np.array([identity(row) not in seen for row in cands.effective], dtype=bool)
        return cands.take(keep) if len(cands) else cands

    def _feasible(self, cands: Candidates) -> Candidates:
        return cands.take(feasible_mask(cands.macs, max_macs=self.max_macs, min_macs=self.min_macs))

    def _sample(
        self,
        n: int,
        seen: set[tuple[float, ...]],
        draw: Any,
        rng: np.random.Generator,
    ) -> Candidates:
        """Rejection-sample ``n`` new feasible networks from ``draw(k) -> k x 4`` unit points.

        Order of the draw is kept (Sobol points stay space-filling); after
        :data:`MAX_DRAWS` draws the rest comes from budget projections of further draws.
        """
        picked: list[Candidates] = []
        taken = set(seen)
        count = 0

        def take(cands: Candidates, order: np.ndarray) -> None:
            nonlocal count
            for i in order:
                key = identity(cands.effective[i])
                if count < n and key not in taken:
                    taken.add(key)
                    picked.append(cands.take(np.array([i])))
                    count += 1

        draws = 0
        while count < n and draws < MAX_DRAWS:
            unit = draw(DRAW_BATCH)
            draws += len(unit)
            levels = self.space.snap(self.space.from_unit(unit))
            macs = self.space.macs_of_rows(levels)
            ok = feasible_mask(macs, max_macs=self.max_macs, min_macs=self.min_macs)
            cands = self.space.candidates(levels[ok]) if ok.any() else None
            if cands is None:
                continue
            # candidates() sorts rows; restore the draw order of first occurrence.
            first = _first_occurrence_order(levels[ok], cands.levels)
            take(cands, first)
        tries = 0
        while count < n and tries < 8:
            tries += 1
            projected = self.space.project(
                rng.random((DRAW_BATCH, len(FACTORS))),
                max_macs=self.max_macs,
                min_macs=self.min_macs,
                rng=rng,
            )
            take(projected, rng.permutation(len(projected)))
        if count < n and self.space.lattice_size <= 200_000:
            # Small lattices: enumerate, so "fewer than n" really means exhausted.
            every = self._feasible(self.space.enumerate_all())
            take(every, rng.permutation(len(every)))
        if not picked:
            return _empty()
        return Candidates.concat(picked)


def _first_occurrence_order(rows: np.ndarray, unique_rows: np.ndarray) -> np.ndarray:
    """Indices into ``unique_rows`` ordered by first appearance in ``rows``."""
    index = {tuple(r): i for i, r in enumerate(unique_rows.tolist())}
    order: list[int] = []
    seen: set[int] = set()
    for r in rows.tolist():
        i = index[tuple(r)]
        if i not in seen:
            seen.add(i)
            order.append(i)
    return np.array(order, dtype=np.int64)


def _empty() -> Candidates:
    z = np.zeros((0, len(FACTORS)))
    return Candidates(z.astype(np.int64), z, z, np.zeros(0, dtype=np.int64))


class RandomStrategy(Strategy):
    """The paper's method: uniform requests, rejection to the budget."""

    name = "random"

    def _propose(
        self,
        observations: list[Observation],
        pending: list[Mapping[str, float]],
        n: int,
        seen: set[tuple[float, ...]],
    ) -> Candidates:
        # A fresh stream per call that still differs between calls of one search.
        rng = np.random.default_rng([self.seed, len(observations), len(pending)])
        return self._sample(n, seen, lambda k: rng.random((k, len(FACTORS))), rng)


class SobolStrategy(Strategy):
    """Scrambled Sobol requests; the sequence continues from the number of trials so far."""

    name = "sobol"

    def _propose(
        self,
        observations: list[Observation],
        pending: list[Mapping[str, float]],
        n: int,
        seen: set[tuple[float, ...]],
    ) -> Candidates:
        return self._sobol(len(observations) + len(pending), n, seen)

    def _sobol(self, skip: int, n: int, seen: set[tuple[float, ...]]) -> Candidates:
        engine = qmc.Sobol(d=len(FACTORS), scramble=True, rng=self.seed)
        if skip:
            engine.fast_forward(skip)
        rng = np.random.default_rng([self.seed, skip])
        return self._sample(n, seen, lambda k: engine.random(k), rng)


class GPStrategy(SobolStrategy):
    """Bayesian optimisation over buildable, in-budget networks (module docstring)."""

    name = "gp"

    def _propose(
        self,
        observations: list[Observation],
        pending: list[Mapping[str, float]],
        n: int,
        seen: set[tuple[float, ...]],
    ) -> Candidates:
        distinct = {identity([o.factors[f] for f in FACTORS]) for o in observations}
        if len(distinct) < SOBOL_INIT:
            return self._sobol(len(observations) + len(pending), n, seen)
        import torch

        from vitcube.search.acquisition import propose_from_choices

        pool = self._pool(observations, seen)
        if len(pool) == 0:
            return self._sobol(len(observations) + len(pending), n, seen)
        space = self.space
        X = np.array([[o.factors[f] for f in FACTORS] for o in observations])
        Y = np.array([[o.top1] for o in observations])
        macs = np.array([o.macs for o in observations], dtype=np.int64)
        in_budget = feasible_mask(macs, max_macs=self.max_macs, min_macs=self.min_macs)
        bounds = np.stack([space.lower, space.upper])
        X_pending = np.array([self.effective_of(p) for p in pending]).reshape(-1, len(FACTORS))
        known = None
        ref_point = None
        if self.objective == "pareto":
            # MACs are exact: the GP models top-1 only and -MACs/max_macs is looked up.
            lookup = _MacsLookup(self.max_macs)
            lookup.add(X, macs)
            lookup.add(pool.effective, pool.macs)
            if len(pending):
                lookup.add(
                    X_pending,
                    np.array([count_macs(self.base.scale(**p)) for p in pending]),
                )
            known = lookup
            good = Y[in_budget, 0] if in_budget.any() else Y[:, 0]
            spread = float(good.max() - good.min()) or 0.1
            # Reference point: a little below the worst in-budget accuracy, and the budget.
            ref_point = [float(good.min()) - 0.1 * spread, -1.0]
            # Incumbents for the noisy hypervolume: observations on and near the observed
            # front. Points several fronts behind are hardly ever Pareto-optimal under a
            # posterior sample, and every baseline point enlarges the box decomposition
            # that each MC sample needs.
            ranks = np.array(non_dominated_ranks([(o.top1, o.macs) for o in observations]))
            order = np.lexsort((-Y[:, 0], ranks))  # by front, then by accuracy
            order = order[in_budget[order]][:BASELINE_MAX]
            in_budget = np.zeros_like(in_budget)
            in_budget[order] = True
        picked = propose_from_choices(
            torch.as_tensor(X),
            torch.as_tensor(Y),
            torch.as_tensor(pool.effective),
            n,
            X_pending=torch.as_tensor(X_pending) if len(X_pending) else None,
            known_objectives=known,
            ref_point=ref_point,
            baseline_mask=torch.as_tensor(in_budget),
            bounds=torch.as_tensor(bounds),
            seed=self.seed + len(observations),
            hyperparameter_cache=_warm_cache(self),
        )
        chosen = pool.take(np.array(picked, dtype=np.int64))
        if len(chosen) < n:
            # The pool ran dry (a small or nearly exhausted lattice): fill from the sequence,
            # which enumerates small lattices, so "fewer than n" means exhausted.
            taken = seen | {identity(row) for row in chosen.effective}
            more = self._sobol(len(observations) + len(pending), n - len(chosen), taken)
            chosen = Candidates.concat([chosen, more])
        return chosen

    def _pool(self, observations: list[Observation], seen: set[tuple[float, ...]]) -> Candidates:
        space = self.space
        rng = np.random.default_rng([self.seed, len(observations), 7])
        # The same Sobol pool on every call of a search: its MACs are cached after the first.
        sobol = qmc.Sobol(d=len(FACTORS), scramble=True, rng=self.seed).random(POOL_SOBOL)
        parts = [space.from_unit_points(sobol)]
        parts.append(
            space.project(
                sobol[rng.choice(POOL_SOBOL, POOL_PROJECTED, replace=False)],
                max_macs=self.max_macs,
                min_macs=self.min_macs,
                rng=rng,
            )
        )
        admissible = [
            o
            for o in observations
            if o.macs <= self.max_macs and (self.min_macs is None or o.macs >= self.min_macs)
        ] or observations
        if self.objective == "pareto":
            front = pareto_front([(o.top1, o.macs) for o in admissible])
            # Spread the centres along the front.
            step = max(1, len(front) // LOCAL_TOP)
            ranked = [admissible[i] for i in front[::step]][:LOCAL_TOP]
        else:
            ranked = sorted(admissible, key=lambda o: -o.top1)[:LOCAL_TOP]
        if ranked:
            centres = space.to_unit(np.array([[o.factors[f] for f in FACTORS] for o in ranked]))
            per = POOL_LOCAL // (len(centres) * len(LOCAL_SIGMAS)) + 1
            local = np.concatenate(
                [
                    c + rng.normal(scale=s, size=(per, len(FACTORS)))
                    for c in centres
                    for s in LOCAL_SIGMAS
                ]
            )
            local = np.clip(local, 0.0, 1.0)
            parts.append(space.from_unit_points(local))
            # Perturbations that overshoot the budget are pulled back onto it.
            parts.append(space.project(local, max_macs=self.max_macs, min_macs=self.min_macs))
        pool = self._feasible(Candidates.concat(parts))
        _, first = np.unique(pool.levels, axis=0, return_index=True)
        return self._unseen(pool.take(np.sort(first)), seen)


# Fitted GP hyperparameters per search (strategy identity), for warm starts: strategies
# are rebuilt per planning call, this cache lives as long as the process. It is the one
# process state a proposal depends on (see the module docstring); bounded, oldest out first.
_WARM_STARTS: dict[tuple[Any, ...], dict[str, Any]] = {}
_WARM_STARTS_LIMIT = 256


def _warm_cache(strategy: Strategy) -> dict[str, Any]:
    key = (
        strategy.base,
        tuple(sorted(strategy.space.bounds.items())),
        strategy.max_macs,
        strategy.min_macs,
        strategy.objective,
        strategy.seed,
    )
    if key not in _WARM_STARTS and len(_WARM_STARTS) >= _WARM_STARTS_LIMIT:
        _WARM_STARTS.pop(next(iter(_WARM_STARTS)))
    return _WARM_STARTS.setdefault(key, {})


class _MacsLookup:
    """Exact ``-MACs / max_macs`` of networks known by their effective factors."""

    def __init__(self, max_macs: int) -> None:
        self.max_macs = max_macs
        self.table: dict[tuple[float, ...], float] = {}

    def add(self, effective: np.ndarray, macs: np.ndarray) -> None:
        for row, m in zip(np.asarray(effective).tolist(), np.asarray(macs).tolist(), strict=True):
            self.table[identity(row)] = -float(m) / self.max_macs

    def __call__(self, X: Any) -> Any:
        import torch

        flat = X.reshape(-1, X.shape[-1]).tolist()
        values = [self.table[identity(row)] for row in flat]
        return torch.tensor(values, dtype=X.dtype).reshape(*X.shape[:-1], 1)


def make_strategy(
    name: str,
    *,
    base: ArchConfig,
    max_macs: int,
    objective: Objective = "accuracy",
    space: Mapping[str, Sequence[float]] | None = None,
    seed: int = 0,
    min_macs: int | None = None,
    score_range: ScoreRange = TOP1_RANGE,
) -> Strategy:
    """Build a strategy by name; raises ``ValueError``/``InfeasibleBudgetError`` on bad input.

    ``score_range``: what observations' scores must lie in (None: any finite number)."""
    classes: dict[str, type[Strategy]] = {
        "gp": GPStrategy,
        "random": RandomStrategy,
        "sobol": SobolStrategy,
    }
    if name == "ax":
        from vitcube.search.ax_strategy import AxStrategy

        classes["ax"] = AxStrategy
    if name not in classes:
        raise ValueError(f"unknown strategy {name!r}; choose one of {list(STRATEGIES)}")
    return classes[name](
        base=base,
        max_macs=max_macs,
        objective=objective,
        space=space,
        seed=seed,
        min_macs=min_macs,
        score_range=score_range,
    )


def reference_trials(base: ArchConfig, max_macs: int) -> list[ReferenceTrial]:
    """Width-only and EfficientNet compound shrinks of ``base`` to ``max_macs``.

    ``width_only``: the largest ``w`` (``r = d_i = d_m = 1``) under the budget, by bisection on
    the exact count. ``compound``: ``d = α^φ`` (both ``d_i`` and ``d_m``), ``w = β^φ``,
    ``r = γ^φ`` with α=1.2, β=1.1, γ=1.15 (α·β²·γ² ≈ 1.92, EfficientNet's grid search) and the
    largest ``φ`` under the budget (usually negative). A rule that cannot reach the budget
    at all (even its smallest network is over it) is left out of the list.
    """
    if not isinstance(max_macs, int | np.integer) or max_macs <= 0:
        raise ValueError(f"max_macs must be a positive integer, got {max_macs!r}")
    out: list[ReferenceTrial] = []
    w = _largest_under(lambda t: {"w": t}, base, max_macs, lo=0.05, hi=4.0)
    if w is not None:
        out.append(ReferenceTrial("width_only", {"r": 1.0, "d_i": 1.0, "d_m": 1.0, "w": w}))

    def compound(phi: float) -> dict[str, float]:
        d = ALPHA**phi
        return {"r": GAMMA**phi, "d_i": d, "d_m": d, "w": BETA**phi}

    phi = _largest_under(compound, base, max_macs, lo=-12.0, hi=8.0)
    if phi is not None:
        out.append(ReferenceTrial("compound", compound(phi)))
    return out


ALPHA, BETA, GAMMA = 1.2, 1.1, 1.15


def _largest_under(
    factors_of: Any,
    base: ArchConfig,
    max_macs: int,
    *,
    lo: float,
    hi: float,
    steps: int = 50,
    scan: int = 64,
) -> float | None:
    """Largest t in [lo, hi] (to bisection precision) whose network fits ``max_macs``.

    "Fits" is false at both ends: above the budget for large t, unbuildable (an input below the
    network's minimum resolution) for small t. So a fitting start is found by scanning down
    from ``hi`` first, then the boundary between it and the next larger grid point is bisected.
    """

    def fits(t: float) -> bool:
        try:
            arch = base.scale(**factors_of(t))
        except ValueError:
            return False
        return count_macs(arch) <= max_macs

    if fits(hi):
        return hi
    grid = [hi - (hi - lo) * k / scan for k in range(scan + 1)]
    for above, below in itertools.pairwise(grid):
        if fits(below):
            lo, hi = below, above
            break
    else:
        return None
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return lo


__all__ = [
    "InfeasibleBudgetError",
    "Observation",
    "ReferenceTrial",
    "Strategy",
    "make_strategy",
    "reference_trials",
]
