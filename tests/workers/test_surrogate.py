from __future__ import annotations

import itertools
from functools import partial

import pytest

from vitcube.contract import DATASETS
from vitcube.models import ArchConfig, count_macs
from vitcube.workers.surrogate import (
    LANDSCAPES,
    noiseless_top1,
    shape_term,
    surrogate_curve,
    surrogate_top1,
    time_constant,
)

EPOCHS = 81  # a multi-fidelity run: rungs 3, 9, 27, 81


@pytest.fixture(scope="module")
def base() -> ArchConfig:
    return ArchConfig.preset("mobilevitv2_050")


def test_deterministic_per_seed_and_a_fraction(base) -> None:
    arch = base.scale(r=1.1, d_i=1.5, d_m=1.2, w=0.7)
    a = surrogate_top1(arch, dataset="cifar10", seed=3)
    assert a == surrogate_top1(arch, dataset="cifar10", seed=3)
    assert a != surrogate_top1(arch, dataset="cifar10", seed=4)
    assert 0.0 <= a <= 1.0
    assert abs(a - noiseless_top1(arch, dataset="cifar10")) < 0.01


def test_more_macs_help_with_diminishing_returns(base) -> None:
    small, mid, large = (base.scale(w=w) for w in (0.5, 1.0, 2.0))
    assert count_macs(small) < count_macs(mid) < count_macs(large)
    a, b, c = (noiseless_top1(x, dataset="imagefolder") for x in (small, mid, large))
    assert a < b < c
    assert c - b < b - a


def test_interior_optima_in_the_allocation_term() -> None:
    # Transformer depth: 1.25 beats both ends of the paper's range.
    assert shape_term(1.0, 1.0, 1.25, 1.0) > shape_term(1.0, 1.0, 0.8, 1.0)
    assert shape_term(1.0, 1.0, 1.25, 1.0) > shape_term(1.0, 1.0, 1.6, 1.0)
    # Resolution vs width: the best r is interior and lower for a narrower network.
    rs = [r / 100 for r in range(60, 200)]
    best_r = {w: max(rs, key=partial(_shape_at_r, w=w)) for w in (0.5, 1.0)}
    assert 0.6 < best_r[0.5] < best_r[1.0] < 1.99
    # MV2 depth: diminishing returns.
    gains = [shape_term(1.0, d + 0.5, 1.25, 1.0) - shape_term(1.0, d, 1.25, 1.0) for d in (1, 2)]
    assert gains[0] > gains[1] > 0


def _shape_at_r(r: float, *, w: float) -> float:
    return shape_term(r, 1.5, 1.25, w)


def test_dataset_ceiling_and_epochs(base) -> None:
    arch = base.scale()
    assert noiseless_top1(arch, dataset="digits") > noiseless_top1(arch, dataset="cifar100")
    assert noiseless_top1(arch, epochs=3) < noiseless_top1(arch, epochs=30)
    with pytest.raises(ValueError, match="dataset"):
        surrogate_top1(arch, dataset="mnist")
    with pytest.raises(ValueError, match="epochs"):
        surrogate_top1(arch, epochs=0)


def test_curve_ends_at_top1_and_never_exceeds_it(base) -> None:
    arch = base.scale(r=0.9, w=0.8)
    curve = surrogate_curve(arch, dataset="cifar10", epochs=20, seed=1)
    final = surrogate_top1(arch, dataset="cifar10", epochs=20, seed=1)
    assert len(curve) == 20
    assert curve[-1] == final
    assert max(curve) <= final
    assert curve[0] < curve[10] < final + 1e-12


def test_every_dataset_a_search_may_name_has_a_landscape(base) -> None:
    # A search the server accepts must never be refused by a surrogate worker.
    for name in DATASETS:
        assert 0.0 <= surrogate_top1(base.scale(), dataset=name, epochs=5) <= 1.0


def _grid_under_budget(base: ArchConfig, fraction: float) -> list:
    """Networks of a coarse factor grid whose MACs are at most fraction x m0."""
    m0 = count_macs(base)
    archs = {}
    for r, d_i, d_m, w in itertools.product(
        (0.8, 0.9, 1.0, 1.1, 1.25),
        (1.3, 1.5, 1.8, 2.3),
        (0.8, 1.0, 1.25, 1.6),
        (0.4, 0.5, 0.6, 0.7, 0.8),
    ):
        arch = base.scale(r=r, d_i=d_i, d_m=d_m, w=w)
        if count_macs(arch) <= fraction * m0:
            archs[arch.key()] = arch
    return list(archs.values())


def _spearman(a: list[float], b: list[float]) -> float:
    def ranks(values: list[float]) -> list[int]:
        order = sorted(range(len(values)), key=values.__getitem__)
        out = [0] * len(values)
        for rank, i in enumerate(order):
            out[i] = rank
        return out

    ra, rb = ranks(a), ranks(b)
    n = len(a)
    return 1.0 - 6.0 * sum((x - y) ** 2 for x, y in zip(ra, rb, strict=True)) / (n * (n * n - 1))


@pytest.mark.parametrize("landscape", LANDSCAPES)
def test_curve_is_deterministic_bounded_and_ends_at_top1(base, landscape) -> None:
    arch = base.scale(r=1.0, d_i=1.5, d_m=1.0, w=0.6)
    kwargs = {"dataset": "imagefolder", "epochs": EPOCHS, "landscape": landscape}
    curve = surrogate_curve(arch, seed=2, **kwargs)
    assert curve == surrogate_curve(arch, seed=2, **kwargs)
    assert curve != surrogate_curve(arch, seed=3, **kwargs)
    final = surrogate_top1(arch, seed=2, **kwargs)
    assert len(curve) == EPOCHS
    assert curve[-1] == final
    assert all(0.0 <= value <= final for value in curve)
    # It learns: epoch 3 is far below the end, epoch 27 nearer (the LR has not annealed yet).
    assert curve[2] < 0.8 * final < curve[26] < final


def test_bigger_networks_start_slower_but_end_higher(base) -> None:
    small, large = base.scale(r=0.8, d_i=1.3, d_m=0.8, w=0.4), base.scale(r=1.25, w=0.8)
    assert count_macs(small) < count_macs(large)
    assert time_constant(small) < time_constant(large)
    assert noiseless_top1(small, epochs=3) > noiseless_top1(large, epochs=3)
    assert noiseless_top1(small, epochs=EPOCHS) < noiseless_top1(large, epochs=EPOCHS)


@pytest.mark.parametrize("landscape", LANDSCAPES)
def test_ranks_cross_between_early_epochs_and_the_end(base, landscape) -> None:
    archs = _grid_under_budget(base, 0.5)
    assert len(archs) >= 40
    curves = [
        surrogate_curve(a, dataset="imagefolder", epochs=EPOCHS, seed=i, landscape=landscape)
        for i, a in enumerate(archs)
    ]
    macs = [count_macs(a) for a in archs]
    # Some smaller network leads at epoch 3 and is overtaken by the end.
    assert any(
        macs[i] < macs[j] and curves[i][2] > curves[j][2] and curves[i][-1] < curves[j][-1]
        for i in range(len(archs))
        for j in range(len(archs))
    )
    finals = [c[-1] for c in curves]
    at_3 = _spearman([c[2] for c in curves], finals)
    at_27 = _spearman([c[26] for c in curves], finals)
    assert at_3 < 0.9  # early ranks are not final ranks ...
    assert at_27 > at_3  # ... and later rungs predict the end better


def test_the_ridge_has_a_different_best_network(base) -> None:
    archs = _grid_under_budget(base, 0.5)
    best = {
        name: max(
            archs, key=partial(noiseless_top1, dataset="imagefolder", epochs=EPOCHS, landscape=name)
        )
        for name in LANDSCAPES
    }
    assert best["balanced"].key() != best["ridge"].key()
    balanced, ridge = best["balanced"].effective_factors(), best["ridge"].effective_factors()
    assert ridge["w"] > balanced["w"] and ridge["d_m"] < balanced["d_m"]


def test_unknown_landscape_is_refused_with_the_known_names(base) -> None:
    arch = base.scale()
    calls = (
        lambda: noiseless_top1(arch, landscape="flat"),
        lambda: surrogate_top1(arch, landscape="flat"),
        lambda: surrogate_curve(arch, landscape="flat"),
        lambda: shape_term(1.0, 1.0, 1.0, 1.0, landscape="flat"),
    )
    for call in calls:
        with pytest.raises(ValueError, match=r"'flat'.*'balanced', 'ridge'"):
            call()
