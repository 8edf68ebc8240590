"""Gaussian-process fits and batched posterior grids.

One model family everywhere: BoTorch's ``SingleTaskGP`` with a scaled Matérn-5/2 ARD kernel
(Gamma lengthscale/outputscale priors), inputs normalised to the unit cube by fixed bounds,
outcomes standardised, hyperparameters fitted by maximising the marginal likelihood
(``fit_gpytorch_mll``). Past :data:`MAX_FIT_POINTS` observations the hyperparameters are fitted
on a subsample (the best points plus a random rest) and the model is then conditioned on all
data with those hyperparameters, so fitting stays a few seconds while prediction is exact.

Imports torch, gpytorch and botorch; never ax, models, service or workers.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from botorch.models.transforms.input import Normalize
from botorch.models.transforms.outcome import Standardize
from botorch.models.utils.gpytorch_modules import get_matern_kernel_with_gamma_prior
from gpytorch.mlls import ExactMarginalLogLikelihood
from torch import Tensor

DTYPE = torch.double
# Hyperparameters are fitted on at most this many points (exact GP, O(n^3) per step).
MAX_FIT_POINTS = 400
# Posterior grids are evaluated in chunks of this many points.
GRID_CHUNK = 50_000


def as_tensor(x: np.ndarray | Tensor) -> Tensor:
    return torch.as_tensor(np.asarray(x) if not isinstance(x, Tensor) else x, dtype=DTYPE)


def _make_gp(X: Tensor, Y: Tensor, bounds: Tensor) -> SingleTaskGP:
    return SingleTaskGP(
        X,
        Y,
        covar_module=get_matern_kernel_with_gamma_prior(ard_num_dims=X.shape[-1]),
        input_transform=Normalize(d=X.shape[-1], bounds=bounds),
        outcome_transform=Standardize(m=Y.shape[-1]),
    )


def fit_gp(X: Tensor, Y: Tensor, *, bounds: Tensor, seed: int = 0) -> SingleTaskGP:
    """Fit a Matérn-5/2 ARD GP.

    Args:
        X: ``n x d`` inputs (effective factors, or unit-cube points).
        Y: ``n x m`` outcomes (``m`` independent outputs share nothing but the inputs).
        bounds: ``2 x d`` lower/upper bounds used to normalise ``X``.
        seed: seeds the subsample when ``n > MAX_FIT_POINTS``.
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
        _fit(sub)
        model = _make_gp(X, Y, bounds)
        state = {k: v for k, v in sub.state_dict().items() if "outcome_transform" not in k}
        model.load_state_dict(state, strict=False)
        model.eval()
        return model
    model = _make_gp(X, Y, bounds)
    _fit(model)
    return model


def _fit(model: SingleTaskGP) -> None:
    mll = ExactMarginalLogLikelihood(model.likelihood, model)
    with warnings.catch_warnings():
        # Optimiser chatter (e.g. "ABNORMAL_TERMINATION_IN_LNSRCH") is not actionable here;
        # fit_gpytorch_mll already retries and falls back to the prior mode.
        warnings.simplefilter("ignore")
        fit_gpytorch_mll(mll)
    model.eval()


def posterior_mean_std(
    model: SingleTaskGP, X: Tensor | np.ndarray, *, chunk: int = GRID_CHUNK
) -> tuple[np.ndarray, np.ndarray]:
    """Posterior mean and standard deviation of the latent function.

    Args:
        X: ``k x d`` points. Evaluated in chunks of ``chunk`` rows without gradients.

    Returns:
        Two ``k x m`` arrays (``m`` = the model's outputs).
    """
    X = as_tensor(X)
    means, stds = [], []
    with torch.no_grad():
        for start in range(0, X.shape[0], chunk):
            post = model.posterior(X[start : start + chunk])
            means.append(post.mean)
            stds.append(post.variance.clamp_min(0.0).sqrt())
    return torch.cat(means).numpy(), torch.cat(stds).numpy()


def lengthscales(model: SingleTaskGP) -> np.ndarray:
    """The ``d`` ARD lengthscales (on normalised inputs) of a single-output model."""
    kernel = model.covar_module
    base = getattr(kernel, "base_kernel", kernel)
    return base.lengthscale.detach().reshape(-1).numpy()
