"""Latency of proposing a batch, ours against Ax's Client on identical data, in one run.

Data: MobileViT-v2-0.5 under a budget of 0.5 × m0 (the DEFAULT_SPACE cube), N distinct
in-budget networks drawn by the ``random`` strategy and scored on the synthetic landscape of
``workers/surrogate.py``. For each N we time:

- ``gp``: ``make_strategy("gp").suggest(observations, [], 4)`` — fit, pool, acquisition,
  rounding and the budget check included — accuracy objective, and the pareto objective;
- ``ax``: a fresh ``ax.Client`` with the same 4 range parameters, the N observations attached
  and completed (top-1 and MACs / budget, the constraint ``macs_ratio <= 1``), then
  ``get_next_trials(4)``: exactly what ``make_strategy("ax")`` does per call.

Both run with one torch thread (what the strategies use; on a shared 2-core box many threads
are slower). Times are the median of ``--repeats`` calls after one warm-up call (imports and
the MAC cache warm, and our GP fit warm-started from the previous call's hyperparameters, as
in a running search); the first call of a fresh search (cold fit) is shown too. Ax at
N ≥ 1000 is timed once. Past 1000 observations the
GP's hyperparameters are fitted on a 400-point subsample (the best 100 plus random ones) and
then conditioned on all points, so the cost grows with one n × n Cholesky, not with n³ per
optimiser step: the N = 2000 row shows it (Ax is not run there).

Also: the 500 × 500 posterior grid of ``search.analysis.grid_posterior`` (a 2-D GP on 200
observations; grids of ≥ 20,000 points use a fused Matérn kernel, one GEMM with L⁻¹ per chunk
and two torch threads) against BoTorch's ``model.posterior(X)`` mean/variance on a 100 × 100
grid in 2,500-point chunks (BoTorch materialises each chunk's test covariance).

Run:  .venv/bin/python benchmarks/bench_search_latency.py          (N = 50, 200, 1000, 2000)
      .venv/bin/python benchmarks/bench_search_latency.py --quick  (N = 50, 200; 1 repeat)
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch

warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)
torch.set_num_threads(1)


def timed(fn: Callable[[], object], repeats: int, warmup: bool = True) -> float:
    return timed_cold(fn, repeats, warmup)[1]


def timed_cold(fn: Callable[[], object], repeats: int, warmup: bool = True) -> tuple[float, float]:
    """(first call, median of ``repeats`` later calls); the first call is the warm-up."""
    first = float("nan")
    if warmup:
        start = time.perf_counter()
        fn()
        first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return first, statistics.median(times)


def make_data(n: int, seed: int = 0):  # type: ignore[no-untyped-def]
    from vitcube.models import ArchConfig, count_macs
    from vitcube.search import Observation, make_strategy
    from vitcube.workers.surrogate import surrogate_top1

    base = ArchConfig.preset("mobilevitv2_050")
    max_macs = count_macs(base) // 2
    random = make_strategy("random", base=base, max_macs=max_macs, seed=seed)
    requests = random.suggest([], [], n)
    observations = []
    for r in requests:
        arch = base.scale(**r)
        observations.append(
            Observation(
                arch.effective_factors(),
                surrogate_top1(arch, dataset="imagefolder", seed=seed),
                count_macs(arch),
            )
        )
    return base, max_macs, observations


def ax_call(base, max_macs: int, observations, q: int = 4) -> None:  # type: ignore[no-untyped-def]
    from ax import Client, RangeParameterConfig

    from vitcube.search.space import DEFAULT_SPACE, FACTORS

    client = Client(random_seed=0)
    client.configure_experiment(
        parameters=[
            RangeParameterConfig(name=f, parameter_type="float", bounds=DEFAULT_SPACE[f])
            for f in FACTORS
        ]
    )
    client.configure_optimization(objective="top1", outcome_constraints=["macs_ratio <= 1.0"])
    for o in observations:
        params = {f: float(np.clip(o.factors[f], *DEFAULT_SPACE[f])) for f in FACTORS}
        index = client.attach_trial(parameters=params)  # type: ignore[arg-type]
        client.complete_trial(index, raw_data={"top1": o.top1, "macs_ratio": o.macs / max_macs})
    client.get_next_trials(max_trials=q)


def grid_rows(repeats: int) -> list[tuple[str, float]]:
    from vitcube.search.analysis import grid_posterior
    from vitcube.search.gp import fit_gp, posterior_mean_std

    rng = np.random.default_rng(0)
    X = rng.random((200, 2))
    Y = np.sin(3 * X[:, :1]) * np.cos(2 * X[:, 1:]) + 0.01 * rng.normal(size=(200, 1))
    model = fit_gp(X, Y, bounds=np.array([[0.0, 0.0], [1.0, 1.0]]))
    xs500 = np.linspace(0, 1, 500)
    xs100 = np.linspace(0, 1, 100)
    ours500 = timed(lambda: grid_posterior(model, xs500, xs500), repeats)
    ours100 = timed(lambda: grid_posterior(model, xs100, xs100), repeats)
    g = np.stack(np.meshgrid(xs100, xs100, indexing="ij"), -1).reshape(-1, 2)
    G = torch.as_tensor(g)

    def botorch_grid() -> None:
        with torch.no_grad():
            for start in range(0, len(G), 2500):
                post = model.posterior(G[start : start + 2500])
                _ = post.mean, post.variance

    theirs100 = timed(botorch_grid, max(1, repeats // 2))
    # Same numbers, up to round-off:
    mean, std = posterior_mean_std(model, G[:500])
    with torch.no_grad():
        post = model.posterior(G[:500])
    assert np.allclose(mean, post.mean.numpy(), atol=1e-8)
    assert np.allclose(std, post.variance.sqrt().numpy(), atol=1e-6)
    return [
        ("ours 500x500 (250k points)", ours500),
        ("ours 100x100", ours100),
        ("botorch posterior() 100x100", theirs100),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="N = 50, 200; one repeat")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    sizes = [50, 200] if args.quick else [50, 200, 1000, 2000]
    repeats = args.repeats or (1 if args.quick else 3)
    from vitcube.search import make_strategy

    print(
        f"# bench_search_latency: batch of 4, median of {repeats} after a warm-up, "
        f"1 torch thread, torch {torch.__version__}",
        flush=True,
    )
    rows = []
    for n in sizes:
        base, max_macs, observations = make_data(n)
        gp = make_strategy("gp", base=base, max_macs=max_macs, seed=n)
        cold_s, gp_s = timed_cold(lambda gp=gp, o=observations: gp.suggest(o, [], 4), repeats)
        pareto = make_strategy(
            "gp", base=base, max_macs=max_macs, objective="pareto", min_macs=max_macs // 4
        )
        pareto_s = timed(lambda p=pareto, o=observations: p.suggest(o, [], 4), repeats)
        ax_s = float("nan")
        if n <= 1000:
            ax_repeats = repeats if n < 1000 else 1
            ax_s = timed(
                lambda b=base, m=max_macs, o=observations: ax_call(b, m, o),
                ax_repeats,
                warmup=n < 1000,
            )
        rows.append((n, cold_s, gp_s, pareto_s, ax_s))
        print(
            f"  N={n}: gp {gp_s:.2f} s (first call {cold_s:.2f} s), gp pareto {pareto_s:.2f} s, "
            f"ax {ax_s:.2f} s",
            flush=True,
        )
    print()
    print(
        f"{'observations':>12s} {'gp (s)':>8s} {'gp 1st (s)':>10s} {'gp pareto (s)':>14s}"
        f" {'Ax Client (s)':>14s} {'Ax / gp':>8s} {'Ax / gp 1st':>11s}"
    )
    for n, cold_s, gp_s, pareto_s, ax_s in rows:
        ratio = f"{ax_s / gp_s:7.1f}x" if ax_s == ax_s else "      -"
        ratio_cold = f"{ax_s / cold_s:10.1f}x" if ax_s == ax_s else "         -"
        ax_cell = f"{ax_s:14.2f}" if ax_s == ax_s else f"{'not run':>14s}"
        print(
            f"{n:12d} {gp_s:8.2f} {cold_s:10.2f} {pareto_s:14.2f} {ax_cell} {ratio:>8s}"
            f" {ratio_cold:>11s}"
        )
    print()
    grid = grid_rows(repeats)
    print(f"{'posterior grid (2-D GP, 200 points)':36s} {'seconds':>8s}")
    for name, seconds in grid:
        print(f"{name:36s} {seconds:8.3f}")
    per_point_ours = grid[1][1] / 10_000
    per_point_theirs = grid[2][1] / 10_000
    print(f"botorch / ours per point (100x100): {per_point_theirs / per_point_ours:.1f}x")


if __name__ == "__main__":
    main()
