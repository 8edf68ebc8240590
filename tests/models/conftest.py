"""Fixtures for the models tests: a seeded sampler of random scaled architectures."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
import torch

from vitcube.models import Arch, ArchConfig


@pytest.fixture(autouse=True)
def _single_threaded_torch() -> Iterator[None]:
    """One intra-op thread: these tiny forward passes are 10–40× slower when torch's thread
    pool competes for the shared cores; restored afterwards for the other packages' tests."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


def random_arch(family: str, rng: random.Random) -> Arch:
    """A random scaled network of `family` at 48–128 px with few classes (the cost identities
    are exact at any size, small inputs keep the suite fast)."""
    classes = rng.choice([3, 10, 17])
    if family == "mobilevit_v1":
        head = rng.choice(["standard", "exshortcut"])
        dropped = rng.choice([(), (), (5,), (4, 5)]) if head == "standard" else ()
        ratios = tuple(round(rng.uniform(0.3, 2.5), 3) for _ in range(3))
        base = ArchConfig(
            "mobilevit_v1",
            size=rng.choice(["xxs", "xs", "s"]),
            num_classes=classes,
            head=head,
            exshortcut_ratios=ratios if head == "exshortcut" else None,
            dropped_stages=dropped,
        )
    elif family == "mobilevit_v2":
        head = rng.choice(["standard", "exshortcut"])
        base = ArchConfig(
            "mobilevit_v2",
            width=round(rng.uniform(0.5, 2.0), 3),
            num_classes=classes,
            head=head,
            dropped_stages=rng.choice([(), (5,)]) if head == "standard" else (),
        )
    elif family == "efficientvit":
        # 64–176 px: 4–11 px first-stage maps, so windows are padded (8 → 14) or not (7, 14);
        # dropping stage 3 lets 32 px through. d_i must be 1 for this family.
        dropped = rng.choice([(), (), (3,)])
        base = ArchConfig(
            "efficientvit",
            size=rng.choice(["m0", "m1", "m2", "m3", "m4", "m5"]),
            num_classes=classes,
            dropped_stages=dropped,
        )
        low = 32 if dropped else 64
        return base.scale(
            r=rng.uniform(low / base.resolution, 176 / base.resolution),
            d_m=rng.uniform(0.3, 1.8),
            w=rng.uniform(0.3, 1.2),
        )
    else:
        base = ArchConfig(family, num_classes=classes)
    return base.scale(
        r=rng.uniform(48 / base.resolution, 128 / base.resolution),
        d_i=rng.uniform(0.3, 2.4),
        d_m=rng.uniform(0.3, 1.8),
        w=rng.uniform(0.2, 1.0 if family == "mobilevit_v2" else 1.2),
    )


@pytest.fixture
def arch_sampler():  # type: ignore[no-untyped-def]
    """`random_arch(family, rng)` for tests (conftest modules are not importable by name)."""
    return random_arch
