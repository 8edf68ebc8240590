"""Pareto tools on (top-1, MACs): the front, non-dominated sorting, hypervolume, and the
paper's selection of the top 20 % of models.

Points are ``(top1, macs)`` pairs: top-1 (or any score, higher is better: the service hands
``-loss`` for a minimised loss) is maximised, MACs minimised. The front, the ranks
and the selection are numpy (the web process calls them without importing torch);
:func:`hypervolume` uses BoTorch's exact ``Hypervolume`` (imported on call).

Selection (paper §4.4, "top 20 % by non-dominated rank"): whole fronts are taken in rank
order; the front that does not fit is thinned NSGA-III-style — objectives normalised by the
ideal and nadir points of the candidates, each point associated with the nearest of a set of
evenly spread reference directions, points taken from the least-crowded direction first
(among equals, the one farthest from the directions already used) and, within a direction,
closest to it first; ties fall back to NSGA-II crowding distance.

Imports numpy (and botorch inside ``hypervolume``); never models.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

REFERENCE_DIRECTIONS = 12


def _minimised(points: Sequence[tuple[float, float]]) -> np.ndarray:
    """``n x 2`` objectives to minimise: ``(-top1, macs)``."""
    arr = np.asarray(points, dtype=float).reshape(-1, 2)
    if not np.isfinite(arr).all():
        raise ValueError("points must be finite (top1, macs) pairs")
    return np.column_stack([-arr[:, 0], arr[:, 1]])


def _front_mask(f: np.ndarray) -> np.ndarray:
    """Non-dominated rows of ``n x 2`` minimised objectives (duplicates all kept)."""
    n = len(f)
    mask = np.zeros(n, dtype=bool)
    if n == 0:
        return mask
    # Sweep by the first objective (ties by the second): a point is dominated iff an
    # earlier point has a strictly smaller second objective, or an equal one with a
    # strictly smaller first objective.
    order = np.lexsort((f[:, 1], f[:, 0]))
    best_second = math.inf
    best_first_at_best = math.inf
    for i in order:
        a, b = f[i]
        if b < best_second or (b == best_second and a <= best_first_at_best):
            mask[i] = True
        if b < best_second:
            best_second, best_first_at_best = b, a
    return mask


def pareto_front(points: Sequence[tuple[float, int]]) -> list[int]:
    """Indices of the non-dominated points (max top-1, min MACs), by increasing MACs."""
    f = _minimised(points)
    idx = np.flatnonzero(_front_mask(f))
    return [int(i) for i in idx[np.lexsort((f[idx, 0], f[idx, 1]))]]


def non_dominated_ranks(points: Sequence[tuple[float, int]]) -> list[int]:
    """Rank of every point: 0 for the front, 1 for the front of the rest, ..."""
    f = _minimised(points)
    ranks = np.full(len(f), -1)
    remaining = np.arange(len(f))
    rank = 0
    while len(remaining):
        mask = _front_mask(f[remaining])
        ranks[remaining[mask]] = rank
        remaining = remaining[~mask]
        rank += 1
    return [int(r) for r in ranks]


def crowding_distance(points: Sequence[tuple[float, int]]) -> list[float]:
    """NSGA-II crowding distance of each point within ``points`` (boundary points: inf)."""
    f = _minimised(points)
    n = len(f)
    dist = np.zeros(n)
    if n <= 2:
        return [math.inf] * n
    for j in range(f.shape[1]):
        order = np.argsort(f[:, j], kind="stable")
        span = f[order[-1], j] - f[order[0], j]
        dist[order[0]] = dist[order[-1]] = math.inf
        if span > 0:
            dist[order[1:-1]] += (f[order[2:], j] - f[order[:-2], j]) / span
    return [float(d) for d in dist]


def select_top(
    points: Sequence[tuple[float, int]], fraction: float = 0.2, *, count: int | None = None
) -> list[int]:
    """The paper's selection: ``ceil(fraction · n)`` (or ``count``) points by non-dominated rank.

    Returns indices, best rank first. See the module docstring for the tie-break.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    n = len(points)
    if n == 0:
        return []
    quota = max(1, math.ceil(fraction * n)) if count is None else min(max(count, 1), n)
    ranks = np.array(non_dominated_ranks(points))
    chosen: list[int] = []
    for rank in range(int(ranks.max()) + 1):
        front = [int(i) for i in np.flatnonzero(ranks == rank)]
        if len(chosen) + len(front) <= quota:
            chosen += front
            continue
        chosen += _niche_select(points, chosen, front, quota - len(chosen))
        break
    return chosen


def _niche_select(
    points: Sequence[tuple[float, int]], chosen: list[int], front: list[int], k: int
) -> list[int]:
    """NSGA-III niching: ``k`` of ``front`` given the already ``chosen`` points."""
    f = _minimised(points)
    pool = chosen + front
    ideal = f[pool].min(axis=0)
    span = f[pool].max(axis=0) - ideal
    span[span == 0] = 1.0
    normed = (f - ideal) / span
    angles = np.linspace(0.0, math.pi / 2, REFERENCE_DIRECTIONS)
    directions = np.column_stack([np.cos(angles), np.sin(angles)])
    projection = normed @ directions.T  # n x k
    perpendicular = np.sqrt(np.maximum((normed**2).sum(axis=1, keepdims=True) - projection**2, 0.0))
    niche = perpendicular.argmin(axis=1)
    distance = perpendicular[np.arange(len(f)), niche]
    counts = np.bincount(niche[chosen], minlength=REFERENCE_DIRECTIONS) if chosen else None
    if counts is None:
        counts = np.zeros(REFERENCE_DIRECTIONS, dtype=int)
    crowd = dict(zip(front, crowding_distance([points[i] for i in front]), strict=True))
    left = list(front)
    picked: list[int] = []
    while len(picked) < k:
        occupied = {int(niche[i]) for i in left}
        used = np.flatnonzero(counts > 0)

        def spread(d: int, used: np.ndarray = used) -> float:
            return float(np.abs(used - d).min()) if len(used) else math.inf

        # NSGA-III takes a random least-crowded niche; deterministically, we take the one
        # farthest from the niches already used, so the selection spans the front.
        j = min(occupied, key=lambda d: (counts[d], -spread(d), d))
        members = [i for i in left if niche[i] == j]
        best = min(members, key=lambda i: (distance[i], -crowd[i], i))
        picked.append(best)
        left.remove(best)
        counts[j] += 1
    return picked


def hypervolume(Y: np.ndarray, ref_point: Sequence[float]) -> float:
    """Exact hypervolume dominated by ``Y`` (``n x m``, all maximised) above ``ref_point``."""
    import torch
    from botorch.utils.multi_objective.hypervolume import Hypervolume
    from botorch.utils.multi_objective.pareto import is_non_dominated

    values = torch.as_tensor(np.asarray(Y, dtype=float))
    ref = torch.as_tensor(np.asarray(ref_point, dtype=float))
    if values.numel() == 0:
        return 0.0
    better = (values > ref).all(dim=-1)
    values = values[better]
    if values.shape[0] == 0:
        return 0.0
    front = values[is_non_dominated(values)]
    return float(Hypervolume(ref_point=ref).compute(front))
