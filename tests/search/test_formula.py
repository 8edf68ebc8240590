from __future__ import annotations

import json

import numpy as np
import pytest

from vitcube.models import count_macs
from vitcube.search import Observation, fit_formula


def _law(c: float) -> dict[str, float]:
    """The known answer: how the best models scale with c."""
    return {"r": 0.7 + 0.5 * c, "d_i": 1.5, "d_m": 0.8 + 0.4 * c, "w": 0.3 + 0.6 * c}


def _observations(m0: int, seed: int = 0) -> list[Observation]:
    rng = np.random.default_rng(seed)
    best = [Observation(_law(c), 0.5 + 0.3 * c, int(c * m0)) for c in np.linspace(0.2, 1.0, 12)]
    # 48 dominated models: random factors, lower accuracy at the same MACs.
    worse = []
    for _ in range(48):
        c = rng.uniform(0.2, 1.0)
        f = {
            "r": rng.uniform(0.8, 1.7),
            "d_i": rng.uniform(1.3, 2.3),
            "d_m": rng.uniform(0.8, 1.6),
            "w": rng.uniform(0.4, 1.2),
        }
        worse.append(Observation(f, 0.45 + 0.3 * c - rng.uniform(0.01, 0.1), int(c * m0)))
    return best + worse


def test_formula_recovers_the_known_law(base, m0) -> None:
    formula = fit_formula(_observations(m0), base=base)
    assert len(formula.points) == 12  # the top 20 % of 60 is exactly the known front
    for c in (0.3, 0.5, 0.8):
        result = formula.predict(c)
        json.dumps(result)
        for f, expected in _law(c).items():
            assert result["factors"][f]["mean"] == pytest.approx(expected, abs=0.03), f
            assert result["factors"][f]["std"] < 0.05
        assert result["macs"] <= result["max_macs"] == int(c * m0)
        assert count_macs(base.scale(**result["scale"])) == result["macs"]


def test_prediction_is_repaired_to_fit_the_budget(base, m0) -> None:
    formula = fit_formula(_observations(m0), base=base)
    for c in (0.05, 0.2, 0.6, 1.5):
        result = formula.predict(c)
        assert result["macs"] <= int(c * m0)
    # At 0.6 the law's own network overshoots (d_i = 1.5 adds blocks): width is shrunk first.
    result = formula.predict(0.6)
    law = _law(0.6)
    if count_macs(base.scale(**law)) > int(0.6 * m0):
        assert result["scale"]["w"] < law["w"]
        assert result["scale"]["d_i"] == pytest.approx(law["d_i"], abs=0.03)


def test_curve_shape(base, m0) -> None:
    formula = fit_formula(_observations(m0), base=base)
    curve = formula.curve([0.25, 0.5, 0.75])
    json.dumps(curve)
    assert curve["c"] == [0.25, 0.5, 0.75]
    w = curve["factors"]["w"]
    assert w["lower"][1] <= w["mean"][1] <= w["upper"][1]
    assert w["mean"][0] < w["mean"][2]  # w grows with c
    assert len(curve["points"]) == 12 and set(curve["points"][0]) >= {"c", "r", "w"}


def test_bad_input(base, m0) -> None:
    with pytest.raises(ValueError, match="at least"):
        fit_formula(_observations(m0)[:3], base=base)
    formula = fit_formula(_observations(m0), base=base)
    for c in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="c must"):
            formula.predict(c)
