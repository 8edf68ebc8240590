"""The ``ax`` strategy: the same search through Ax's ``Client`` (ax-platform >= 1.0).

Stateless like every strategy: each call builds a fresh ``Client`` seeded with the search's
seed, attaches the observations (effective factors, clipped to the bounds) as completed
trials and the pending requests as running ones, and asks for ``n`` trials from Ax's default
generation strategy (Sobol, then BoTorch modular BO). Ax models MACs as an ordinary metric
(``macs_ratio = MACs / max_macs``, constrained to ``<= 1``; minimised too for ``pareto``),
so its proposals can overshoot: each one is rounded to the lattice and, when over budget,
moved along the ray from the space's lower corner onto the budget; duplicates are replaced
from the Sobol sequence. Imported lazily by ``make_strategy("ax")`` only.

Imports ax, numpy and search.space/strategies.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
from ax import Client, RangeParameterConfig

from vitcube.search.gp import torch_threads
from vitcube.search.space import FACTORS, Candidates, feasible_mask, identity
from vitcube.search.strategies import Observation, SobolStrategy, _empty


class AxStrategy(SobolStrategy):
    name = "ax"

    def _propose(
        self,
        observations: list[Observation],
        pending: list[Mapping[str, float]],
        n: int,
        seen: set[tuple[float, ...]],
    ) -> Candidates:
        with torch_threads(1):  # as for our own GP: small matrices, shared cores
            client = self._client(observations, pending)
            proposals = list(client.get_next_trials(max_trials=n).values())
        space = self.space
        taken = set(seen)
        rows: list[Candidates] = []
        if proposals:
            raw = np.array([[float(p[f]) for f in FACTORS] for p in proposals])
            levels = space.snap(raw)
            macs = space.macs_of_rows(levels)
            ok = feasible_mask(macs, max_macs=self.max_macs, min_macs=self.min_macs)
            fixed = [space.candidates(levels[ok])] if ok.any() else []
            if (~ok).any():
                # Over (or under) the budget: the ray from the lower corner through the
                # proposal, cut at the budget.
                fixed.append(
                    space.project(
                        space.to_unit(raw[~ok]), max_macs=self.max_macs, min_macs=self.min_macs
                    )
                )
            for cands in fixed:
                for i in range(len(cands)):
                    key = identity(cands.effective[i])
                    if key not in taken:
                        taken.add(key)
                        rows.append(cands.take(np.array([i])))
        found = Candidates.concat(rows) if rows else _empty()
        if len(found) < n:
            more = self._sobol(len(observations) + len(pending), n - len(found), taken)
            found = Candidates.concat([found, more])
        return found

    def _client(
        self, observations: list[Observation], pending: list[Mapping[str, float]]
    ) -> Client:
        for name in ("ax", "ax.api.client", "ax.service", "ax.generation_strategy"):
            logging.getLogger(name).setLevel(logging.WARNING)
        client = Client(random_seed=self.seed)
        client.configure_experiment(
            parameters=[
                RangeParameterConfig(
                    name=f,
                    parameter_type="float",
                    bounds=(self.space.bounds[f][0], self.space.bounds[f][1]),
                )
                for f in FACTORS
            ]
        )
        if self.objective == "pareto":
            client.configure_optimization(
                objective="top1, -macs_ratio", outcome_constraints=["macs_ratio <= 1.0"]
            )
        else:
            client.configure_optimization(
                objective="top1", outcome_constraints=["macs_ratio <= 1.0"]
            )
        lower, upper = self.space.lower, self.space.upper
        for obs in observations:
            params = {
                f: float(np.clip(obs.factors[f], lower[j], upper[j])) for j, f in enumerate(FACTORS)
            }
            index = client.attach_trial(parameters=params)
            client.complete_trial(
                index,
                raw_data={"top1": float(obs.top1), "macs_ratio": obs.macs / self.max_macs},
            )
        for p in pending:
            params = {f: float(np.clip(p[f], lower[j], upper[j])) for j, f in enumerate(FACTORS)}
            client.attach_trial(parameters=params)
        return client
