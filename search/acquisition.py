"""The core Bayesian-optimisation step: fit, build an acquisition, pick a batch from a set.

Problem-agnostic on purpose: it sees unit-cube points and outcome columns, not networks, so
the same code proposes MobileViT variants (``strategies.GPStrategy``) and points of BoTorch's
test problems (``benchmarks/bench_search_quality.py``).

- One objective: ``qLogNoisyExpectedImprovement`` (incumbent = best posterior mean among
  the admissible observations; black-box constraints as sigmoid-weighted feasibility).
- Two or more objectives: ``qLogNoisyExpectedHypervolumeImprovement``. Objectives that are
  known exactly (MACs) are not modelled: an ``MCMultiOutputObjective`` appends them to every
  posterior sample from a deterministic function of ``X``, so they carry no noise and no
  model error.
- The batch is optimised over a finite set of admissible choices by sequential greedy
  selection; every chosen point joins ``X_pending``, so the next one is picked against a
  fantasy of the earlier ones (the batch is diverse and never repeats a choice).
- On a plain continuous box (:func:`propose_in_box`, the benchmarks' test problems) the
  acquisition is optimised continuously (``optimize_acqf``, restarts seeded from the best
  points of a Sobol + local pool), with the same sequential-greedy fantasies.

Imports torch and botorch; never ax or models.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import torch
from botorch.acquisition.acquisition import AcquisitionFunction
from botorch.acquisition.logei import qLogNoisyExpectedImprovement
from botorch.acquisition.multi_objective.logei import qLogNoisyExpectedHypervolumeImprovement
from botorch.acquisition.multi_objective.objective import GenericMCMultiOutputObjective
from botorch.acquisition.objective import GenericMCObjective
from botorch.models import SingleTaskGP
from botorch.sampling.normal import SobolQMCNormalSampler
from linear_operator.utils.warnings import NumericalWarning
from torch import Tensor

from vitcube.search.gp import DTYPE, as_tensor, fit_gp, hyperparameters, torch_threads

MC_SAMPLES = 128
# Hypervolume acquisitions cost a box decomposition per sample: fewer samples.
MC_SAMPLES_HV = 64
EVAL_CHUNK = 512
# Picks after the first of a batch are taken from this many best first-pass choices.
SHORTLIST = 512
# With several objectives, the hypervolume acquisition is evaluated on this many choices
# picked by optimistic non-dominated rank (it costs a box decomposition per MC sample).
PRESCREEN = 192
# Local candidates are drawn around at most this many best/Pareto observations.
LOCAL_CENTRES = 16

KnownObjectives = Callable[[Tensor], Tensor]


def propose_from_choices(
    train_X: Tensor,
    train_Y: Tensor,
    choices: Tensor,
    q: int,
    *,
    num_objectives: int = 1,
    X_pending: Tensor | None = None,
    known_objectives: KnownObjectives | None = None,
    ref_point: Sequence[float] | None = None,
    baseline_mask: Tensor | None = None,
    bounds: Tensor | None = None,
    seed: int = 0,
    hyperparameter_cache: dict[str, Tensor] | None = None,
) -> list[int]:
    """Pick ``q`` rows of ``choices`` by sequential greedy acquisition maximisation.

    Args:
        train_X: ``n x d`` observed inputs.
        train_Y: ``n x (m + c)`` observed outcomes: ``m = num_objectives`` modelled
            objectives (maximised) then ``c`` black-box constraints (feasible when <= 0).
        choices: ``k x d`` admissible candidates (already filtered for known constraints
            and for points already observed or pending).
        q: batch size; fewer indices come back if ``k < q``.
        X_pending: ``p x d`` points under evaluation (fantasised).
        known_objectives: maps ``... x d`` inputs to ``... x j`` exactly known objectives
            (maximised), appended after the modelled ones.
        ref_point: ``m + j`` reference point; required when ``m + j >= 2``.
        baseline_mask: ``n`` booleans, the observations that may serve as incumbents
            (e.g. those within the MAC budget); all when ``None`` or none admissible.
        bounds: ``2 x d`` input bounds; the unit cube by default.
        hyperparameter_cache: a dict the caller keeps between calls of one search: its
            content warm-starts the GP fit and is replaced by the new fit's hyperparameters.

    Returns:
        Indices into ``choices``, in the order picked.
    """
    with torch_threads(1):
        return _propose(
            as_tensor(train_X),
            as_tensor(train_Y),
            as_tensor(choices),
            q,
            num_objectives=num_objectives,
            X_pending=X_pending,
            known_objectives=known_objectives,
            ref_point=ref_point,
            baseline_mask=baseline_mask,
            bounds=bounds,
            seed=seed,
            hyperparameter_cache=hyperparameter_cache,
        )


def _propose(
    train_X: Tensor,
    train_Y: Tensor,
    choices: Tensor,
    q: int,
    *,
    num_objectives: int,
    X_pending: Tensor | None,
    known_objectives: KnownObjectives | None,
    ref_point: Sequence[float] | None,
    baseline_mask: Tensor | None,
    bounds: Tensor | None,
    seed: int,
    hyperparameter_cache: dict[str, Tensor] | None,
) -> list[int]:
    d = train_X.shape[-1]
    q = min(q, choices.shape[0])
    if q <= 0:
        return []
    if bounds is None:
        bounds = torch.stack([torch.zeros(d, dtype=DTYPE), torch.ones(d, dtype=DTYPE)])
    model = fit_gp(train_X, train_Y, bounds=bounds, seed=seed, warm_start=hyperparameter_cache)
    if hyperparameter_cache is not None:
        hyperparameter_cache.clear()
        hyperparameter_cache.update(hyperparameters(model))
    baseline = train_X
    if baseline_mask is not None and bool(baseline_mask.any()):
        baseline = train_X[baseline_mask]
    acq = _acquisition(
        model,
        baseline,
        num_objectives=num_objectives,
        num_constraints=train_Y.shape[-1] - num_objectives,
        known_objectives=known_objectives,
        ref_point=ref_point,
        seed=seed,
    )
    if acq_is_multi_objective(num_objectives, known_objectives) and len(choices) > PRESCREEN:
        keep = _prescreen(model, choices, num_objectives, known_objectives, PRESCREEN)
        # Map picks back to the caller's indices at the end.
        original = keep
        choices = choices[keep]
    else:
        original = None
    pending = as_tensor(X_pending) if X_pending is not None else torch.empty(0, d, dtype=DTYPE)
    chosen: list[int] = []
    candidates = torch.arange(choices.shape[0])
    for step in range(q):
        stacked = torch.cat([pending, choices[chosen]]) if (chosen or len(pending)) else None
        acq.set_X_pending(stacked)
        values = _evaluate(acq, choices[candidates])
        if step == 0 and len(candidates) > SHORTLIST:
            # Later picks only re-rank the best first-pass choices: fantasies lower values
            # near earlier picks, they do not raise values elsewhere.
            keep = torch.topk(values, SHORTLIST).indices
            candidates, values = candidates[keep], values[keep]
        taken = torch.tensor([int(c) in chosen for c in candidates], dtype=torch.bool)
        values[taken] = -torch.inf
        chosen.append(int(candidates[int(torch.argmax(values))]))
    if original is not None:
        return [int(original[i]) for i in chosen]
    return chosen


def acq_is_multi_objective(num_objectives: int, known: KnownObjectives | None) -> bool:
    return num_objectives + (0 if known is None else 1) >= 2


def _prescreen(
    model: SingleTaskGP,
    choices: Tensor,
    num_objectives: int,
    known: KnownObjectives | None,
    size: int,
) -> Tensor:
    """Indices of about ``size`` choices worth an exact hypervolume evaluation.

    Fronts of (upper confidence bound of each modelled objective, known objectives) are
    peeled until ``size`` choices are collected: a choice dominated by many others even
    optimistically has next to no expected hypervolume improvement.
    """
    from botorch.utils.multi_objective.pareto import is_non_dominated

    with torch.no_grad():
        post = model.posterior(choices.unsqueeze(-2))  # k one-point batches: no k x k matrix
        mean = post.mean.squeeze(-2)[..., :num_objectives]
        std = post.variance.clamp_min(0).sqrt().squeeze(-2)[..., :num_objectives]
    optimistic = mean + 2.0 * std
    if known is not None:
        optimistic = torch.cat([optimistic, known(choices).to(optimistic)], dim=-1)
    remaining = torch.arange(len(choices))
    kept: list[Tensor] = []
    count = 0
    while count < size and len(remaining):
        front = is_non_dominated(optimistic[remaining], deduplicate=False)
        kept.append(remaining[front])
        count += int(front.sum())
        remaining = remaining[~front]
    return torch.cat(kept)


def _evaluate(acq: AcquisitionFunction, choices: Tensor) -> Tensor:
    with torch.no_grad(), warnings.catch_warnings():
        # Jitter notices from near-duplicate fantasies are expected and harmless here.
        warnings.simplefilter("ignore", NumericalWarning)
        return torch.cat(
            [
                acq(choices[start : start + EVAL_CHUNK].unsqueeze(-2))
                for start in range(0, choices.shape[0], EVAL_CHUNK)
            ]
        )


def _column(j: int) -> Callable[[Tensor], Tensor]:
    def column(Z: Tensor) -> Tensor:
        return Z[..., j]

    return column


def _first(Z: Tensor, X: Tensor | None = None) -> Tensor:
    return Z[..., 0]


def _acquisition(
    model: torch.nn.Module,
    baseline: Tensor,
    *,
    num_objectives: int,
    num_constraints: int,
    known_objectives: KnownObjectives | None,
    ref_point: Sequence[float] | None,
    seed: int,
) -> AcquisitionFunction:
    sampler = SobolQMCNormalSampler(sample_shape=torch.Size([MC_SAMPLES]), seed=seed)
    m = num_objectives
    constraints = [_column(m + i) for i in range(num_constraints)]
    total = m + (0 if known_objectives is None else 1)
    if total == 1:
        return qLogNoisyExpectedImprovement(
            model=model,  # type: ignore[arg-type]
            X_baseline=baseline,
            sampler=sampler,
            objective=GenericMCObjective(_first),
            constraints=constraints or None,
            prune_baseline=True,
        )
    if ref_point is None:
        raise ValueError("ref_point is required with two or more objectives")

    def objectives(Z: Tensor, X: Tensor | None = None) -> Tensor:
        modelled = Z[..., :m]
        if known_objectives is None:
            return modelled
        if X is None:
            raise ValueError("known objectives need the inputs X")
        known = known_objectives(X).to(modelled)
        # Posterior samples carry a leading sample dimension that X lacks.
        return torch.cat([modelled, known.expand(*modelled.shape[:-1], known.shape[-1])], -1)

    return qLogNoisyExpectedHypervolumeImprovement(
        model=model,  # type: ignore[arg-type]
        ref_point=torch.as_tensor(list(ref_point), dtype=DTYPE),
        X_baseline=baseline,
        sampler=SobolQMCNormalSampler(sample_shape=torch.Size([MC_SAMPLES_HV]), seed=seed),
        objective=GenericMCMultiOutputObjective(objectives),
        constraints=constraints or None,
        prune_baseline=True,
    )


# The box path's initial design: Sobol points until this many observations per input
# dimension exist (Ax's default is 2 · d too). Chosen by measurement, see benchmarks/README.md.
BOX_INIT_PER_DIM = 2
# Continuous acquisition optimisation in the box path: L-BFGS-B restarts from the best
# pool points, at most this many iterations each.
NUM_RESTARTS = 8
MAXITER = 100


def box_initial_design_size(d: int) -> int:
    """Observations needed before :func:`propose_in_box` is used (Sobol points before)."""
    return BOX_INIT_PER_DIM * d


def box_initial_design(d: int, *, seed: int = 0) -> Tensor:
    """The ``box_initial_design_size(d)`` points that start a box search, in order.

    The centre of the cube, then scrambled Sobol points — Ax's default generation strategy
    does the same (a centre trial, then Sobol), so the comparison differs only in the BO.
    """
    from torch.quasirandom import SobolEngine

    n = box_initial_design_size(d)
    centre = torch.full((1, d), 0.5, dtype=DTYPE)
    return torch.cat([centre, SobolEngine(d, scramble=True, seed=seed).draw(n - 1).to(DTYPE)])


def propose_in_box(
    train_X: Tensor,
    train_Y: Tensor,
    q: int,
    *,
    num_objectives: int = 1,
    X_pending: Tensor | None = None,
    ref_point: Sequence[float] | None = None,
    seed: int = 0,
    pool_size: int = 2048,
    local_size: int = 512,
    num_restarts: int = NUM_RESTARTS,
) -> Tensor:
    """The ``gp`` strategy on a plain unit-cube problem (benchmarks use it on test problems).

    The same model and acquisition as :func:`propose_from_choices`, optimised continuously:
    the raw candidates are a scrambled Sobol pool plus Gaussian perturbations (σ = 0.03 and
    0.1) of the best observations (the Pareto set of feasible points with several
    objectives); the ``num_restarts`` best of them by acquisition value start L-BFGS-B
    (BoTorch's ``optimize_acqf`` with q = 1). The batch is built by sequential greedy
    selection: each chosen point joins ``X_pending``, so the next one is optimised against a
    fantasy of the earlier ones. A point that would repeat an observed, pending or chosen
    one is replaced by the best raw candidate that does not.

    Args:
        train_X: ``n x d`` observed points in ``[0, 1]^d``.
        train_Y: ``n x (m + c)`` outcomes as in :func:`propose_from_choices`.

    Returns:
        A ``q x d`` tensor of new points.
    """
    with torch_threads(1):
        return _propose_in_box(
            as_tensor(train_X),
            as_tensor(train_Y),
            q,
            num_objectives=num_objectives,
            X_pending=None if X_pending is None else as_tensor(X_pending),
            ref_point=ref_point,
            seed=seed,
            pool_size=pool_size,
            local_size=local_size,
            num_restarts=num_restarts,
        )


def _propose_in_box(
    train_X: Tensor,
    train_Y: Tensor,
    q: int,
    *,
    num_objectives: int,
    X_pending: Tensor | None,
    ref_point: Sequence[float] | None,
    seed: int,
    pool_size: int,
    local_size: int,
    num_restarts: int,
) -> Tensor:
    from botorch.optim import optimize_acqf
    from botorch.utils.multi_objective.pareto import is_non_dominated
    from torch.quasirandom import SobolEngine

    d = train_X.shape[-1]
    if q <= 0:
        return torch.empty(0, d, dtype=DTYPE)
    bounds = torch.stack([torch.zeros(d, dtype=DTYPE), torch.ones(d, dtype=DTYPE)])
    pool = SobolEngine(d, scramble=True, seed=seed).draw(pool_size).to(DTYPE)
    objectives = train_Y[:, :num_objectives]
    feasible = (train_Y[:, num_objectives:] <= 0).all(dim=-1)
    generator = torch.Generator().manual_seed(seed + len(train_X))
    if feasible.any():
        front = is_non_dominated(objectives[feasible]) if num_objectives > 1 else None
        best = (
            train_X[feasible][front]
            if front is not None
            else train_X[feasible][objectives[feasible, 0].argmax()].unsqueeze(0)
        )
        best = best[:LOCAL_CENTRES]
        per = local_size // (2 * len(best)) + 1
        local = torch.cat(
            [
                centre + sigma * torch.randn(per, d, generator=generator, dtype=DTYPE)
                for centre in best
                for sigma in (0.03, 0.1)
            ]
        ).clamp(0.0, 1.0)
        pool = torch.cat([pool, local])
    pending = X_pending if X_pending is not None else torch.empty(0, d, dtype=DTYPE)
    model = fit_gp(train_X, train_Y, bounds=bounds, seed=seed + len(train_X))
    acq = _acquisition(
        model,
        train_X,
        num_objectives=num_objectives,
        num_constraints=train_Y.shape[-1] - num_objectives,
        known_objectives=None,
        ref_point=ref_point,
        seed=seed + len(train_X),
    )
    if acq_is_multi_objective(num_objectives, None) and len(pool) > PRESCREEN:
        pool = pool[_prescreen(model, pool, num_objectives, None, PRESCREEN)]
    chosen: list[Tensor] = []
    for _ in range(q):
        taken = torch.cat([train_X, pending, *[c.unsqueeze(0) for c in chosen]])
        acq.set_X_pending(taken[len(train_X) :] if len(taken) > len(train_X) else None)
        raw = pool[torch.cdist(pool, taken).min(dim=-1).values > 1e-6]
        if len(raw) == 0:
            break
        values = _evaluate(acq, raw)
        order = torch.argsort(values, descending=True)
        starts = raw[order[:num_restarts]].unsqueeze(-2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            candidate, _ = optimize_acqf(
                acq,
                bounds=bounds,
                q=1,
                num_restarts=len(starts),
                batch_initial_conditions=starts,
                options={"maxiter": MAXITER, "batch_limit": num_restarts},
                retry_on_optimization_warning=False,
            )
        point = candidate.detach().reshape(d).clamp(0.0, 1.0)
        if float(torch.cdist(point.unsqueeze(0), taken).min()) <= 1e-6:
            point = raw[order[0]]
        chosen.append(point)
    return torch.stack(chosen) if chosen else torch.empty(0, d, dtype=DTYPE)
