from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

from vitcube.search import Observation, analyze
from vitcube.search.analysis import grid_posterior
from vitcube.search.gp import fit_gp, posterior_mean_std
from vitcube.search.space import FACTORS


def _synthetic(n: int, seed: int = 0) -> list[Observation]:
    """top-1 rises with r, falls with w, ignores d_i and d_m."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        f = {
            "r": rng.uniform(0.8, 1.7),
            "d_i": rng.uniform(1.3, 2.3),
            "d_m": rng.uniform(0.8, 1.6),
            "w": rng.uniform(0.4, 1.2),
        }
        top1 = 0.5 + 0.2 * (f["r"] - 0.8) - 0.05 * (f["w"] - 0.4) + rng.normal(0, 0.003)
        out.append(Observation(f, float(top1), 100_000_000))
    return out


def test_too_few_observations_is_not_fitted(base) -> None:
    result = analyze(_synthetic(2), base=base)
    assert result["fitted"] is False and result["n"] == 2 and "3" in result["reason"]


def test_json_shape_and_trends(base) -> None:
    obs = _synthetic(25)
    result = analyze(obs, base=base, reference_top1=0.6, grid_1d=40, grid_2d=12)
    json.dumps(result)  # JSON-able
    assert result["fitted"] is True and result["n"] == 25
    assert set(result["one_d"]) == set(FACTORS)
    for view in result["one_d"].values():
        assert len(view["x"]) == len(view["mean"]) == len(view["lower"]) == 40
        band = zip(view["lower"], view["mean"], view["upper"], strict=True)
        assert all(lo <= m <= up for lo, m, up in band)
        assert len(view["observations"]) == 25
    marked = result["one_d"]["r"]["observations"]
    assert all(o["better"] == (o["top1"] > 0.6) for o in marked)
    # The 1-D mean follows the known trend: up with r, down with w.
    r_mean = result["one_d"]["r"]["mean"]
    assert r_mean[-1] - r_mean[0] > 0.12
    assert np.all(np.diff(r_mean) > -1e-3)
    w_mean = result["one_d"]["w"]["mean"]
    assert w_mean[-1] < w_mean[0]
    grid = result["two_d"]["r-w"]
    assert len(grid["x"]) == len(grid["mean"]) == 12 and len(grid["mean"][0]) == 12
    # mean[i][j] is at (x[i], y[j]): increasing along x (r).
    assert grid["mean"][-1][0] > grid["mean"][0][0]
    assert set(result["two_d"]) == {"r-w", "r-d_m"}
    importance = result["importance"]
    assert sum(importance.values()) == pytest.approx(1.0)
    assert importance["r"] == max(importance.values())


def test_bad_observation_is_rejected(base) -> None:
    obs = _synthetic(5)
    obs.append(Observation(obs[0].factors, float("nan"), 1))
    with pytest.raises(ValueError, match="top1"):
        analyze(obs, base=base)


def test_500_by_500_grid_shape_and_values() -> None:
    rng = np.random.default_rng(0)
    X = rng.random((40, 2))
    Y = (X[:, :1] - X[:, 1:]) ** 2
    model = fit_gp(X, Y, bounds=np.array([[0.0, 0.0], [1.0, 1.0]]))
    xs = ys = np.linspace(0, 1, 500)
    start = time.perf_counter()
    mean, std = grid_posterior(model, xs, ys)
    elapsed = time.perf_counter() - start
    assert mean.shape == std.shape == (500, 500)
    assert (std >= 0).all()
    # The diagonal (x == y) is where the function is 0, the corners are where it is 1.
    assert mean[0, -1] > 0.5 and abs(mean[250, 250]) < 0.1
    print(f"500x500 posterior grid: {elapsed:.2f} s")  # timed for real in benchmarks/
    # The grid's fast path (fused kernel, GEMM) equals the exact path and BoTorch's posterior.
    gx, gy = np.meshgrid(xs, ys, indexing="ij")
    some = np.column_stack([gx.ravel(), gy.ravel()])[::997]
    exact_mean, exact_std = posterior_mean_std(model, some)
    assert np.allclose(mean.ravel()[::997], exact_mean[:, 0], atol=1e-9)
    assert np.allclose(std.ravel()[::997], exact_std[:, 0], atol=1e-9)
    with torch.no_grad():
        post = model.posterior(torch.as_tensor(some))
    assert np.allclose(exact_mean, post.mean.numpy(), atol=1e-8)
    assert np.allclose(exact_std, post.variance.sqrt().numpy(), atol=1e-6)
