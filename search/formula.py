"""The downsizing formula (paper §4.4): which (r, d_i, d_m, w) for c × m0 MACs?

:func:`fit_formula` takes the top 20 % of the observed models by non-dominated rank on
(top-1, MACs) (:func:`search.pareto.select_top`; at least :data:`MIN_SELECTED`, at most
:data:`MAX_SELECTED`), and fits one
GP per factor against ``c = MACs / m0`` (each effective factor as a function of c, as the
paper's Fig. 8). :meth:`Formula.predict` evaluates the four GPs at ``c``, builds the
network and, when rounding makes it overshoot ``c · m0``, *repairs* it: width is shrunk first
(the cheapest factor to give up per the paper's rankings and the usual width-multiplier rule),
then resolution, then transformer depth, then MV2 depth — each by bisection on the exact MAC
count, moving to the next factor only when the previous one at its minimum still overshoots.

Imports models, search.gp, search.pareto and search.space.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from vitcube.models import ArchConfig, count_macs, count_params
from vitcube.search.gp import (
    fit_gp,
    hyperparameters,
    posterior_mean_std,
    rebuild_gp,
    torch_threads,
)
from vitcube.search.pareto import select_top
from vitcube.search.space import FACTORS
from vitcube.search.strategies import (
    TOP1_RANGE,
    Observation,
    ScoreRange,
    validate_observations,
)

MIN_OBSERVATIONS = 5
MIN_SELECTED = 4
MAX_SELECTED = 400  # past this, more points of the front only slow the four 1-D GPs down
SELECT_FRACTION = 0.2
# Repair order and the smallest value each factor may be shrunk to.
REPAIR_ORDER = ("w", "r", "d_m", "d_i")
REPAIR_FLOOR = {"w": 0.05, "r": 0.05, "d_m": 0.01, "d_i": 0.01}


class Formula:
    """Four GPs, factor = f(c), fitted on the selected models of a search."""

    def __init__(
        self,
        *,
        base: ArchConfig,
        points: list[dict[str, float]],
        models: Mapping[str, Any],
    ) -> None:
        self.base = base
        self.m0 = count_macs(base)
        self.points = points
        self._models = dict(models)

    def state(self) -> dict[str, Any]:
        """Everything :meth:`from_state` needs, as plain JSON: the base, the fitted points and
        each GP's hyperparameters (the GPs are conditioned on the points again, not refitted)."""
        return {
            "base": self.base.to_dict(),
            "points": self.points,
            "bounds": _bounds([p["c"] for p in self.points]).tolist(),
            # The fitted parameters; their constraints (with infinite bounds) come with the model.
            "hyperparameters": {
                f: {
                    k: v.tolist()
                    for k, v in hyperparameters(self._models[f]).items()
                    if "_constraint" not in k
                }
                for f in FACTORS
            },
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Formula:
        """The formula :meth:`state` describes; the same predictions without a fit."""
        points = list(state["points"])
        c = np.array([[p["c"]] for p in points])
        bounds = np.asarray(state["bounds"], dtype=float)
        with torch_threads(1):
            models = {
                f: rebuild_gp(
                    c,
                    np.array([[p[f]] for p in points]),
                    bounds=bounds,
                    state=state["hyperparameters"][f],
                )
                for f in FACTORS
            }
        return cls(base=ArchConfig.from_dict(state["base"]), points=points, models=models)

    def _factors(self, cs: Sequence[float]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        c = np.asarray(cs, dtype=float)[:, None]
        with torch_threads(1):
            out = {}
            for f in FACTORS:
                mean, std = posterior_mean_std(self._models[f], c)
                out[f] = (mean[:, 0], std[:, 0])
        return out

    def predict(self, c: float) -> dict[str, Any]:
        """Factors ± std for ``c``, the built (and if needed repaired) network and its MACs."""
        c = _check_c(c)
        factors = self._factors([c])
        max_macs = int(c * self.m0)
        scale = {f: max(float(factors[f][0][0]), REPAIR_FLOOR[f]) for f in FACTORS}
        scale = _repair(self.base, scale, max_macs)
        arch = self.base.scale(**scale)
        return {
            "c": c,
            "factors": {
                f: {"mean": float(factors[f][0][0]), "std": float(factors[f][1][0])}
                for f in FACTORS
            },
            "scale": scale,
            "arch": arch.to_dict(),
            "macs": count_macs(arch),
            "params": count_params(arch),
            "max_macs": max_macs,
        }

    def curve(self, cs: Sequence[float]) -> dict[str, Any]:
        """The four factor curves (mean and 95 % band) over ``cs`` and the fitted points."""
        cs = [_check_c(c) for c in cs]
        if not cs:
            raise ValueError("curve needs at least one value of c")
        factors = self._factors(cs)
        return {
            "c": cs,
            "factors": {
                f: {
                    "mean": mean.tolist(),
                    "lower": (mean - 1.96 * std).tolist(),
                    "upper": (mean + 1.96 * std).tolist(),
                }
                for f, (mean, std) in factors.items()
            },
            "points": self.points,
        }


def fit_formula(
    observations: Sequence[Observation],
    *,
    base: ArchConfig,
    space: Mapping[str, Sequence[float]] | None = None,
    score_range: ScoreRange = TOP1_RANGE,
) -> Formula:
    """Fit the formula; raises ``ValueError`` with fewer than :data:`MIN_OBSERVATIONS`.

    ``space`` is accepted for symmetry with the other entry points: the formula may
    extrapolate outside the search space, so it does not clip to it. Observations are scored,
    higher is better (``score_range`` as in :func:`search.strategies.make_strategy`).
    """
    validate_observations(observations, score_range=score_range)
    if len(observations) < MIN_OBSERVATIONS:
        raise ValueError(
            f"the downsizing formula needs at least {MIN_OBSERVATIONS} completed trials, "
            f"have {len(observations)}"
        )
    m0 = count_macs(base)
    scored = [(o.top1, o.macs) for o in observations]
    quota = min(MAX_SELECTED, max(MIN_SELECTED, math.ceil(SELECT_FRACTION * len(observations))))
    chosen = select_top(scored, count=min(quota, len(observations)))
    selected = [observations[i] for i in chosen]
    c = np.array([[o.macs / m0] for o in selected])
    bounds = _bounds(c[:, 0].tolist())
    with torch_threads(1):
        models = {
            f: fit_gp(c, np.array([[o.factors[f]] for o in selected]), bounds=bounds)
            for f in FACTORS
        }
    points = [
        {"c": float(ci), **{f: float(o.factors[f]) for f in FACTORS}, "top1": float(o.top1)}
        for ci, o in zip(c[:, 0], selected, strict=True)
    ]
    points.sort(key=lambda p: p["c"])
    return Formula(base=base, points=points, models=models)


def _bounds(cs: Sequence[float]) -> np.ndarray:
    """``2 x 1`` bounds of c for the GPs' input normalisation."""
    lo, hi = float(min(cs)), float(max(cs))
    if hi - lo < 1e-9:
        lo, hi = lo * 0.9, hi * 1.1
    return np.array([[lo], [hi]])


def _check_c(c: float) -> float:
    if isinstance(c, bool) or not isinstance(c, int | float) or not math.isfinite(c) or c <= 0:
        raise ValueError(f"c must be a positive finite number (MACs / m0), got {c!r}")
    return float(c)


def _repair(base: ArchConfig, scale: dict[str, float], max_macs: int) -> dict[str, float]:
    """Shrink ``scale`` in :data:`REPAIR_ORDER` until it builds within ``max_macs``."""

    def macs(s: dict[str, float]) -> int | None:
        try:
            return count_macs(base.scale(**s))
        except ValueError:  # e.g. a resolution too small for the network's strides
            return None

    def fits(s: dict[str, float]) -> bool:
        m = macs(s)
        return m is not None and m <= max_macs

    scale = dict(scale)
    if fits(scale):
        return scale
    for f in REPAIR_ORDER:

        def builds(v: float, f: str = f) -> bool:
            return macs({**scale, f: v}) is not None

        floor = _smallest_buildable(builds, REPAIR_FLOOR[f], scale[f])
        if not fits({**scale, f: floor}):
            scale[f] = floor
            continue
        lo, hi = floor, scale[f]
        for _ in range(40):
            mid = 0.5 * (lo + hi)
            if fits({**scale, f: mid}):
                lo = mid
            else:
                hi = mid
        scale[f] = lo
        return scale
    raise ValueError(
        f"no network reaches {max_macs:,} MACs even with every factor at its minimum; raise c"
    )


def _smallest_buildable(builds: Callable[[float], bool], floor: float, value: float) -> float:
    """The smallest factor in ``[floor, value]`` that builds (``value`` is known to)."""
    if builds(floor) or floor >= value:
        return min(floor, value)
    lo, hi = floor, value
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        if builds(mid):
            hi = mid
        else:
            lo = mid
    return hi
