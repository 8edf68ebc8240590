from __future__ import annotations

import pytest

from vitcube.contract import DATASETS
from vitcube.models import ArchConfig, count_macs
from vitcube.workers.surrogate import noiseless_top1, shape_term, surrogate_curve, surrogate_top1


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
    best_r = {w: max(rs, key=lambda r, w=w: shape_term(r, 1.5, 1.25, w)) for w in (0.5, 1.0)}
    assert 0.6 < best_r[0.5] < best_r[1.0] < 1.99
    # MV2 depth: diminishing returns.
    gains = [shape_term(1.0, d + 0.5, 1.25, 1.0) - shape_term(1.0, d, 1.25, 1.0) for d in (1, 2)]
    assert gains[0] > gains[1] > 0


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
