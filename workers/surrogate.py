"""A documented synthetic accuracy landscape for MobileViT variants (the ``surrogate`` trainer).

Used instead of training for load tests, optimiser benchmarks and demos without a GPU; every
result it produces is labelled ``surrogate`` by the caller. It is a smooth function of the
network's effective factors ``(r, d_i, d_m, w)`` and of its exact MACs ``M`` (``m0`` = MACs of
the baseline), with interior optima so that *how* a MAC budget is spent matters, and learning
curves whose speed depends on the network, so that early ranks are not final ranks.

Final value (after a whole run of ``E`` epochs), for landscape ``L`` and dataset ``D``:

    x      = log2(M / m0)                                   # capacity, in doublings
    q      = offset[D] + 0.9 · (x + shape_L(r, d_i, d_m, w))
    A      = chance + (ceiling[D] - chance) · σ(q)          # what the network can reach
    τ      = τ_L(M, r, d_i, d_m)                            # its learning time constant (epochs)
    noiseless_top1(E) = chance + (A - chance) · (1 - exp(-E / τ))
    surrogate_top1    = clip(noiseless_top1(E) + ε, 0, 1),   ε ~ N(0, 0.002²)

with σ the logistic function and, per dataset, (ceiling, offset, chance): digits (0.995, 3.5,
0.1), cifar10 (0.97, 2.5, 0.1), cifar100 (0.85, 1.5, 0.01), shapes (0.95, 1.0, 0.1),
imagefolder (0.82, 1.8, 1 / num_classes). More MACs always raise A, with diminishing returns.

Landscapes (``LANDSCAPES``):

- ``balanced`` (the default; the asymptotes A of earlier versions, now with curve speed):
  shape = - 0.8 · (ln r - 0.5 · ln w - 0.15)²           # resolution vs width: best r ≈ 1.16 √w
          - 0.6 · (d_m - 1.25)²                          # an optimum transformer depth
          + 0.5 · (1 - exp(-(d_i - 0.6) / 0.5)) - 0.45   # diminishing returns in MV2 depth
  τ     = 8 · (M / m0)^0.2 · √r: bigger and higher-resolution networks learn more slowly.
  At a fixed budget the best network balances resolution against width, uses a transformer
  depth near 1.25× and adds MV2 depth only while it is cheap (v2-0.5 at 0.5 × m0: r 0.875,
  d_i 2.5, d_m 1.25, w 0.50).
- ``ridge`` (a differently shaped optimum, to catch out a method tuned to ``balanced``):
  shape = - 1.5 · (ln r - 0.3 · ln w + 0.3)²            # a ridge: low r, nearly whatever w
          - 0.6 · (d_m - 0.9)²                           # a shallower transformer
          - 0.8 · (d_i - 1.6)² - 0.2                     # an interior MV2 depth that matters
  τ     = 8 · (M / (m0 · r²))^0.8: compute *per pixel* (width and depth), not resolution, sets
  the speed, so the wide low-resolution networks this landscape favours are the slow starters
  (v2-0.5 at 0.5 × m0: best r 0.81, d_i 1.5, d_m 1.0, w 0.68).

Learning curve of one run (``surrogate_curve``; the LR schedule spans the whole run):

    τ_s     = τ · exp(0.1 · z),  z ~ N(0, 1)                # per-trial speed jitter (log-normal)
    P(t)    = (1 - exp(-t / τ_s)) / (1 - exp(-E / τ_s))     # 1 at t = E
    G(t)    = 1 - 0.08 · (1 + cos(π t / E)) / 2             # the gap while the LR is still high
    curve_t = clip(start + (final - start) · P(t) · G(t) + δ_t, 0, final),  δ_t ~ N(0, 0.003²)

for t = 1 … E - 1, and curve_E = final = surrogate_top1 exactly (``start`` = chance, never above
final). The curve never exceeds final, so the best epoch is the last one. ``noiseless_top1(t)``
is the final value of a *run* of t epochs (annealed), not the curve of a longer run at epoch t.
All noise is seeded by (seed, landscape, dataset, epochs, network), so a result is a pure
function of its inputs.

Because τ differs between networks, curves cross. Measured on MobileViT v2-0.5, imagefolder
(1000 classes), E = 81, 50 networks drawn from the lattice under 0.5 × m0, ten draws (draw k
with trial seed k): Spearman ρ between the curve at epoch t and the final value, mean [min,
max] over the draws:

    landscape   ρ(epoch 3)          ρ(epoch 9)          ρ(epoch 27)
    balanced    0.45 [0.21, 0.75]   0.74 [0.61, 0.89]   0.98 [0.96, 0.99]
    ridge       0.63 [0.54, 0.71]   0.91 [0.84, 0.95]   0.99 [0.99, 1.00]

τ there spans 5.2–7.8 epochs (balanced) and 3.0–6.4 (ridge).

Pure Python plus ``models`` (for MACs); does not use torch.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable
from dataclasses import dataclass

from vitcube.models import Arch, count_macs

# dataset -> (ceiling, offset, chance or None for 1 / num_classes)
DATASETS: dict[str, tuple[float, float, float | None]] = {
    "digits": (0.995, 3.5, 0.1),
    "cifar10": (0.97, 2.5, 0.1),
    "cifar100": (0.85, 1.5, 0.01),
    "shapes": (0.95, 1.0, 0.1),
    "imagefolder": (0.82, 1.8, None),
}
NOISE_SD = 0.002  # per-trial noise on the final top-1
CURVE_NOISE_SD = 0.003  # per-epoch noise of the validation top-1
TAU_JITTER_SD = 0.1  # per-trial log-normal jitter of the time constant
ANNEAL_GAP = 0.08  # relative gap to the annealed value while the cosine LR is at its peak


def _balanced_shape(r: float, d_i: float, d_m: float, w: float) -> float:
    return (
        -0.8 * (math.log(r) - 0.5 * math.log(w) - 0.15) ** 2
        - 0.6 * (d_m - 1.25) ** 2
        + 0.5 * (1.0 - math.exp(-(d_i - 0.6) / 0.5))
        - 0.45
    )


def _balanced_tau(macs_ratio: float, r: float, d_i: float, d_m: float) -> float:
    return 8.0 * macs_ratio**0.2 * math.sqrt(r)


def _ridge_shape(r: float, d_i: float, d_m: float, w: float) -> float:
    return (
        -1.5 * (math.log(r) - 0.3 * math.log(w) + 0.3) ** 2
        - 0.6 * (d_m - 0.9) ** 2
        - 0.8 * (d_i - 1.6) ** 2
        - 0.2
    )


def _ridge_tau(macs_ratio: float, r: float, d_i: float, d_m: float) -> float:
    return 8.0 * (macs_ratio / r**2) ** 0.8


@dataclass(frozen=True)
class _Landscape:
    shape: Callable[[float, float, float, float], float]  # (r, d_i, d_m, w) -> shape term
    tau: Callable[[float, float, float, float], float]  # (M / m0, r, d_i, d_m) -> epochs


_LANDSCAPES: dict[str, _Landscape] = {
    "balanced": _Landscape(_balanced_shape, _balanced_tau),
    "ridge": _Landscape(_ridge_shape, _ridge_tau),
}
LANDSCAPES: tuple[str, ...] = tuple(_LANDSCAPES)


def _landscape(name: str) -> _Landscape:
    try:
        return _LANDSCAPES[name]
    except KeyError:
        raise ValueError(
            f"unknown landscape {name!r}; the surrogate knows {list(LANDSCAPES)}"
        ) from None


def _check(dataset: str, epochs: int, landscape: str) -> _Landscape:
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; the surrogate knows {sorted(DATASETS)}")
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    return _landscape(landscape)


def _rng(arch: Arch, seed: int, salt: str) -> random.Random:
    digest = hashlib.sha256(f"{seed}|{salt}|{arch.key()}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _salt(kind: str, dataset: str, epochs: int, landscape: str) -> str:
    # "balanced" keeps the salts of earlier versions, so its per-trial noise is unchanged.
    suffix = "" if landscape == "balanced" else f"|{landscape}"
    return f"{kind}|{dataset}|{epochs}{suffix}"


def _chance(arch: Arch, dataset: str) -> float:
    chance = DATASETS[dataset][2]
    return 1.0 / max(arch.num_classes, 1) if chance is None else chance


def shape_term(r: float, d_i: float, d_m: float, w: float, *, landscape: str = "balanced") -> float:
    """The allocation term of a landscape (see the module docstring)."""
    return _landscape(landscape).shape(r, d_i, d_m, w)


def time_constant(arch: Arch, *, landscape: str = "balanced") -> float:
    """τ of ``arch`` in epochs, before the per-trial jitter (see the module docstring)."""
    e = arch.effective_factors()
    ratio = count_macs(arch) / count_macs(arch.base)
    return _landscape(landscape).tau(ratio, e["r"], e["d_i"], e["d_m"])


def _asymptote(arch: Arch, dataset: str, landscape: _Landscape) -> float:
    ceiling, offset, _ = DATASETS[dataset]
    chance = _chance(arch, dataset)
    x = math.log2(count_macs(arch) / count_macs(arch.base))
    e = arch.effective_factors()
    q = offset + 0.9 * (x + landscape.shape(e["r"], e["d_i"], e["d_m"], e["w"]))
    return chance + (ceiling - chance) / (1.0 + math.exp(-q))


def noiseless_top1(
    arch: Arch, *, dataset: str = "digits", epochs: int = 100, landscape: str = "balanced"
) -> float:
    """Top-1 after a run of ``epochs`` epochs, without noise (benchmarks' true optimum)."""
    spec = _check(dataset, epochs, landscape)
    chance = _chance(arch, dataset)
    tau = time_constant(arch, landscape=landscape)
    reach = _asymptote(arch, dataset, spec)
    return chance + (reach - chance) * (1.0 - math.exp(-epochs / tau))


def surrogate_top1(
    arch: Arch,
    *,
    dataset: str = "digits",
    epochs: int = 100,
    seed: int = 0,
    landscape: str = "balanced",
) -> float:
    """Synthetic top-1 (a fraction) of a run of ``epochs`` epochs; deterministic in its inputs."""
    value = noiseless_top1(arch, dataset=dataset, epochs=epochs, landscape=landscape)
    value += _rng(arch, seed, _salt("top1", dataset, epochs, landscape)).gauss(0.0, NOISE_SD)
    return min(1.0, max(0.0, value))


def surrogate_curve(
    arch: Arch,
    *,
    dataset: str = "digits",
    epochs: int = 100,
    seed: int = 0,
    landscape: str = "balanced",
) -> list[float]:
    """Validation top-1 after each of ``epochs`` epochs of one run (``epochs`` values).

    Every value lies in [0, final], and the last is exactly ``surrogate_top1`` with the same
    arguments; early values follow the network's own speed τ, so curves of different networks
    cross (see the module docstring)."""
    final = surrogate_top1(arch, dataset=dataset, epochs=epochs, seed=seed, landscape=landscape)
    start = min(_chance(arch, dataset), final)
    rng = _rng(arch, seed, _salt("curve", dataset, epochs, landscape))
    tau = time_constant(arch, landscape=landscape) * math.exp(rng.gauss(0.0, TAU_JITTER_SD))
    norm = 1.0 - math.exp(-epochs / tau)
    curve = []
    for t in range(1, epochs):
        progress = (1.0 - math.exp(-t / tau)) / norm
        anneal = 1.0 - ANNEAL_GAP * 0.5 * (1.0 + math.cos(math.pi * t / epochs))
        value = start + (final - start) * progress * anneal + rng.gauss(0.0, CURVE_NOISE_SD)
        curve.append(min(final, max(0.0, value)))
    curve.append(final)
    return curve
