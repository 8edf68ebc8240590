"""Multi-fidelity search: training compute to find the best network, side by side in one run.

Problem: MobileViT-v2-0.5 under c = 0.5 × m0 on both landscapes of ``workers/surrogate.py``
("balanced" and "ridge"), dataset "imagefolder" (1000 classes), a recipe of ``--epochs`` E = 81
epochs, 50,000 training images per epoch. A segment of e epochs of a network with M MACs per
image costs e · M · 50,000 training MACs (``train_macs``); the unit "full" below is one full
training of a network at the budget, E · max_macs · 50,000. Target: the best noiseless final
top-1 (``noiseless_top1`` after E epochs) over every buildable network under the budget (the
lattice enumerated by ``search.space.Space.enumerate_all``). A run *reaches* the target when the
network a user would pick — the trial with the best observed top-1 among the trials that trained
all E epochs — has a noiseless final top-1 of at least target − 0.003 (0.3 points). Metric: the
training compute spent until then, median over ``--seeds`` seeds (a run that has not reached it
at the compute cap ``--cap``, default 40 full, counts as not reached: a median of "not
reached" is printed as such).

Simulation: ``--parallelism`` P = 4 workers, asynchronous: an event queue in which a segment
takes time proportional to its compute; whenever a worker is free the method's scheduler picks
the next segment. Compute counts what the workers have spent up to the moment of reaching,
*including the elapsed part of segments still running* (what a cluster would have burnt); the
same for the epochs. A run stops when it reaches the target or at the cap; in the anytime table
a run that stopped on reaching keeps its regret at reaching (≤ 0.3 points) for larger budgets,
and before any trial has trained all E epochs there is no pick (printed "–" when that is the
median). Every method sees the same surrogate noise per (network, seed): the seed of run k is k,
for the strategy and for every trial's curve.

Methods:
- ``gp+asha`` (ours): the rule the service's planner applies to a search with the default
  schedule. Rungs ``contract.rung_epochs(default_schedule(E), E)`` = 3, 9, 27, 81 (eta 3), two
  brackets. When a worker frees: promote first (rungs from the highest non-final one down to 0;
  the first trial ``search.asha.promotable`` names), else a new configuration, at the rung
  ``search.asha.start_rung`` picks (0 for about 7 in 10, 1 for the rest), from
  ``make_strategy("gp")`` fitted on the results at rung ``search.asha.model_rung(counts,
  min_points=6)`` (effective factors, top-1 at that rung, MACs), pending = the requested factors
  of every configuration without a result at that rung. A rung result is
  ``surrogate_curve(...)[rung_epoch - 1]``, the curve of one run of E epochs (its LR schedule
  spans E, as a resumed service segment's does).
- ``gp+asha1``: the ablation, plain ASHA (one bracket: every configuration starts at rung 0).
- ``random+asha``: the same rule as ``gp+asha``, new configurations from
  ``make_strategy("random")``.
- ``gp-full``, ``random-full`` (the paper's method): every trial trains all E epochs;
  observations = final values of finished trials, pending = running ones.
- ``optuna-tpe-hb``: Optuna's TPESampler(seed) with HyperbandPruner(min_resource=3,
  max_resource=E, reduction_factor=3), sequential (one trial at a time: Optuna's n_jobs=1),
  reporting the curve value every epoch and pruning when told; proposals rounded to the lattice
  and projected onto the budget as ``bench_search_quality.py`` does (and told to Optuna at the
  parameters it asked for). A network Optuna proposes twice is trained twice (Optuna does).
  Its compute = epochs actually trained × MACs × images.
No reference trials (the service queues the width-only and compound shrinks first): every
method starts from its own proposals. DEHB was not run: ``pip install dehb`` would downgrade
numpy 2.4 to 1.26 in the shared environment; SMAC3 was not run either: it is no project
dependency and would add 18 packages (dask, distributed, …) to the shared environment.

Runtime: the full default run took 1113 s (18.5 min) with ``--jobs 2`` on the 2-core VM while
other jobs kept its load average at 4–6; nearly all of it is ``gp+asha`` runs that go to the
cap (one took 1019 s): under ASHA the pending set (every configuration without a result at the
model rung) grows to hundreds, and a GP proposal with ~300 pending points takes 2–3 s.

Run:  .venv/bin/python benchmarks/bench_multi_fidelity.py --jobs 2     (5 seeds; see README)
      .venv/bin/python benchmarks/bench_multi_fidelity.py --quick      (2 seeds, cap 8 full)
"""

from __future__ import annotations

import argparse
import heapq
import json
import logging
import math
import multiprocessing
import os
import statistics
import sys
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch

warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)
torch.set_num_threads(1)

from vitcube.contract import FACTORS, default_schedule, rung_epochs  # noqa: E402
from vitcube.models import Arch, ArchConfig, count_macs  # noqa: E402
from vitcube.search.asha import model_rung, promotable, start_rung  # noqa: E402
from vitcube.workers.surrogate import LANDSCAPES, noiseless_top1, surrogate_curve  # noqa: E402

METHODS = ("gp+asha", "gp+asha1", "random+asha", "gp-full", "random-full", "optuna-tpe-hb")
DATASET = "imagefolder"
TRAIN_IMAGES = 50_000  # per epoch
TOLERANCE = 0.003  # "reached": within 0.3 points of the best noiseless final top-1
MIN_POINTS = 6  # model_rung's evidence threshold (what the service uses)
ANYTIME_UNITS = (1, 2, 4, 8, 16, 32)


# -- the problem ----------------------------------------------------------------------------


class Problem:
    """One landscape at c = 0.5: the lattice's best network, and cached truths per network."""

    def __init__(self, landscape: str, epochs: int) -> None:
        from vitcube.search.space import Space, feasible_mask

        self.landscape = landscape
        self.epochs = epochs
        self.base = ArchConfig.preset("mobilevitv2_050")
        self.m0 = count_macs(self.base)
        self.max_macs = self.m0 // 2
        self.space = Space(self.base)
        self.unit = epochs * self.max_macs * TRAIN_IMAGES  # one full training at the budget
        self._truth: dict[str, float] = {}
        every = self.space.enumerate_all()
        feasible = every.take(feasible_mask(every.macs, max_macs=self.max_macs))
        self.target = max(self.truth(self.arch(_as_dict(row))) for row in feasible.requested)
        self.lattice = len(self._truth)

    def arch(self, requested: Mapping[str, float]) -> Arch:
        return self.base.scale(**{f: float(requested[f]) for f in FACTORS})

    def truth(self, arch: Arch) -> float:
        key = arch.key()
        if key not in self._truth:
            self._truth[key] = noiseless_top1(
                arch, dataset=DATASET, epochs=self.epochs, landscape=self.landscape
            )
        return self._truth[key]

    def curve(self, arch: Arch, seed: int) -> list[float]:
        return surrogate_curve(
            arch, dataset=DATASET, epochs=self.epochs, seed=seed, landscape=self.landscape
        )


def _as_dict(row: Any) -> dict[str, float]:
    return dict(zip(FACTORS, map(float, row), strict=True))


@dataclass
class Trial:
    id: int
    requested: dict[str, float]
    arch: Arch
    macs: int
    effective: dict[str, float]
    curve: list[float]
    epochs_done: int = 0


@dataclass
class Outcome:
    """One run: compute/epochs at reaching (None if not reached) and the pick's regret over
    compute (points, after every trial that finished all E epochs)."""

    reached_compute: float | None = None
    reached_epochs: float | None = None
    timeline: list[tuple[float, float]] = field(default_factory=list)  # (train_macs, regret)
    trials: int = 0
    full_trials: int = 0


class Tracker:
    """The user's pick (best observed final top-1 among full trials) and the reach test."""

    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        self.best_observed = -math.inf
        self.pick_truth = 0.0
        self.outcome = Outcome()

    def finished(self, trial: Trial, compute: float, epochs: float) -> bool:
        """Record a trial that trained all E epochs; True once the target is reached."""
        self.outcome.full_trials += 1
        if trial.curve[-1] > self.best_observed:
            self.best_observed = trial.curve[-1]
            self.pick_truth = self.problem.truth(trial.arch)
        regret = 100.0 * (self.problem.target - self.pick_truth)
        self.outcome.timeline.append((compute, regret))
        if self.pick_truth >= self.problem.target - TOLERANCE:
            self.outcome.reached_compute, self.outcome.reached_epochs = compute, epochs
            return True
        return False


# -- schedulers for the event simulation ----------------------------------------------------


class Scheduler(Protocol):
    def next_segment(self) -> tuple[Trial, int] | None: ...

    def finished_segment(self, trial: Trial, to_epoch: int) -> None: ...


class _NewTrials:
    """Builds trials from a strategy's proposals (shared by both schedulers)."""

    def __init__(self, problem: Problem, strategy_name: str, seed: int) -> None:
        from vitcube.search import make_strategy

        self.problem = problem
        self.seed = seed
        self.strategy = make_strategy(
            strategy_name, base=problem.base, max_macs=problem.max_macs, seed=seed
        )
        self.trials: list[Trial] = []

    def propose(self, observations: list[Any], pending: list[dict[str, float]]) -> Trial | None:
        picks = self.strategy.suggest(observations, pending, 1)
        if not picks:
            return None  # the lattice is exhausted
        arch = self.problem.arch(picks[0])
        trial = Trial(
            id=len(self.trials),
            requested=dict(picks[0]),
            arch=arch,
            macs=count_macs(arch),
            effective=arch.effective_factors(),
            curve=self.problem.curve(arch, self.seed),
        )
        self.trials.append(trial)
        return trial


def _observation(trial: Trial, top1: float) -> Any:
    from vitcube.search import Observation

    return Observation(factors=trial.effective, top1=top1, macs=trial.macs)


class FullScheduler:
    """Every trial trains all E epochs; the strategy sees the finished ones."""

    def __init__(self, problem: Problem, strategy_name: str, seed: int) -> None:
        self.new = _NewTrials(problem, strategy_name, seed)
        self.epochs = problem.epochs
        self.observations: list[Any] = []
        self.running: dict[int, Trial] = {}

    def next_segment(self) -> tuple[Trial, int] | None:
        pending = [t.requested for t in self.running.values()]
        trial = self.new.propose(self.observations, pending)
        if trial is None:
            return None
        self.running[trial.id] = trial
        return trial, self.epochs

    def finished_segment(self, trial: Trial, to_epoch: int) -> None:
        del self.running[trial.id]
        self.observations.append(_observation(trial, trial.curve[-1]))


class AshaScheduler:
    """The service's ASHA rule: promote first, else a new configuration at rung 0."""

    def __init__(
        self, problem: Problem, strategy_name: str, seed: int, *, brackets: int | None = None
    ) -> None:
        self.new = _NewTrials(problem, strategy_name, seed)
        schedule = default_schedule(problem.epochs)
        self.eta = int(getattr(schedule, "eta", 3))
        # The default schedule's brackets (the service's default), or the number given.
        self.brackets = int(getattr(schedule, "brackets", 1)) if brackets is None else brackets
        self.rungs = rung_epochs(schedule, problem.epochs)
        self.started = [0] * len(self.rungs)  # configurations by start rung
        self.results: list[dict[int, float]] = [{} for _ in self.rungs]  # first seen first
        self.paused: list[list[int]] = [[] for _ in self.rungs]

    def next_segment(self) -> tuple[Trial, int] | None:
        for k in range(len(self.rungs) - 2, -1, -1):
            chosen = promotable(self.results[k], self.paused[k], self.eta)
            if chosen:
                self.paused[k].remove(chosen[0])
                return self.new.trials[chosen[0]], self.rungs[k + 1]
        k = model_rung([len(r) for r in self.results], min_points=MIN_POINTS)
        trials = self.new.trials
        observations = [_observation(trials[i], top1) for i, top1 in self.results[k].items()]
        pending = [t.requested for t in trials if t.id not in self.results[k]]
        trial = self.new.propose(observations, pending)
        if trial is None:
            return None
        start = start_rung(self.started, eta=self.eta, brackets=self.brackets)
        self.started[start] += 1
        return trial, self.rungs[start]

    def finished_segment(self, trial: Trial, to_epoch: int) -> None:
        k = self.rungs.index(to_epoch)
        self.results[k][trial.id] = trial.curve[to_epoch - 1]
        if k < len(self.rungs) - 1:
            self.paused[k].append(trial.id)


def simulate(problem: Problem, scheduler: Scheduler, *, parallelism: int, cap: float) -> Outcome:
    """Run P asynchronous workers until the target is reached or `cap` train_macs are spent."""
    tracker = Tracker(problem)
    images = TRAIN_IMAGES
    now = 0.0
    done_compute = done_epochs = 0.0
    running: list[tuple[float, int, Trial, int, float]] = []  # (end, n, trial, to, start)
    count = 0
    trials_seen: set[int] = set()

    def spent(at: float) -> tuple[float, float]:
        compute, epochs = done_compute, done_epochs
        for _, _, t, _, start in running:
            compute += at - start
            epochs += (at - start) / (t.macs * images)
        return compute, epochs

    while True:
        while len(running) < parallelism and spent(now)[0] < cap:
            segment = scheduler.next_segment()
            if segment is None:
                break
            trial, to_epoch = segment
            trials_seen.add(trial.id)
            length = (to_epoch - trial.epochs_done) * trial.macs * images
            heapq.heappush(running, (now + length, count, trial, to_epoch, now))
            count += 1
        if not running:
            break
        end, _, trial, to_epoch, start = heapq.heappop(running)
        now = end
        done_compute += end - start
        done_epochs += to_epoch - trial.epochs_done
        trial.epochs_done = to_epoch
        scheduler.finished_segment(trial, to_epoch)
        compute, epochs = spent(now)
        if compute > cap:
            break  # finished after the cap: not counted
        if to_epoch == problem.epochs and tracker.finished(trial, compute, epochs):
            break
    tracker.outcome.trials = len(trials_seen)
    return tracker.outcome


# -- Optuna: TPE + Hyperband, sequential -----------------------------------------------------


def run_optuna(problem: Problem, seed: int, *, min_epochs: int, cap: float) -> Outcome:
    import optuna

    from vitcube.search.space import feasible_mask

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.HyperbandPruner(
            min_resource=min_epochs, max_resource=problem.epochs, reduction_factor=3
        ),
    )
    space = problem.space
    tracker = Tracker(problem)
    compute = epochs = 0.0
    trials = 0
    while compute < cap:
        trial = study.ask()
        raw = np.array([[trial.suggest_float(f, *space.bounds[f]) for f in FACTORS]])
        levels = space.snap(raw)
        if feasible_mask(space.macs_of_rows(levels), max_macs=problem.max_macs)[0]:
            row = space.candidates(levels).requested[0]
        else:
            row = space.project(space.to_unit(raw), max_macs=problem.max_macs).requested[0]
        arch = problem.arch(_as_dict(row))
        macs = count_macs(arch)
        curve = problem.curve(arch, seed)
        trials += 1
        pruned = False
        for epoch in range(1, problem.epochs + 1):
            compute += macs * TRAIN_IMAGES
            epochs += 1
            if compute > cap:
                break
            trial.report(curve[epoch - 1], epoch)
            if epoch < problem.epochs and trial.should_prune():
                pruned = True
                break
        if compute > cap:
            break
        if pruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            continue
        study.tell(trial, curve[-1])
        done = Trial(
            trials, _as_dict(row), arch, macs, arch.effective_factors(), curve, problem.epochs
        )
        if tracker.finished(done, compute, epochs):
            break
    tracker.outcome.trials = trials
    return tracker.outcome


# -- driver -----------------------------------------------------------------------------------

_PROBLEMS: dict[str, Problem] = {}


def _problem(landscape: str, epochs: int) -> Problem:
    if landscape not in _PROBLEMS:
        _PROBLEMS[landscape] = Problem(landscape, epochs)
    return _PROBLEMS[landscape]


def _run_task(task: tuple[str, str, int, int, int, float]) -> tuple[str, str, int, Outcome, float]:
    landscape, method, seed, epochs, parallelism, cap_units = task
    torch.set_num_threads(1)
    from vitcube.search import strategies

    # A fresh run whatever ran before in this process: no GP warm start carried over, and
    # torch's global RNG (botorch's fallback restarts of a failed GP fit draw from it) reset.
    strategies._WARM_STARTS.clear()
    torch.manual_seed(seed)
    problem = _problem(landscape, epochs)
    cap = cap_units * problem.unit
    start = time.perf_counter()
    if method == "optuna-tpe-hb":
        schedule = default_schedule(epochs)
        min_epochs = int(getattr(schedule, "min_epochs", epochs))
        outcome = run_optuna(problem, seed, min_epochs=min_epochs, cap=cap)
    else:
        strategy, kind = method.split("+") if "+" in method else method.split("-")
        scheduler: Scheduler
        if kind == "asha1":  # the ablation: plain ASHA, one bracket
            scheduler = AshaScheduler(problem, strategy, seed, brackets=1)
        elif kind == "asha":
            scheduler = AshaScheduler(problem, strategy, seed)
        else:
            scheduler = FullScheduler(problem, strategy, seed)
        outcome = simulate(problem, scheduler, parallelism=parallelism, cap=cap)
    return landscape, method, seed, outcome, time.perf_counter() - start


def _median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else math.inf


def _fmt(value: float, spec: str) -> str:
    return "not reached" if math.isinf(value) else format(value, spec)


def _regret_at(outcome: Outcome, budget: float) -> float:
    regret = math.inf  # no pick yet
    for compute, value in outcome.timeline:
        if compute > budget:
            break
        regret = value
    return regret


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 seeds, cap 8 full trainings")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per method (default 5)")
    parser.add_argument("--epochs", type=int, default=81, help="training.epochs E (default 81)")
    parser.add_argument("--parallelism", type=int, default=4, help="workers (default 4)")
    parser.add_argument(
        "--cap", type=float, default=None, help="compute cap in full trainings (default 40)"
    )
    parser.add_argument("--landscapes", default=",".join(LANDSCAPES))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--json", type=Path, default=None, help="write every number here")
    args = parser.parse_args()
    seeds = args.seeds or (2 if args.quick else 5)
    cap_units = args.cap or (8.0 if args.quick else 40.0)
    landscapes = args.landscapes.split(",")
    methods = args.methods.split(",")
    rungs = rung_epochs(default_schedule(args.epochs), args.epochs)
    print(
        f"# bench_multi_fidelity: {seeds} seeds, E = {args.epochs} (rungs {list(rungs)}), "
        f"P = {args.parallelism}, cap {cap_units:g} full, {args.jobs} jobs on "
        f"{os.cpu_count()} CPUs",
        flush=True,
    )
    for landscape in landscapes:
        _problem(landscape, args.epochs)  # enumerate before forking
    tasks = [
        (landscape, method, seed, args.epochs, args.parallelism, cap_units)
        for landscape in landscapes
        for method in methods
        for seed in range(seeds)
    ]
    tasks.sort(key=lambda t: (t[1] != "gp+asha", t[1] != "gp-full"))  # slow ones first
    outcomes: dict[tuple[str, str], list[Outcome]] = {}
    took: dict[tuple[str, str], list[float]] = {}
    wall = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(args.jobs) as pool:
        for landscape, method, seed, outcome, elapsed in pool.imap_unordered(_run_task, tasks):
            outcomes.setdefault((landscape, method), []).append(outcome)
            took.setdefault((landscape, method), []).append(elapsed)
            reached = (
                f"{outcome.reached_compute / _PROBLEMS[landscape].unit:5.2f} full"
                if outcome.reached_compute is not None
                else "not reached"
            )
            print(
                f"  {landscape:8s} {method:13s} seed {seed}: {reached:>11s}, "
                f"{outcome.trials} trials, {elapsed:6.1f} s",
                flush=True,
            )
    wall = time.perf_counter() - wall
    report: dict[str, Any] = {"seeds": seeds, "epochs": args.epochs, "cap_full": cap_units}
    report |= {"parallelism": args.parallelism, "train_images": TRAIN_IMAGES, "landscapes": {}}
    for landscape in landscapes:
        problem = _PROBLEMS[landscape]
        print(
            f"\n## {landscape}: target top-1 {100 * problem.target:.2f} % (best of "
            f"{problem.lattice} networks under 0.5 x m0), 1 full = {problem.unit:.3e} train_macs"
        )
        header = (
            f"{'method':13s} {'median full':>12s} {'median train_macs':>18s} "
            f"{'median epochs':>14s} {'reached':>8s} {'trials':>7s} {'s/run':>6s}"
        )
        print(header)
        print("-" * len(header))
        medians: dict[str, float] = {}
        entry: dict[str, Any] = {"target": problem.target, "unit_train_macs": problem.unit}
        for method in methods:
            runs = outcomes[landscape, method]
            compute = [
                o.reached_compute / problem.unit if o.reached_compute is not None else math.inf
                for o in runs
            ]
            epochs = [o.reached_epochs if o.reached_epochs is not None else math.inf for o in runs]
            medians[method] = _median(compute)
            n_reached = sum(o.reached_compute is not None for o in runs)
            trials = _median([float(o.trials) for o in runs])
            print(
                f"{method:13s} {_fmt(medians[method], '12.2f'):>12s} "
                f"{_fmt(medians[method] * problem.unit, '18.3e'):>18s} "
                f"{_fmt(_median(epochs), '14.0f'):>14s} {f'{n_reached}/{len(runs)}':>8s} "
                f"{trials:7.0f} {statistics.mean(took[landscape, method]):6.1f}"
            )
            entry[method] = {
                "compute_full": [None if math.isinf(c) else c for c in compute],
                "epochs": [None if math.isinf(e) else e for e in epochs],
                "trials": [o.trials for o in runs],
                "timeline": [o.timeline for o in runs],
                "seconds": took[landscape, method],
            }
        ours = medians.get("gp+asha", math.inf)
        ratios = []
        for peer in ("gp-full", "random-full", "optuna-tpe-hb", "random+asha", "gp+asha1"):
            if peer not in medians or math.isinf(ours):
                continue
            value = medians[peer] / ours
            text = f"> {cap_units / ours:.1f}x" if math.isinf(value) else f"{value:.2f}x"
            ratios.append(f"{peer}/gp+asha {text}")
        print("ratios of median compute to reach: " + (", ".join(ratios) or "n/a"))
        print("anytime: median regret (points) of the pick after B full trainings of compute")
        cells = " ".join(f"{'B=' + str(b):>7s}" for b in ANYTIME_UNITS)
        print(f"{'method':13s} {cells}")
        entry["anytime"] = {}
        for method in methods:
            runs = outcomes[landscape, method]
            row = [_median([_regret_at(o, b * problem.unit) for o in runs]) for b in ANYTIME_UNITS]
            entry["anytime"][method] = [None if math.isinf(v) else v for v in row]
            text = " ".join(f"{'–' if math.isinf(v) else f'{v:.2f}':>7s}" for v in row)
            print(f"{method:13s} {text}")
        report["landscapes"][landscape] = entry
    print(f"\nwall time {wall:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
