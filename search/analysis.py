"""The paper's views of a search (Fig. 4–7): what the GP believes about each factor.

- ``one_d``: for each factor, a GP of top-1 on that factor alone (as the paper fits them),
  its posterior mean and 95 % band on a grid, and the observations marked better or not
  than the reference top-1.
- ``two_d``: GPs on the pairs r–w and r–d_m, posterior mean and std on a grid;
  ``mean[i][j]`` is the value at ``(x[i], y[j])``.
- ``importance``: normalised inverse ARD lengthscales of the 4-D GP (on inputs scaled to
  the space), summing to 1: a short lengthscale means top-1 moves fast with that factor.

Axes span the search space and every observation (reference trials may lie outside). Past
:data:`MAX_MODEL_POINTS` observations the views' GPs are conditioned on a subsample (the best
quarter by top-1 and a seeded random rest; ``modelled_on`` says how many): an exact GP on 10,000
points costs minutes for a picture that 2,000 already draw. The 1-D views list at most
:data:`MAX_SHOWN_OBSERVATIONS` of them as dots (``observations_shown`` of ``n``).
Imports search.gp (torch, botorch) and search.space/strategies.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from vitcube.models import ArchConfig
from vitcube.search.gp import fit_gp, lengthscales, posterior_mean_std, torch_threads
from vitcube.search.space import FACTORS, validate_space
from vitcube.search.strategies import (
    TOP1_RANGE,
    Observation,
    ScoreRange,
    validate_observations,
)

MIN_OBSERVATIONS = 3
PAIRS = (("r", "w"), ("r", "d_m"))
MAX_GRID_1D = 2000
MAX_GRID_2D = 500
MAX_MODEL_POINTS = 2000
MAX_SHOWN_OBSERVATIONS = 1000


def _subsample(Y: np.ndarray, limit: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of at most ``limit`` rows: the best ``limit // 4`` by Y, then random."""
    n = Y.shape[0]
    if n <= limit:
        return np.arange(n)
    order = np.argsort(-Y[:, 0], kind="stable")
    best = order[: limit // 4]
    rest = np.random.default_rng(seed).permutation(order[limit // 4 :])[: limit - len(best)]
    return np.sort(np.concatenate([best, rest]))


def analyze(
    observations: Sequence[Observation],
    *,
    base: ArchConfig,
    reference_top1: float | None = None,
    grid_1d: int = 100,
    grid_2d: int = 50,
    space: Mapping[str, Sequence[float]] | None = None,
    score_range: ScoreRange = TOP1_RANGE,
) -> dict[str, Any]:
    """GP views of ``observations`` as JSON-able dicts (shape in the module docstring).

    With fewer than :data:`MIN_OBSERVATIONS` observations returns
    ``{"fitted": False, "n": k, "reason": ...}``. ``base`` identifies the baseline the factors
    are ratios to (kept for symmetry with the other entry points; the GP needs only factors).
    Observations and ``reference_top1`` are scores, higher is better (``score_range`` as in
    :func:`search.strategies.make_strategy`); the views are in the same units.
    """
    validate_observations(observations, score_range=score_range)
    bounds = validate_space(space)
    if not 2 <= grid_1d <= MAX_GRID_1D:
        raise ValueError(f"grid_1d must be in [2, {MAX_GRID_1D}], got {grid_1d}")
    if not 2 <= grid_2d <= MAX_GRID_2D:
        raise ValueError(f"grid_2d must be in [2, {MAX_GRID_2D}], got {grid_2d}")
    if reference_top1 is not None and not np.isfinite(reference_top1):
        raise ValueError(f"reference_top1 must be finite, got {reference_top1}")
    n = len(observations)
    if n < MIN_OBSERVATIONS:
        return {
            "fitted": False,
            "n": n,
            "reason": f"the GP views need at least {MIN_OBSERVATIONS} completed trials, have {n}",
        }
    X = np.array([[o.factors[f] for f in FACTORS] for o in observations], dtype=float)
    Y = np.array([[o.top1] for o in observations], dtype=float)
    axes = {
        f: (min(bounds[f][0], float(X[:, j].min())), max(bounds[f][1], float(X[:, j].max())))
        for j, f in enumerate(FACTORS)
    }
    keep = _subsample(Y, MAX_MODEL_POINTS)
    X, Y = X[keep], Y[keep]
    shown_in_kept = np.zeros(len(keep), dtype=bool)
    shown_in_kept[_subsample(Y, MAX_SHOWN_OBSERVATIONS, seed=1)] = True
    with torch_threads(1):
        return {
            "fitted": True,
            "n": n,
            "modelled_on": len(keep),
            "observations_shown": int(shown_in_kept.sum()),
            "one_d": {
                f: _one_d(X[:, j], Y, axes[f], grid_1d, reference_top1, shown_in_kept)
                for j, f in enumerate(FACTORS)
            },
            "two_d": {f"{a}-{b}": _two_d(X, Y, a, b, axes, grid_2d) for a, b in PAIRS},
            "importance": _importance(X, Y, axes),
        }


def _one_d(
    x: np.ndarray,
    Y: np.ndarray,
    axis: tuple[float, float],
    size: int,
    reference_top1: float | None,
    shown: np.ndarray,
) -> dict[str, Any]:
    model = fit_gp(x[:, None], Y, bounds=np.array([[axis[0]], [axis[1]]]))
    grid = np.linspace(axis[0], axis[1], size)
    mean, std = posterior_mean_std(model, grid[:, None])
    mean, std = mean[:, 0], std[:, 0]
    return {
        "x": grid.tolist(),
        "mean": mean.tolist(),
        "lower": (mean - 1.96 * std).tolist(),
        "upper": (mean + 1.96 * std).tolist(),
        "observations": [
            {
                "x": float(xi),
                "top1": float(yi),
                "better": bool(reference_top1 is not None and yi > reference_top1),
            }
            for xi, yi in zip(x[shown], Y[shown, 0], strict=True)
        ],
    }


def grid_posterior(model: Any, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Posterior mean and std of a 2-input model on the grid ``xs x ys``.

    Returns two ``len(xs) x len(ys)`` arrays, ``[i, j]`` at ``(xs[i], ys[j])``; evaluated in
    chunks (a 500 x 500 grid is one batched pass of 250,000 points).
    """
    gx, gy = np.meshgrid(xs, ys, indexing="ij")
    mean, std = posterior_mean_std(model, np.column_stack([gx.ravel(), gy.ravel()]))
    shape = (len(xs), len(ys))
    return mean[:, 0].reshape(shape), std[:, 0].reshape(shape)


def _two_d(
    X: np.ndarray,
    Y: np.ndarray,
    a: str,
    b: str,
    axes: Mapping[str, tuple[float, float]],
    size: int,
) -> dict[str, Any]:
    ja, jb = FACTORS.index(a), FACTORS.index(b)
    bounds = np.array([[axes[a][0], axes[b][0]], [axes[a][1], axes[b][1]]])
    model = fit_gp(X[:, [ja, jb]], Y, bounds=bounds)
    xs = np.linspace(axes[a][0], axes[a][1], size)
    ys = np.linspace(axes[b][0], axes[b][1], size)
    mean, std = grid_posterior(model, xs, ys)
    return {"x": xs.tolist(), "y": ys.tolist(), "mean": mean.tolist(), "std": std.tolist()}


def _importance(
    X: np.ndarray, Y: np.ndarray, axes: Mapping[str, tuple[float, float]]
) -> dict[str, float]:
    bounds = np.array([[axes[f][0] for f in FACTORS], [axes[f][1] for f in FACTORS]])
    inverse = 1.0 / lengthscales(fit_gp(X, Y, bounds=bounds))
    share = inverse / inverse.sum()
    return {f: float(s) for f, s in zip(FACTORS, share, strict=True)}
