"""Gaussian-process fits and batched posterior grids.

One model family everywhere: BoTorch's ``SingleTaskGP`` with a scaled Matérn-5/2 ARD kernel
(Gamma lengthscale/outputscale priors), inputs normalised to the unit cube by fixed bounds,
outcomes standardised, hyperparameters fitted by maximising the marginal likelihood
(``fit_gpytorch_mll``). Past :data:`MAX_FIT_POINTS` observations the hyperparameters are fitted
on a subsample (the best points plus a random rest) and the model is then conditioned on all
data with those hyperparameters, so fitting stays a few seconds while prediction is exact.

Imports torch, gpytorch and botorch; never ax or models.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from botorch.models.transforms.input import Normalize
from botorch.models.transforms.outcome import Standardize
from botorch.models.utils.gpytorch_modules import get_matern_kernel_with_gamma_prior
from gpytorch.kernels import MaternKernel, ScaleKernel
from gpytorch.mlls import ExactMarginalLogLikelihood
from torch import Tensor

DTYPE = torch.double
ArrayLike = np.ndarray | Tensor
# Hyperparameters are fitted on at most this many points (exact GP, O(n^3) per step).
MAX_FIT_POINTS = 400
# Posterior grids are evaluated in chunks of this many points.
GRID_CHUNK = 8_192
# From this many points, posterior grids take a fused fast path (see posterior_mean_std).
FAST_GRID_POINTS = 20_000
GRID_THREADS = 2


@contextmanager
def torch_threads(n: int = 1) -> Iterator[None]:
    """Run torch on ``n`` intra-op threads, then restore the caller's setting.

    Our matrices are small (n ≤ a few hundred): one thread is as fast as many on an idle box
    and dozens of times faster on a busy one, where OpenMP threads spin against each other.
    """
    before = torch.get_num_threads()
    if before != n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if before != n:
            torch.set_num_threads(before)


def as_tensor(x: ArrayLike) -> Tensor:
    return torch.as_tensor(np.asarray(x) if not isinstance(x, Tensor) else x, dtype=DTYPE)


def _make_gp(X: Tensor, Y: Tensor, bounds: Tensor) -> SingleTaskGP:
    return SingleTaskGP(
        X,
        Y,
        # With m > 1 outputs SingleTaskGP is a batch of m independent GPs: one kernel each.
        covar_module=get_matern_kernel_with_gamma_prior(
            ard_num_dims=X.shape[-1],
            batch_shape=torch.Size([Y.shape[-1]]) if Y.shape[-1] > 1 else None,
        ),
        input_transform=Normalize(d=X.shape[-1], bounds=bounds),
        outcome_transform=Standardize(m=Y.shape[-1]),
    )


def fit_gp(
    X: ArrayLike,
    Y: ArrayLike,
    *,
    bounds: ArrayLike,
    seed: int = 0,
    warm_start: dict[str, Tensor] | None = None,
) -> SingleTaskGP:
    """Fit a Matérn-5/2 ARD GP.

    Args:
        X: ``n x d`` inputs (effective factors, or unit-cube points).
        Y: ``n x m`` outcomes (``m`` independent outputs share nothing but the inputs).
        bounds: ``2 x d`` lower/upper bounds used to normalise ``X``.
        seed: seeds the subsample when ``n > MAX_FIT_POINTS``.
        warm_start: hyperparameters (:func:`hyperparameters` of an earlier fit on the same
            problem) to start the optimiser from; fitting then takes a handful of L-BFGS
            steps instead of a hundred-odd. Ignored when shapes differ.
    """
    X, Y, bounds = as_tensor(X), as_tensor(Y), as_tensor(bounds)
    if Y.dim() == 1:
        Y = Y.unsqueeze(-1)
    n = X.shape[0]
    if n > MAX_FIT_POINTS:
        # Keep the best points of every output (they shape the acquisition) and a random
        # rest; fit there, then reuse the hyperparameters on all n points.
        rng = np.random.default_rng(seed)
        best = set(torch.topk(Y, k=min(MAX_FIT_POINTS // 4, n), dim=0).indices.ravel().tolist())
        rest = [i for i in rng.permutation(n).tolist() if i not in best]
        keep = sorted(best) + rest[: max(0, MAX_FIT_POINTS - len(best))]
        idx = torch.tensor(sorted(keep))
        sub = _make_gp(X[idx], Y[idx], bounds)
        _load(sub, warm_start)
        _fit(sub)
        model = _make_gp(X, Y, bounds)
        state = {k: v for k, v in sub.state_dict().items() if "outcome_transform" not in k}
        model.load_state_dict(state, strict=False)
        model.eval()
        return model
    model = _make_gp(X, Y, bounds)
    _load(model, warm_start)
    _fit(model)
    return model


def hyperparameters(model: SingleTaskGP) -> dict[str, Tensor]:
    """The fitted hyperparameters (raw, unconstrained) of ``model``, for a warm start."""
    return {k: v.detach().clone() for k, v in model.state_dict().items() if "raw_" in k}


def rebuild_gp(
    X: ArrayLike, Y: ArrayLike, *, bounds: ArrayLike, state: dict[str, list[Any]]
) -> SingleTaskGP:
    """The GP that :func:`fit_gp` fitted on ``X``/``Y``, from its :func:`hyperparameters`
    (as lists, e.g. read back from JSON): conditioned on the data, not fitted again."""
    X, Y, bounds = as_tensor(X), as_tensor(Y), as_tensor(bounds)
    if Y.dim() == 1:
        Y = Y.unsqueeze(-1)
    model = _make_gp(X, Y, bounds)
    own = model.state_dict()
    loaded = {
        k: torch.as_tensor(v, dtype=own[k].dtype).reshape(own[k].shape) for k, v in state.items()
    }
    model.load_state_dict(loaded, strict=False)
    model.eval()
    return model


def _load(model: SingleTaskGP, state: dict[str, Tensor] | None) -> None:
    if not state:
        return
    own = model.state_dict()
    if all(k in own and own[k].shape == v.shape for k, v in state.items()):
        model.load_state_dict(state, strict=False)


def _fit(model: SingleTaskGP) -> None:
    mll = ExactMarginalLogLikelihood(model.likelihood, model)
    with warnings.catch_warnings(), torch_threads(1):
        # Optimiser chatter (e.g. "ABNORMAL_TERMINATION_IN_LNSRCH") is not actionable here;
        # fit_gpytorch_mll already retries and falls back to the prior mode.
        warnings.simplefilter("ignore")
        fit_gpytorch_mll(mll)
    model.eval()


def posterior_mean_std(
    model: SingleTaskGP, X: ArrayLike, *, chunk: int = GRID_CHUNK
) -> tuple[np.ndarray, np.ndarray]:
    """Posterior mean and standard deviation of the latent function of a one-output GP.

    Computed from one Cholesky factor of the training covariance and, per chunk of test
    points, only the cross-covariance and the kernel's diagonal: O(k·n²) time and O(chunk·n)
    memory for ``k`` test points, where gpytorch's ``posterior(X).variance`` materialises the
    ``k x k`` test covariance (20 GB for a 50,000-point chunk). Equal to it up to round-off.

    Args:
        X: ``k x d`` points in the model's original input space.

    Returns:
        Two ``k x 1`` arrays.
    """
    if model.num_outputs != 1:
        raise ValueError("posterior_mean_std takes a one-output model")
    X = as_tensor(X)
    # Large grids are big GEMMs and element-wise passes, which do use a second core; small
    # evaluations are latency-bound and stay on one thread (see torch_threads).
    threads = GRID_THREADS if X.shape[0] >= FAST_GRID_POINTS else 1
    with torch.no_grad(), torch_threads(threads):
        model.eval()
        train_X = model.train_inputs[0]  # already normalised in eval mode
        train_y = model.train_targets  # already standardised
        covar = model.covar_module
        noise = model.likelihood.noise.reshape(-1)[0]
        K = covar(train_X, train_X).to_dense()
        K = K + noise * torch.eye(K.shape[-1], dtype=K.dtype)
        L, info = torch.linalg.cholesky_ex(K)
        jitter = 1e-8
        while int(info) != 0 and jitter < 1e-2:
            L, info = torch.linalg.cholesky_ex(K + jitter * torch.eye(K.shape[-1], dtype=K.dtype))
            jitter *= 10
        constant = model.mean_module(train_X[:1]).reshape(-1)[0]
        alpha = torch.cholesky_solve((train_y - constant).unsqueeze(-1), L)
        fast = X.shape[0] >= FAST_GRID_POINTS and _is_scaled_matern52(covar)
        if fast:
            # Grids: a fused kernel (gpytorch's forward makes many temporaries) and one GEMM
            # with L^-1 per chunk instead of a triangular solve.
            L_inv = torch.linalg.solve_triangular(
                L, torch.eye(L.shape[-1], dtype=L.dtype), upper=False
            )
        means, variances = [], []
        for start in range(0, X.shape[0], chunk):
            Xc = model.transform_inputs(X[start : start + chunk])
            if fast:
                cross = _matern52(covar, Xc, train_X)  # [k, n]
                means.append(constant + (cross @ alpha).squeeze(-1))
                quad = (cross @ L_inv.T).square_().sum(-1)
                prior = covar.outputscale.reshape(-1)[0].expand(len(Xc))
            else:
                cross = covar(Xc, train_X).to_dense()  # [k, n]
                means.append(constant + (cross @ alpha).squeeze(-1))
                v = torch.linalg.solve_triangular(L, cross.T, upper=False)  # [n, k]
                quad = (v**2).sum(0)
                prior = covar(Xc, Xc, diag=True)
            variances.append((prior - quad).clamp_min(0.0))
        mean = torch.cat(means).unsqueeze(-1)
        variance = torch.cat(variances).unsqueeze(-1)
        transform = getattr(model, "outcome_transform", None)
        if transform is not None:
            # Standardize: y = mean_y + std_y · z.
            mean = transform.means.reshape(-1) + transform.stdvs.reshape(-1) * mean
            variance = variance * transform.stdvs.reshape(-1) ** 2
    return mean.numpy(), variance.sqrt().numpy()


def _is_scaled_matern52(kernel: object) -> bool:
    base = getattr(kernel, "base_kernel", None)
    return isinstance(kernel, ScaleKernel) and isinstance(base, MaternKernel) and base.nu == 2.5


def _matern52(kernel: ScaleKernel, A: Tensor, B: Tensor) -> Tensor:
    """``s² (1 + √5 d + 5/3 d²) exp(-√5 d)`` between rows of A and B, where d is the
    lengthscale-scaled distance: gpytorch's ScaleKernel(MaternKernel(nu=2.5)), fused in place."""
    lengthscale = kernel.base_kernel.lengthscale.reshape(1, -1)
    scaled = torch.cdist(A / lengthscale, B / lengthscale).mul_(math.sqrt(5.0))
    outputscale = float(kernel.outputscale.detach().reshape(-1)[0])
    out = scaled.square().div_(3.0).add_(scaled).add_(1.0).mul_(outputscale)
    return out.mul_(scaled.neg_().exp_())


def lengthscales(model: SingleTaskGP) -> np.ndarray:
    """The ``d`` ARD lengthscales (on normalised inputs) of a single-output model."""
    kernel = model.covar_module
    base = getattr(kernel, "base_kernel", kernel)
    return base.lengthscale.detach().reshape(-1).numpy()
