"""Fixtures for search/ tests: a small baseline, budgets, and observations on the surrogate."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from vitcube.models import ArchConfig, count_macs
from vitcube.search import Observation
from vitcube.workers.surrogate import surrogate_top1


@pytest.fixture(scope="session")
def base() -> ArchConfig:
    return ArchConfig.preset("mobilevitv2_050")


@pytest.fixture(scope="session")
def m0(base: ArchConfig) -> int:
    return count_macs(base)


@pytest.fixture(scope="session")
def observe(base: ArchConfig) -> Callable[[dict[str, float]], Observation]:
    """Build a request, score it on the surrogate landscape, return the observation."""

    def run(requested: dict[str, float]) -> Observation:
        arch = base.scale(**requested)
        return Observation(
            factors=arch.effective_factors(),
            top1=surrogate_top1(arch, dataset="imagefolder"),
            macs=count_macs(arch),
        )

    return run
