"""The box path of the gp strategy: continuous acquisition optimisation on a unit cube."""

from __future__ import annotations

import torch

from vitcube.search.acquisition import box_initial_design, box_initial_design_size, propose_in_box

OPTIMUM = torch.tensor([0.37, 0.81, 0.23], dtype=torch.double)


def _sphere(X: torch.Tensor) -> torch.Tensor:
    return -((X - OPTIMUM) ** 2).sum(dim=-1, keepdim=True)


def _min_distance(A: torch.Tensor, B: torch.Tensor) -> float:
    return float(torch.cdist(A, B).min())


def test_batch_is_new_distinct_and_in_the_cube() -> None:
    X = torch.quasirandom.SobolEngine(3, scramble=True, seed=1).draw(8).double()
    pending = torch.tensor([[0.4, 0.8, 0.2]], dtype=torch.double)
    batch = propose_in_box(X, _sphere(X), 4, X_pending=pending, seed=0)
    assert batch.shape == (4, 3)
    assert bool(((batch >= 0) & (batch <= 1)).all())
    assert _min_distance(batch, torch.cat([X, pending])) > 1e-6
    assert float(torch.pdist(batch).min()) > 1e-3  # fantasies spread the batch


def test_continuous_optimisation_closes_in_on_a_smooth_optimum() -> None:
    """A point pool alone stops at its spacing (~0.08 here); the optimiser goes below it."""
    d = 3
    X = (
        torch.quasirandom.SobolEngine(d, scramble=True, seed=2)
        .draw(box_initial_design_size(d))
        .double()
    )
    for step in range(4):
        batch = propose_in_box(X, _sphere(X), 4, seed=step, pool_size=256, local_size=0)
        X = torch.cat([X, batch])
    regret = -float(_sphere(X).max())
    assert regret < 1e-4, regret


def test_two_objectives_with_a_constraint() -> None:
    X = torch.quasirandom.SobolEngine(2, scramble=True, seed=3).draw(8).double()
    f1 = -(X**2).sum(-1)
    f2 = -((X - 1) ** 2).sum(-1)
    slack = X.sum(-1) - 1.5  # feasible when x0 + x1 <= 1.5 (constraint <= 0)
    Y = torch.stack([f1, f2, slack], dim=-1)
    batch = propose_in_box(X, Y, 4, num_objectives=2, ref_point=[-2.0, -2.0], seed=0)
    assert batch.shape == (4, 2)
    assert _min_distance(batch, X) > 1e-6
    assert float(torch.pdist(batch).min()) > 1e-3


def test_initial_design_starts_at_the_centre_then_fills_the_cube() -> None:
    design = box_initial_design(4, seed=0)
    assert design.shape == (box_initial_design_size(4), 4) == (8, 4)
    assert torch.equal(design[0], torch.full((4,), 0.5, dtype=torch.double))
    assert bool(((design >= 0) & (design <= 1)).all())
    assert float(torch.pdist(design).min()) > 0.1
