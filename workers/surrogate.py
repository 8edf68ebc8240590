"""A documented synthetic accuracy landscape for MobileViT variants (the ``surrogate`` trainer).

Used instead of training for load tests, optimiser benchmarks and demos without a GPU; every
result it produces is labelled ``surrogate`` by the caller. It is a smooth function of the
network's effective factors ``(r, d_i, d_m, w)`` and of its exact MACs ``M`` (``m0`` = MACs of
the baseline), with interior optima so that *how* a MAC budget is spent matters:

    x      = log2(M / m0)                                   # capacity, in doublings
    shape  = - 0.8 · (ln r - 0.5 · ln w - 0.15)²            # resolution vs width: best r ≈ 1.16 √w
             - 0.6 · (d_m - 1.25)²                          # an optimum transformer depth
             + 0.5 · (1 - exp(-(d_i - 0.6) / 0.5)) - 0.45   # diminishing returns in MV2 depth
    q      = offset[dataset] + 0.9 · (x + shape)
    final  = chance + (ceiling[dataset] - chance) · σ(q) · (1 - exp(-epochs / 5))
    top1   = clip(final + ε, 0, 1),   ε ~ N(0, 0.002²) seeded by (seed, arch.key())

with σ the logistic function and, per dataset, (ceiling, offset, chance):
digits (0.995, 3.5, 0.1), cifar10 (0.97, 2.5, 0.1), cifar100 (0.85, 1.5, 0.01),
shapes (0.95, 1.0, 0.1), imagefolder (0.82, 1.8, 1 / num_classes). More MACs always help,
but with diminishing returns; at a fixed budget the best network balances resolution against
width, uses a transformer depth near 1.25× and adds MV2 depth only while it is cheap.

The learning curve rises as ``1 - exp(-t / 5)`` towards ``top1`` with a little seeded noise,
never above it, and ends exactly at it.

Pure Python plus ``models`` (for MACs); does not use torch.
"""

from __future__ import annotations

import hashlib
import math
import random

from vitcube.models import Arch, count_macs

# dataset -> (ceiling, offset, chance or None for 1 / num_classes)
DATASETS: dict[str, tuple[float, float, float | None]] = {
    "digits": (0.995, 3.5, 0.1),
    "cifar10": (0.97, 2.5, 0.1),
    "cifar100": (0.85, 1.5, 0.01),
    "shapes": (0.95, 1.0, 0.1),
    "imagefolder": (0.82, 1.8, None),
}
NOISE_SD = 0.002
CURVE_NOISE_SD = 0.004
EPOCH_SCALE = 5.0


def _check(dataset: str, epochs: int) -> None:
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; the surrogate knows {sorted(DATASETS)}")
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")


def _rng(arch: Arch, seed: int, salt: str) -> random.Random:
    digest = hashlib.sha256(f"{seed}|{salt}|{arch.key()}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def shape_term(r: float, d_i: float, d_m: float, w: float) -> float:
    """The allocation term of the landscape (0 at its best; see the module docstring)."""
    return (
        -0.8 * (math.log(r) - 0.5 * math.log(w) - 0.15) ** 2
        - 0.6 * (d_m - 1.25) ** 2
        + 0.5 * (1.0 - math.exp(-(d_i - 0.6) / 0.5))
        - 0.45
    )


def noiseless_top1(arch: Arch, *, dataset: str = "digits", epochs: int = 100) -> float:
    """The landscape without noise (for benchmarks that need the true optimum)."""
    _check(dataset, epochs)
    ceiling, offset, chance = DATASETS[dataset]
    if chance is None:
        chance = 1.0 / max(arch.num_classes, 1)
    m0 = count_macs(arch.base)
    x = math.log2(count_macs(arch) / m0)
    e = arch.effective_factors()
    q = offset + 0.9 * (x + shape_term(e["r"], e["d_i"], e["d_m"], e["w"]))
    saturation = 1.0 - math.exp(-epochs / EPOCH_SCALE)
    return chance + (ceiling - chance) * saturation / (1.0 + math.exp(-q))


def surrogate_top1(
    arch: Arch, *, dataset: str = "digits", epochs: int = 100, seed: int = 0
) -> float:
    """Synthetic top-1 (a fraction) of ``arch``, deterministic for (arch, dataset, epochs, seed)."""
    value = noiseless_top1(arch, dataset=dataset, epochs=epochs)
    value += _rng(arch, seed, f"top1|{dataset}|{epochs}").gauss(0.0, NOISE_SD)
    return min(1.0, max(0.0, value))


def surrogate_curve(
    arch: Arch, *, dataset: str = "digits", epochs: int = 100, seed: int = 0
) -> list[float]:
    """Validation top-1 after each of ``epochs`` epochs, ending exactly at ``surrogate_top1``."""
    final = surrogate_top1(arch, dataset=dataset, epochs=epochs, seed=seed)
    _, _, chance = DATASETS[dataset]
    start = 1.0 / max(arch.num_classes, 1) if chance is None else chance
    start = min(start, final)
    rng = _rng(arch, seed, f"curve|{dataset}|{epochs}")
    norm = 1.0 - math.exp(-epochs / EPOCH_SCALE)
    curve = []
    for t in range(1, epochs):
        progress = (1.0 - math.exp(-t / EPOCH_SCALE)) / norm
        value = start + (final - start) * progress + rng.gauss(0.0, CURVE_NOISE_SD)
        curve.append(min(final, max(0.0, value)))
    curve.append(final)
    return curve
