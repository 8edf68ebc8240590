"""A search's metric in the service: values are stored and shown, scores are ranked.

A trial's *value* is what its trainer reported for the search's metric (`searches.metric`, a
vitcube.contract.MetricSpec): it is stored once, in `trials.value`, `trials.rung_values` and
`trial_metrics.value`, whatever the metric's name. A *score* is `MetricSpec.score(value)`:
higher is better whatever the goal. Everything that ranks (search/'s strategies and GP fits,
ASHA, the Pareto front, the formula, the best trial, the median rule) is handed scores, and what
it computes in score units is turned back into the metric's units here before anyone sees it;
for the default val_top1/maximize the score is the value itself, so a builtin search ranks
exactly as it did before metrics had names. Imports vitcube.contract, service.errors and
sqlalchemy's expression types only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import ColumnElement

from vitcube.contract import DEFAULT_METRIC, MetricSpec, TrialReport
from vitcube.service.errors import InvalidInput

# The public API's older name for the value of the default metric (TrialPublic.top1,
# rung_top1, best_top1, the curve's val_top1): filled only when the search's metric is this one.
TOP1 = DEFAULT_METRIC.name


def metric_of(stored: Mapping[str, Any] | None) -> MetricSpec:
    """The MetricSpec of a search's stored `metric` column (its dict); the default when unset."""
    return MetricSpec(**stored) if stored else DEFAULT_METRIC


def score_of(metric: MetricSpec, column: Any) -> ColumnElement[Any]:
    """A SQL expression of `column`'s values as scores (higher is better): order by it
    descending, or take its max, to find the best."""
    return column if metric.maximize else -column


def is_top1(metric: MetricSpec) -> bool:
    """Whether the API's older top-1 names (top1, rung_top1, best_top1) carry this metric."""
    return metric.name == TOP1


def as_top1(metric: MetricSpec, value: float | None) -> float | None:
    """The value under the API's older top-1 names: itself for a val_top1 search, else None."""
    return value if is_top1(metric) else None


def best_of(metric: MetricSpec, values: Iterable[float | None]) -> float | None:
    """The best of these values by the metric's goal (None where there is none): how a query
    that read both the max and the min of a column picks without branching on the goal."""
    return max((v for v in values if v is not None), key=metric.score, default=None)


def report_value(metric: MetricSpec, body: TrialReport) -> float:
    """The report's value of the search's metric: `value`, or `top1` for a val_top1 search;
    InvalidInput (422) naming the metric when it carries neither, or a curve point lacks it."""
    value = body.value
    if value is None and is_top1(metric):
        value = body.top1
    try:
        checked = metric.check_value(value, where="the report")
        for point in body.curve:
            found = point.model_dump().get(metric.name)
            metric.check_value(found, where=f"the curve point of epoch {point.epoch}")
    except ValueError as exc:
        raise InvalidInput(str(exc)) from exc
    return checked


def curve_value(metric: MetricSpec, point: Mapping[str, Any]) -> Any:
    """A curve point's (or heartbeat's) value of the metric, None when it has none."""
    return point.get(metric.name)


def in_units(metric: MetricSpec, scores: Any) -> Any:
    """Scores (a number, or nested lists of them) back in the metric's units."""
    if metric.maximize:
        return scores
    if isinstance(scores, list):
        return [in_units(metric, s) for s in scores]
    return None if scores is None else metric.value(scores)


def analysis_in_units(metric: MetricSpec, analysis: dict[str, Any]) -> dict[str, Any]:
    """search.analyze's views (fitted on scores) in the metric's units: each 1-D GP's mean and
    95 % band (a minimised metric's band swaps ends), its observations' values, the 2-D means
    (the standard deviations are the same in both). Each observation keeps `top1` for a
    val_top1 search (the API's older name) and says `value` for every metric."""
    out = dict(analysis)
    one_d = {}
    for factor, view in (analysis.get("one_d") or {}).items():
        lower, upper = view.get("lower"), view.get("upper")
        if not metric.maximize:
            lower, upper = upper, lower
        one_d[factor] = {
            **view,
            "mean": in_units(metric, view.get("mean")),
            "lower": in_units(metric, lower),
            "upper": in_units(metric, upper),
            "observations": [
                {
                    **o,
                    "value": in_units(metric, o["top1"]),
                    "top1": as_top1(metric, in_units(metric, o["top1"])),
                }
                for o in view.get("observations") or []
            ],
        }
    if "one_d" in analysis:
        out["one_d"] = one_d
    if "two_d" in analysis:
        out["two_d"] = {
            pair: {**grid, "mean": in_units(metric, grid.get("mean"))}
            for pair, grid in analysis["two_d"].items()
        }
    return out


def formula_points_in_units(metric: MetricSpec, points: list[dict[str, Any]]) -> list[Any]:
    """The formula's selected points (search.Formula.points, scored) in the metric's units."""
    return [
        {
            **p,
            "value": in_units(metric, p["top1"]),
            "top1": as_top1(metric, in_units(metric, p["top1"])),
        }
        for p in points
    ]
