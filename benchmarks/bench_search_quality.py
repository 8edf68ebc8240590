"""Sample efficiency of the search strategies, side by side in one run.

Problems (all maximised):
- ``branin_currin`` (d=2), ``dtlz2`` (d=4, 2 objectives), ``c2dtlz2`` (d=4, 2 objectives, one
  black-box constraint) from ``botorch.test_functions.multi_objective``: metric
  log10(max hypervolume − hypervolume of the feasible points evaluated so far), lower is
  better;
- ``surrogate``: MobileViT-v2-0.5 under a MAC budget of 0.5 × m0 on the synthetic landscape
  of ``workers/surrogate.py`` (ImageNet-like "imagefolder", noisy observations): metric regret
  in top-1 percentage points = best noiseless top-1 in the lattice under the budget (found by
  enumeration) − best noiseless top-1 among the networks evaluated, lower is better.

Methods: ``gp`` (our BoTorch strategy: on the test problems ``search.acquisition.
box_initial_design`` — the cube's centre then Sobol, 2·d points, as Ax's default starts —
then ``propose_in_box``, continuous acquisition optimisation; ``make_strategy("gp")`` on the
surrogate), ``gp-sobol-init`` (not run by default: the same with an all-Sobol initial design,
an ablation of the centre point), ``random``, ``sobol``, ``ax`` (Ax's Client
with its default generation strategy; ``make_strategy("ax")`` on the surrogate), ``tpe`` and
``nsga2`` (Optuna's TPESampler / NSGAIISampler with population 8 — the default 50 would never
leave its random first generation in 40 evaluations). Batches of 4; metrics after 10, 20, 40
evaluations (the first k evaluated points), mean ± standard error over seeds. On the test
problems every method gets the problem's reference point (Ax and Optuna as objective
thresholds / not at all, ours for the hypervolume acquisition). On the surrogate, Optuna's
proposals are rounded to the lattice and projected onto the budget exactly as the ``ax``
strategy's are (and told to Optuna at the parameters it asked for).

Run:  .venv/bin/python benchmarks/bench_search_quality.py            (5 seeds, ~15 min, 2 cores)
      .venv/bin/python benchmarks/bench_search_quality.py --quick    (2 seeds, 20 evaluations)
"""

from __future__ import annotations

import argparse
import logging
import math
import multiprocessing
import os
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch

warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)
torch.set_num_threads(1)

METHODS = ("gp", "random", "sobol", "ax", "tpe", "nsga2")
BATCH = 4


@dataclass
class BoxProblem:
    """A botorch test problem on the unit cube: objectives maximised, slack >= 0 feasible."""

    name: str
    problem: object
    num_objectives: int
    num_constraints: int

    @property
    def dim(self) -> int:
        return int(self.problem.dim)  # type: ignore[attr-defined]

    def evaluate(self, unit: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        bounds = self.problem.bounds  # type: ignore[attr-defined]
        X = bounds[0] + torch.as_tensor(unit, dtype=torch.double) * (bounds[1] - bounds[0])
        Y = self.problem(X).numpy()  # type: ignore[operator]
        if self.num_constraints:
            slack = self.problem.evaluate_slack(X).numpy()  # type: ignore[attr-defined]
        else:
            slack = np.zeros((len(unit), 0))
        return Y, slack

    @property
    def ref_point(self) -> list[float]:
        return self.problem.ref_point.tolist()  # type: ignore[attr-defined]

    def metric(self, Y: np.ndarray, slack: np.ndarray) -> float:
        from vitcube.search.pareto import hypervolume

        feasible = (slack >= 0).all(axis=1)
        hv = hypervolume(Y[feasible], self.ref_point) if feasible.any() else 0.0
        gap = float(self.problem.max_hv) - hv  # type: ignore[attr-defined]
        return math.log10(max(gap, 1e-12))


def box_problems() -> list[BoxProblem]:
    from botorch.test_functions.multi_objective import C2DTLZ2, DTLZ2, BraninCurrin

    return [
        BoxProblem("branin_currin", BraninCurrin(negate=True).to(torch.double), 2, 0),
        BoxProblem("dtlz2", DTLZ2(dim=4, num_objectives=2, negate=True).to(torch.double), 2, 0),
        BoxProblem("c2dtlz2", C2DTLZ2(dim=4, num_objectives=2, negate=True).to(torch.double), 2, 1),
    ]


# -- methods on box problems -------------------------------------------------------------


def run_box(problem: BoxProblem, method: str, seed: int, n_evals: int) -> np.ndarray:
    """Return the metric after each evaluation count in 1..n_evals."""
    d, m = problem.dim, problem.num_objectives
    X = np.zeros((0, d))
    Y = np.zeros((0, m))
    S = np.zeros((0, problem.num_constraints))
    rng = np.random.default_rng(seed)
    ask: Callable[[int], np.ndarray]

    def tell(x: np.ndarray, y: np.ndarray, s: np.ndarray) -> None:
        return None

    if method in ("gp", "gp-sobol-init"):
        from vitcube.search.acquisition import box_initial_design, propose_in_box

        design = box_initial_design(d, seed=seed).numpy()
        if method == "gp-sobol-init":  # ablation: no centre point in the initial design
            from scipy.stats import qmc

            design = qmc.Sobol(d, scramble=True, rng=seed).random(len(design))

        def ask(q: int) -> np.ndarray:
            if len(X) < len(design):
                return design[len(X) : len(X) + q]
            train_Y = np.concatenate([Y, -S], axis=1)  # constraints feasible when <= 0
            return propose_in_box(
                torch.as_tensor(X),
                torch.as_tensor(train_Y),
                q,
                num_objectives=m,
                ref_point=problem.ref_point,
                seed=seed,
            ).numpy()

    elif method == "random":

        def ask(q: int) -> np.ndarray:
            return rng.random((q, d))

    elif method == "sobol":
        from scipy.stats import qmc

        engine = qmc.Sobol(d, scramble=True, rng=seed)

        def ask(q: int) -> np.ndarray:
            return engine.random(q)

    elif method == "ax":
        ask, tell = _ax_box(problem, seed)
    else:
        ask, tell = _optuna_box(problem, method, seed)
    metrics = []
    while len(X) < n_evals:
        q = min(BATCH, n_evals - len(X))
        x = np.asarray(ask(q))[:q]
        y, s = problem.evaluate(x)
        tell(x, y, s)
        for i in range(len(x)):
            X, Y, S = (
                np.vstack([X, x[i : i + 1]]),
                np.vstack([Y, y[i : i + 1]]),
                np.vstack([S, s[i : i + 1]]),
            )
            metrics.append(problem.metric(Y, S))
    return np.array(metrics)


def _ax_box(problem: BoxProblem, seed: int):  # type: ignore[no-untyped-def]
    from ax import Client, RangeParameterConfig

    client = Client(random_seed=seed)
    names = [f"x{i}" for i in range(problem.dim)]
    client.configure_experiment(
        parameters=[
            RangeParameterConfig(name=n, parameter_type="float", bounds=(0.0, 1.0)) for n in names
        ]
    )
    objectives = [f"f{j}" for j in range(problem.num_objectives)]
    constraints = [f"f{j} >= {r}" for j, r in enumerate(problem.ref_point)]
    constraints += [f"c{k} >= 0.0" for k in range(problem.num_constraints)]
    client.configure_optimization(objective=", ".join(objectives), outcome_constraints=constraints)
    pending: list[int] = []

    def ask(q: int) -> np.ndarray:
        trials = client.get_next_trials(max_trials=q)
        pending[:] = list(trials)
        return np.array([[trials[t][n] for n in names] for t in pending])

    def tell(x: np.ndarray, y: np.ndarray, s: np.ndarray) -> None:
        for i, t in enumerate(pending):
            data = {f"f{j}": float(y[i, j]) for j in range(y.shape[1])}
            data |= {f"c{k}": float(s[i, k]) for k in range(s.shape[1])}
            client.complete_trial(t, raw_data=data)

    return ask, tell


def _optuna_box(problem: BoxProblem, method: str, seed: int):  # type: ignore[no-untyped-def]
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    constraints = {}

    def constraints_func(trial: optuna.trial.FrozenTrial) -> list[float]:
        return constraints[trial.number]

    kwargs = {"constraints_func": constraints_func} if problem.num_constraints else {}
    if method == "tpe":
        sampler: optuna.samplers.BaseSampler = optuna.samplers.TPESampler(seed=seed, **kwargs)
    else:
        sampler = optuna.samplers.NSGAIISampler(seed=seed, population_size=8, **kwargs)
    study = optuna.create_study(directions=["maximize"] * problem.num_objectives, sampler=sampler)
    asked: list[optuna.trial.Trial] = []

    def ask(q: int) -> np.ndarray:
        asked[:] = [study.ask() for _ in range(q)]
        return np.array(
            [[t.suggest_float(f"x{i}", 0.0, 1.0) for i in range(problem.dim)] for t in asked]
        )

    def tell(x: np.ndarray, y: np.ndarray, s: np.ndarray) -> None:
        for i, t in enumerate(asked):
            # Optuna's convention: constraint values <= 0 are feasible.
            constraints[t.number] = [-float(v) for v in s[i]]
            if problem.num_constraints:
                t.set_user_attr("constraint", constraints[t.number])
            study.tell(t, [float(v) for v in y[i]])

    return ask, tell


# -- the MobileViT surrogate under a budget ---------------------------------------------


class SurrogateProblem:
    name = "surrogate"

    def __init__(self) -> None:
        from vitcube.models import ArchConfig, count_macs
        from vitcube.search.space import Space, feasible_mask

        self.base = ArchConfig.preset("mobilevitv2_050")
        self.m0 = count_macs(self.base)
        self.max_macs = self.m0 // 2
        self.space = Space(self.base)
        every = self.space.enumerate_all()
        feasible = every.take(feasible_mask(every.macs, max_macs=self.max_macs))
        self.optimum = max(
            self._true(dict(zip(("r", "d_i", "d_m", "w"), map(float, row), strict=True)))
            for row in feasible.requested
        )

    def _true(self, requested: dict[str, float]) -> float:
        from vitcube.workers.surrogate import noiseless_top1

        return noiseless_top1(self.base.scale(**requested), dataset="imagefolder")

    def observe(self, requested: dict[str, float], seed: int):  # type: ignore[no-untyped-def]
        from vitcube.models import count_macs
        from vitcube.search import Observation
        from vitcube.workers.surrogate import surrogate_top1

        arch = self.base.scale(**requested)
        return Observation(
            arch.effective_factors(),
            surrogate_top1(arch, dataset="imagefolder", seed=seed),
            count_macs(arch),
        )

    def regret(self, requested: list[dict[str, float]]) -> float:
        return 100.0 * (self.optimum - max(self._true(r) for r in requested))


def run_surrogate(problem: SurrogateProblem, method: str, seed: int, n_evals: int) -> np.ndarray:
    from vitcube.search import make_strategy

    requested: list[dict[str, float]] = []
    observations = []
    metrics: list[float] = []
    truths: list[float] = []
    if method in ("gp", "gp-sobol-init", "random", "sobol", "ax"):
        # The lattice strategy starts from its own design: the ablation is the same gp there.
        name = "gp" if method == "gp-sobol-init" else method
        strategy = make_strategy(name, base=problem.base, max_macs=problem.max_macs, seed=seed)

        def ask(q: int) -> list[dict[str, float]]:
            return strategy.suggest(observations, [], q)

        def tell(batch: list[dict[str, float]], obs: list) -> None:  # type: ignore[type-arg]
            pass

    else:
        ask, tell = _optuna_surrogate(problem, method, seed)
    while len(requested) < n_evals:
        batch = ask(min(BATCH, n_evals - len(requested)))
        if not batch:
            break
        obs = [problem.observe(r, seed) for r in batch]
        tell(batch, obs)
        for r, o in zip(batch, obs, strict=True):
            requested.append(r)
            observations.append(o)
            truths.append(problem._true(r))
            metrics.append(100.0 * (problem.optimum - max(truths)))
    return np.array(metrics)


def _optuna_surrogate(problem: SurrogateProblem, method: str, seed: int):  # type: ignore[no-untyped-def]
    import optuna

    from vitcube.search.space import FACTORS, feasible_mask

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    if method == "tpe":
        sampler: optuna.samplers.BaseSampler = optuna.samplers.TPESampler(seed=seed)
    else:
        sampler = optuna.samplers.NSGAIISampler(seed=seed, population_size=8)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    asked: list[optuna.trial.Trial] = []
    space = problem.space

    def ask(q: int) -> list[dict[str, float]]:
        asked[:] = [study.ask() for _ in range(q)]
        raw = np.array([[t.suggest_float(f, *space.bounds[f]) for f in FACTORS] for t in asked])
        levels = space.snap(raw)
        ok = feasible_mask(space.macs_of_rows(levels), max_macs=problem.max_macs)
        out = []
        for i in range(q):
            if ok[i]:
                row = space.candidates(levels[i : i + 1]).requested[0]
            else:
                projected = space.project(space.to_unit(raw[i : i + 1]), max_macs=problem.max_macs)
                row = projected.requested[0]
            out.append(dict(zip(FACTORS, map(float, row), strict=True)))
        return out

    def tell(batch: list[dict[str, float]], obs: list) -> None:  # type: ignore[type-arg]
        for t, o in zip(asked, obs, strict=True):
            study.tell(t, o.top1)

    return ask, tell


# -- driver -------------------------------------------------------------------------------

_PROBLEMS: dict[str, object] = {}


def _run_task(task: tuple[str, str, int, int]) -> tuple[str, str, int, np.ndarray, float]:
    name, method, seed, n_evals = task
    torch.set_num_threads(1)
    problem = _PROBLEMS[name]
    start = time.perf_counter()
    if isinstance(problem, BoxProblem):
        metrics = run_box(problem, method, seed, n_evals)
    else:
        metrics = run_surrogate(problem, method, seed, n_evals)  # type: ignore[arg-type]
    return name, method, seed, metrics, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 seeds, 20 evaluations")
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--evals", type=int, default=None)
    parser.add_argument("--problems", default="branin_currin,dtlz2,c2dtlz2,surrogate")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    args = parser.parse_args()
    seeds = args.seeds or (2 if args.quick else 5)
    n_evals = args.evals or (20 if args.quick else 40)
    checkpoints = [k for k in (10, 20, 40) if k <= n_evals] or [n_evals]
    wanted = args.problems.split(",")
    methods = args.methods.split(",")
    problems: list[object] = [p for p in box_problems() if p.name in wanted]
    if "surrogate" in wanted:
        problems.append(SurrogateProblem())
    print(
        f"# bench_search_quality: {seeds} seeds, {n_evals} evaluations in batches of {BATCH}, "
        f"{args.jobs} jobs on {os.cpu_count()} CPUs, torch {torch.__version__}",
        flush=True,
    )
    names = [problem.name for problem in problems]  # type: ignore[attr-defined]
    _PROBLEMS.update(zip(names, problems, strict=True))
    tasks = [
        (name, method, seed, n_evals)
        for name in names
        for method in methods
        for seed in range(seeds)
    ]
    # Slow tasks (Ax, our GP) first so the workers finish together.
    tasks.sort(key=lambda t: t[1] not in ("ax", "gp", "gp-sobol-init"))
    runs: dict[tuple[str, str], list[np.ndarray]] = {}
    took: dict[tuple[str, str], list[float]] = {}
    wall = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(args.jobs) as pool:
        for name, method, seed, metrics, elapsed in pool.imap_unordered(_run_task, tasks):
            runs.setdefault((name, method), []).append(metrics)
            took.setdefault((name, method), []).append(elapsed)
            print(f"  {name:14s} {method:7s} seed {seed}: {elapsed:6.1f} s", flush=True)
    wall = time.perf_counter() - wall
    results = {key: np.stack([r[:n_evals] for r in value]) for key, value in runs.items()}
    seconds = {key: float(np.mean(value)) for key, value in took.items()}
    print()
    columns = " ".join(f"{'@' + str(k):>14s}" for k in checkpoints)
    header = f"{'problem':14s} {'method':7s} {columns} {'s/run':>7s}"
    print(header)
    print("-" * len(header))
    for name in names:
        for method in methods:
            r = results[name, method]
            cells = []
            for k in checkpoints:
                v = r[:, k - 1]
                se = v.std(ddof=1) / math.sqrt(len(v)) if len(v) > 1 else 0.0
                cells.append(f"{v.mean():7.3f} ± {se:5.3f}")
            row = " ".join(f"{c:>14s}" for c in cells)
            print(f"{name:14s} {method:7s} {row} {seconds[name, method]:7.1f}")
        print()
    print("Metric: log10 hypervolume gap (test problems) or top-1 regret in points (surrogate);")
    print("lower is better. Peer's hypervolume gap / gp's (> 1: gp better), or peer's regret")
    print("minus gp's (> 0: gp better), at the last checkpoint; and the evaluations random")
    print("needs to match gp at the first checkpoint:")
    last, first = checkpoints[-1], checkpoints[0]
    for name, problem in zip(names, problems, strict=True):
        if "gp" not in methods:
            continue
        gp = results[name, "gp"].mean(axis=0)
        parts = []
        for method in methods:
            if method == "gp":
                continue
            peer = results[name, method].mean(axis=0)
            if isinstance(problem, BoxProblem):
                ratio = 10 ** (peer[last - 1] - gp[last - 1])
                parts.append(f"{method} {ratio:.2f}x")
            else:
                # Regret reaches 0, so a ratio is meaningless: the difference in points.
                parts.append(f"{method} {peer[last - 1] - gp[last - 1]:+.2f} pt")
        need = "n/a"
        if "random" in methods:
            rnd = results[name, "random"].mean(axis=0)
            hits = [i + 1 for i in range(n_evals) if rnd[i] <= gp[first - 1]]
            need = str(hits[0]) if hits else f">{n_evals}"
        print(f"  {name:14s} @{last}: {', '.join(parts)}; random needs {need} for gp@{first}")
    print(f"wall time {wall:.0f} s")


if __name__ == "__main__":
    main()
