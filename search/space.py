"""The search cube: factors ↔ unit cube, rounding to buildable networks, exact MAC budgets.

A point of the cube is a request ``(r, d_i, d_m, w)`` that ``ArchConfig.scale`` turns into a
network. Each factor changes its own part of the network (resolution, MV2 block counts,
transformer depths, channel widths), and each part is a step function of its factor, so the
buildable networks form a lattice: one *level* per distinct part per factor. :class:`Space`
finds every level inside the bounds once (by bisection on the exact ``Arch.key()``), after
which rounding many requests is a vectorised ``searchsorted`` and MACs are counted once per
lattice point (``count_macs`` is pure Python; results are cached by level and reused by every
strategy on the same baseline).

MACs are non-decreasing in every factor, so the corner of lower bounds is the cheapest
network of a space (:func:`min_reachable_macs`) and a ray from that corner crosses the budget
once, which :meth:`Space.project` uses to put candidates on the budget boundary.

Imports ``models`` and numpy only; never botorch or ax (an import contract checks).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from vitcube.models import ArchConfig, count_macs

FACTORS: tuple[str, ...] = ("r", "d_i", "d_m", "w")
DEFAULT_SPACE: dict[str, tuple[float, float]] = {
    "r": (0.8, 1.7),
    "d_i": (1.3, 2.3),
    "d_m": (0.8, 1.6),
    "w": (0.4, 1.2),
}

# Breakpoints between levels are located to this fraction of a factor's range; a level
# narrower than that is skipped (it exists, the search just never proposes it).
_BREAKPOINT_TOL = 1e-5
_COARSE_GRID = 65
# Cached MAC counts across all spaces: (base, level ids) -> MACs.
_MACS_CACHE: dict[tuple[ArchConfig, int, int, int, int], int] = {}
_MACS_CACHE_LIMIT = 2_000_000
_LEVEL_IDS: dict[tuple[str, str], int] = {}


class InfeasibleBudgetError(ValueError):
    """No buildable network of the space meets the MAC budget.

    ``min_macs`` is the smallest number of MACs reachable in the space.
    """

    def __init__(self, message: str, *, min_macs: int) -> None:
        super().__init__(message)
        self.min_macs = min_macs


def validate_space(
    space: Mapping[str, Sequence[float]] | None,
) -> dict[str, tuple[float, float]]:
    """Check bounds and fill missing factors from :data:`DEFAULT_SPACE`.

    Raises ``ValueError`` naming the factor for unknown names, non-finite or non-positive
    values, and empty (``lo == hi``) or inverted (``lo > hi``) bounds.
    """
    if space is None:
        return dict(DEFAULT_SPACE)
    if not isinstance(space, Mapping):
        raise ValueError("space must be a mapping of factor name to [low, high]")
    unknown = sorted(set(space) - set(FACTORS))
    if unknown:
        raise ValueError(f"unknown factor(s) {unknown} in space; factors are {list(FACTORS)}")
    bounds = dict(DEFAULT_SPACE)
    for name, pair in space.items():
        try:
            lo, hi = (float(v) for v in pair)
        except (TypeError, ValueError):
            raise ValueError(
                f"space[{name!r}] must be a pair [low, high] of numbers, got {pair!r}"
            ) from None
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ValueError(f"space[{name!r}] bounds must be finite, got [{lo}, {hi}]")
        if lo <= 0:
            raise ValueError(f"space[{name!r}] lower bound must be > 0, got {lo}")
        if lo > hi:
            raise ValueError(f"space[{name!r}] is inverted: low {lo} > high {hi}; swap the bounds")
        if lo == hi:
            raise ValueError(
                f"space[{name!r}] is empty: low == high == {lo}; give a range with low < high"
            )
        bounds[name] = (lo, hi)
    return bounds


def min_reachable_macs(base: ArchConfig, space: Mapping[str, Sequence[float]] | None = None) -> int:
    """MACs of the cheapest network in ``space``: the corner of lower bounds."""
    bounds = validate_space(space)
    return count_macs(base.scale(**{f: bounds[f][0] for f in FACTORS}))


def max_reachable_macs(base: ArchConfig, space: Mapping[str, Sequence[float]] | None = None) -> int:
    """MACs of the most expensive network in ``space``: the corner of upper bounds."""
    bounds = validate_space(space)
    return count_macs(base.scale(**{f: bounds[f][1] for f in FACTORS}))


def check_budget(
    base: ArchConfig,
    bounds: Mapping[str, tuple[float, float]],
    *,
    max_macs: int,
    min_macs: int | None = None,
) -> None:
    """Raise ``ValueError``/:class:`InfeasibleBudgetError` if no network meets the budget."""
    if not isinstance(max_macs, int | np.integer) or isinstance(max_macs, bool) or max_macs <= 0:
        raise ValueError(f"max_macs must be a positive integer, got {max_macs!r}")
    if min_macs is not None:
        if not isinstance(min_macs, int | np.integer) or isinstance(min_macs, bool) or min_macs < 0:
            raise ValueError(f"min_macs must be a non-negative integer, got {min_macs!r}")
        if min_macs > max_macs:
            raise ValueError(f"min_macs ({min_macs:,}) is larger than max_macs ({max_macs:,})")
    lowest = min_reachable_macs(base, bounds)
    if lowest > max_macs:
        raise InfeasibleBudgetError(
            f"no network in the space meets max_macs={max_macs:,}: the smallest reachable is "
            f"{lowest:,} MACs (all factors at their lower bounds); raise the budget to at "
            f"least {lowest:,} or lower the space's lower bounds",
            min_macs=lowest,
        )
    if min_macs is not None:
        highest = max_reachable_macs(base, bounds)
        if highest < min_macs:
            raise ValueError(
                f"no network in the space reaches min_macs={min_macs:,}: the largest reachable "
                f"is {highest:,} MACs; lower min_macs or raise the space's upper bounds"
            )


@dataclass(frozen=True)
class FactorLevels:
    """The distinct levels of one factor inside its bounds.

    ``breakpoints``: ``k-1`` values separating ``k`` levels (a request ``v`` is on level
    ``searchsorted(breakpoints, v, side="right")``); ``requested``: ``k`` values, each of
    which builds its level (the middle of the level's interval); ``effective``: ``k``
    effective factor values; ``ids``: ``k`` process-wide level ids (for the MAC cache).
    """

    breakpoints: np.ndarray
    requested: np.ndarray
    effective: np.ndarray
    ids: np.ndarray


def _level_id(factor: str, key: str) -> int:
    return _LEVEL_IDS.setdefault((factor, key), len(_LEVEL_IDS))


@lru_cache(maxsize=256)
def factor_levels(base: ArchConfig, factor: str, lo: float, hi: float) -> FactorLevels:
    """Find every level of ``factor`` in ``[lo, hi]`` with the other factors at 1."""
    if factor not in FACTORS:
        raise ValueError(f"unknown factor {factor!r}; factors are {list(FACTORS)}")
    keys: dict[float, str] = {}

    def key(v: float) -> str:
        if v not in keys:
            keys[v] = base.scale(**{factor: v}).key()
        return keys[v]

    tol = _BREAKPOINT_TOL * (hi - lo)
    # Transitions: pairs (a, b) with key(a) != key(b), b - a <= tol, in increasing order.
    transitions: list[tuple[float, float]] = []

    def split(a: float, b: float) -> None:
        if key(a) == key(b):
            return
        if b - a <= tol:
            transitions.append((a, b))
            return
        mid = 0.5 * (a + b)
        split(a, mid)
        split(mid, b)

    grid = np.linspace(lo, hi, _COARSE_GRID)
    for a, b in itertools.pairwise(grid):
        split(float(a), float(b))
    starts = [lo] + [b for _, b in transitions]
    ends = [a for a, _ in transitions] + [hi]
    requested: list[float] = []
    for start, end in zip(starts, ends, strict=True):
        requested.append(_short_request(start, end, key))
    effective = [base.scale(**{factor: v}).effective_factors()[factor] for v in requested]
    ids = [_level_id(factor, key(v)) for v in requested]
    return FactorLevels(
        breakpoints=np.array([0.5 * (a + b) for a, b in transitions], dtype=float),
        requested=np.array(requested, dtype=float),
        effective=np.array(effective, dtype=float),
        ids=np.array(ids, dtype=np.int64),
    )


def _short_request(start: float, end: float, key: Callable[[float], str]) -> float:
    """A short decimal near the middle of a level's interval ``[start, end]`` that builds it.

    The middle is safe from float noise at the level's edges; a short decimal (0.85 rather
    than 0.8500030517578125) reads well in the trials table. Falls back to the middle, then
    to ``start`` (which is known to build the level) for non-interval levels.
    """
    mid = 0.5 * (start + end)
    for digits in range(2, 7):
        v = round(mid, digits)
        if start <= v <= end and key(v) == key(start):
            return v
    return mid if key(mid) == key(start) else start


@dataclass(frozen=True)
class Candidates:
    """Buildable networks, one per row.

    ``levels``: ``n x 4`` level indices; ``requested``/``effective``: ``n x 4`` factors in
    :data:`FACTORS` order; ``macs``: ``n`` exact MAC counts.
    """

    levels: np.ndarray
    requested: np.ndarray
    effective: np.ndarray
    macs: np.ndarray

    def __len__(self) -> int:
        return int(self.levels.shape[0])

    def take(self, index: np.ndarray) -> Candidates:
        return Candidates(
            self.levels[index], self.requested[index], self.effective[index], self.macs[index]
        )

    @staticmethod
    def concat(parts: Sequence[Candidates]) -> Candidates:
        return Candidates(
            np.concatenate([p.levels for p in parts]),
            np.concatenate([p.requested for p in parts]),
            np.concatenate([p.effective for p in parts]),
            np.concatenate([p.macs for p in parts]),
        )

    def requested_dicts(self) -> list[dict[str, float]]:
        return [dict(zip(FACTORS, map(float, row), strict=True)) for row in self.requested]


def identity(effective: Sequence[float]) -> tuple[float, ...]:
    """A hashable identity of a network from its effective factors (what the GP sees)."""
    return tuple(round(float(v), 6) for v in effective)


class Space:
    """The lattice of buildable networks of ``base`` inside ``bounds``.

    All array arguments use :data:`FACTORS` order along the last dimension.
    """

    def __init__(
        self, base: ArchConfig, space: Mapping[str, Sequence[float]] | None = None
    ) -> None:
        self.base = base
        self.bounds = validate_space(space)
        self.lower = np.array([self.bounds[f][0] for f in FACTORS])
        self.upper = np.array([self.bounds[f][1] for f in FACTORS])
        self.levels = [factor_levels(base, f, *self.bounds[f]) for f in FACTORS]

    @property
    def lattice_size(self) -> int:
        return math.prod(len(lv.requested) for lv in self.levels)

    def to_unit(self, factors: np.ndarray) -> np.ndarray:
        """``n x 4`` factors -> ``n x 4`` unit-cube coordinates (not clipped)."""
        return (np.asarray(factors, dtype=float) - self.lower) / (self.upper - self.lower)

    def from_unit(self, unit: np.ndarray) -> np.ndarray:
        """``n x 4`` unit-cube coordinates -> ``n x 4`` factors (clipped to the bounds)."""
        unit = np.clip(np.asarray(unit, dtype=float), 0.0, 1.0)
        return self.lower + unit * (self.upper - self.lower)

    def snap(self, factors: np.ndarray) -> np.ndarray:
        """``n x 4`` requested factors -> ``n x 4`` level indices of what they build."""
        factors = np.atleast_2d(np.asarray(factors, dtype=float))
        return np.stack(
            [
                np.searchsorted(lv.breakpoints, factors[:, j], side="right")
                for j, lv in enumerate(self.levels)
            ],
            axis=1,
        ).astype(np.int64)

    def candidates(self, levels: np.ndarray) -> Candidates:
        """Unique rows of ``n x 4`` level indices as :class:`Candidates` with exact MACs."""
        levels = np.unique(np.atleast_2d(np.asarray(levels, dtype=np.int64)), axis=0)
        requested = np.stack(
            [lv.requested[levels[:, j]] for j, lv in enumerate(self.levels)], axis=1
        )
        effective = np.stack(
            [lv.effective[levels[:, j]] for j, lv in enumerate(self.levels)], axis=1
        )
        return Candidates(levels, requested, effective, self.macs(levels))

    def from_unit_points(self, unit: np.ndarray) -> Candidates:
        return self.candidates(self.snap(self.from_unit(unit)))

    def macs(self, levels: np.ndarray) -> np.ndarray:
        """Exact MACs of ``n x 4`` level indices (cached per lattice point)."""
        ids = np.stack([lv.ids[levels[:, j]] for j, lv in enumerate(self.levels)], axis=1)
        out = np.empty(len(levels), dtype=np.int64)
        if len(_MACS_CACHE) > _MACS_CACHE_LIMIT:
            _MACS_CACHE.clear()
        for i, row in enumerate(ids.tolist()):
            cache_key = (self.base, row[0], row[1], row[2], row[3])
            value = _MACS_CACHE.get(cache_key)
            if value is None:
                request = {
                    f: float(lv.requested[levels[i, j]])
                    for j, (f, lv) in enumerate(zip(FACTORS, self.levels, strict=True))
                }
                value = count_macs(self.base.scale(**request))
                _MACS_CACHE[cache_key] = value
            out[i] = value
        return out

    def enumerate_all(self) -> Candidates:
        """Every lattice point (only sensible for small lattices)."""
        grids = np.meshgrid(*[np.arange(len(lv.requested)) for lv in self.levels], indexing="ij")
        return self.candidates(np.stack([g.ravel() for g in grids], axis=1))

    def project(
        self,
        unit: np.ndarray,
        *,
        max_macs: int,
        min_macs: int | None = None,
        rng: np.random.Generator | None = None,
        steps: int = 10,
    ) -> Candidates:
        """Move points along rays from the lower corner into ``[min_macs, max_macs]``.

        ``unit``: ``n x 4`` unit-cube points. For each, the ray from the lower corner
        through it (extended to the cube's boundary) is bisected for the largest position
        under ``max_macs`` (a point on the budget boundary, where the best network of an
        accuracy search usually lies) and, with ``rng``, a uniform position between that
        and the smallest position reaching ``min_macs``. Rays on which no position fits are
        dropped. Returns unique, feasible candidates.
        """
        unit = np.clip(np.atleast_2d(np.asarray(unit, dtype=float)), 0.0, 1.0)
        scale = unit.max(axis=1, keepdims=True)
        direction = np.where(scale > 0, unit / np.where(scale > 0, scale, 1.0), 1.0)

        def macs_at(t: np.ndarray) -> np.ndarray:
            levels = self.snap(self.from_unit(direction * t[:, None]))
            return self.macs_of_rows(levels)

        # Largest t with macs <= max_macs (t = 0 is feasible by check_budget).
        lo_t, hi_t = np.zeros(len(unit)), np.ones(len(unit))
        top_ok = macs_at(hi_t) <= max_macs
        lo_t[top_ok] = 1.0
        for _ in range(steps):
            mid = 0.5 * (lo_t + hi_t)
            ok = macs_at(mid) <= max_macs
            lo_t = np.where(ok & ~top_ok, mid, lo_t)
            hi_t = np.where(ok | top_ok, hi_t, mid)
        t_max = lo_t
        points = [direction * t_max[:, None]]
        if rng is not None:
            t_min = np.zeros(len(unit))
            if min_macs is not None:
                a, b = np.zeros(len(unit)), t_max.copy()
                for _ in range(steps):
                    mid = 0.5 * (a + b)
                    ok = macs_at(mid) >= min_macs
                    b = np.where(ok, mid, b)
                    a = np.where(ok, a, mid)
                t_min = b
            t = t_min + rng.random(len(unit)) * np.maximum(t_max - t_min, 0.0)
            points.append(direction * t[:, None])
        found = self.from_unit_points(np.concatenate(points))
        return found.take(feasible_mask(found.macs, max_macs=max_macs, min_macs=min_macs))

    def macs_of_rows(self, levels: np.ndarray) -> np.ndarray:
        """Exact MACs of ``n x 4`` level indices, rows in order (repeats allowed)."""
        unique, inverse = np.unique(levels, axis=0, return_inverse=True)
        return self.macs(unique)[inverse.ravel()]

    def round(self, factors: Mapping[str, float]) -> dict[str, float]:
        """The requested factors (middle of the level) that build what ``factors`` builds."""
        levels = self.snap(np.array([[float(factors[f]) for f in FACTORS]]))[0]
        return {
            f: float(lv.requested[levels[j]])
            for j, (f, lv) in enumerate(zip(FACTORS, self.levels, strict=True))
        }


def feasible_mask(macs: np.ndarray, *, max_macs: int, min_macs: int | None = None) -> np.ndarray:
    """``n`` booleans: MACs within ``[min_macs, max_macs]``."""
    ok = macs <= max_macs
    if min_macs is not None:
        ok &= macs >= min_macs
    return ok
