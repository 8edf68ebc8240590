"""search: Bayesian optimisation of MobileViT's global factors under an exact MAC budget.

Public API (``__all__`` below): ``make_strategy``, ``Observation``, ``Strategy``,
``reference_trials``, ``ReferenceTrial``, ``min_reachable_macs``, ``InfeasibleBudgetError``,
``DEFAULT_SPACE``, ``analyze``, ``fit_formula``, ``Formula``, ``pareto_front``.

Names resolve lazily (PEP 562) so that ``from vitcube import search`` imports neither botorch
nor ax: a worker box or the web process imports only what it calls.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "DEFAULT_SPACE": "vitcube.search.space",
    "FACTORS": "vitcube.search.space",
    "InfeasibleBudgetError": "vitcube.search.space",
    "min_reachable_macs": "vitcube.search.space",
    "Observation": "vitcube.search.strategies",
    "ReferenceTrial": "vitcube.search.strategies",
    "Strategy": "vitcube.search.strategies",
    "make_strategy": "vitcube.search.strategies",
    "reference_trials": "vitcube.search.strategies",
    "analyze": "vitcube.search.analysis",
    "Formula": "vitcube.search.formula",
    "fit_formula": "vitcube.search.formula",
    "pareto_front": "vitcube.search.pareto",
}

__all__ = [
    "DEFAULT_SPACE",
    "FACTORS",
    "Formula",
    "InfeasibleBudgetError",
    "Observation",
    "ReferenceTrial",
    "Strategy",
    "analyze",
    "fit_formula",
    "make_strategy",
    "min_reachable_macs",
    "pareto_front",
    "reference_trials",
]

if TYPE_CHECKING:
    from vitcube.search.analysis import analyze
    from vitcube.search.formula import Formula, fit_formula
    from vitcube.search.pareto import pareto_front
    from vitcube.search.space import (
        DEFAULT_SPACE,
        FACTORS,
        InfeasibleBudgetError,
        min_reachable_macs,
    )
    from vitcube.search.strategies import (
        Observation,
        ReferenceTrial,
        Strategy,
        make_strategy,
        reference_trials,
    )


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'vitcube.search' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
