"""Which images go into which batch, at which resolution, and getting them onto the device.

A *plan* is one epoch's list of `Batch(indices, resolution)`. `fixed_plan` is the usual
shuffled fixed-size batching; `variable_plan` is MobileViT's multi-scale variable batch
sampler: every batch picks one of a few resolutions around the trial's and scales its batch
size so that `batch_size x resolution²` stays about constant (small images, bigger batches).
`BatchLoader` turns a plan into uint8 device tensors: in-memory splits are indexed directly
on the device; image folders are decoded by DataLoader worker processes.

Imports torch and workers.datasets only.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from vitcube.workers.datasets import FolderImages, FolderSplit, Split, TensorSplit


@dataclass(frozen=True)
class Batch:
    indices: tuple[int, ...]
    resolution: int


def fixed_plan(
    n: int, batch_size: int, resolution: int, *, generator: torch.Generator | None, drop_last: bool
) -> list[Batch]:
    """Shuffled (when a generator is given) batches of `batch_size` at one resolution."""
    order = (
        torch.randperm(n, generator=generator).tolist() if generator is not None else list(range(n))
    )
    batches = [
        Batch(tuple(order[start : start + batch_size]), resolution)
        for start in range(0, n, batch_size)
    ]
    # A last batch of one image breaks BatchNorm in training mode.
    if len(batches) > 1:
        tail = len(batches[-1].indices)
        if tail < 2 or (drop_last and tail < batch_size):
            batches.pop()
    return batches


def multiscale_resolutions(
    resolution: int,
    *,
    min_scale: float = 0.5,
    max_scale: float = 1.25,
    n_scales: int = 5,
    multiple: int = 32,
) -> list[int]:
    """The resolutions the variable batch sampler draws from, multiples of `multiple` px."""
    if not 0 < min_scale <= 1 <= max_scale:
        raise ValueError(
            "multiscale scales must satisfy 0 < min_scale <= 1 <= max_scale, "
            f"got {min_scale}, {max_scale}"
        )
    if n_scales < 1:
        raise ValueError(f"multiscale n_scales must be >= 1, got {n_scales}")
    values: set[int] = {resolution}
    for i in range(n_scales):
        scale = min_scale + (max_scale - min_scale) * (i / max(1, n_scales - 1))
        values.add(max(multiple, round(resolution * scale / multiple) * multiple))
    return sorted(values)


def variable_plan(
    n: int,
    batch_size: int,
    resolution: int,
    resolutions: Sequence[int],
    *,
    generator: torch.Generator,
) -> list[Batch]:
    """One epoch of the variable batch sampler: each batch draws its resolution at random."""
    order = torch.randperm(n, generator=generator).tolist()
    choice = torch.randint(len(resolutions), (n,), generator=generator).tolist()
    batches: list[Batch] = []
    start = 0
    while start < n:
        res = resolutions[choice[len(batches)]]
        size = max(2, int(batch_size * (resolution / res) ** 2))
        chunk = order[start : start + size]
        start += size
        if len(chunk) < max(2, size // 2) and batches:
            break  # drop a short tail, as drop_last does
        batches.append(Batch(tuple(chunk), res))
    return batches


class BatchLoader:
    """Yields `(images, labels)` on `device` for each batch of a plan.

    images: a `B x 3 x H x W` uint8 tensor (H = W for image folders: `load_size`); labels: `B`.
    """

    def __init__(
        self, split: Split, device: torch.device, *, load_size: int = 0, num_workers: int = 0
    ) -> None:
        self.split = split
        self.device = device
        self._sampler = _PlanSampler()
        self._loader: torch.utils.data.DataLoader | None = None
        if isinstance(split, TensorSplit):
            self._images = split.images.to(device)
            self._labels = split.labels.to(device)
        else:
            assert isinstance(split, FolderSplit)
            self._loader = torch.utils.data.DataLoader(
                FolderImages(split, load_size),
                batch_sampler=self._sampler,
                num_workers=num_workers,
                pin_memory=device.type == "cuda",
            )

    def __len__(self) -> int:
        return len(self.split)

    def iterate(self, plan: list[Batch]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self._sampler.plan = plan
        if self._loader is None:
            for batch in plan:
                index = torch.tensor(batch.indices, device=self.device)
                yield self._images.index_select(0, index), self._labels.index_select(0, index)
            return
        non_blocking = self.device.type == "cuda"
        iterator = iter(self._loader)
        try:
            for images, labels in iterator:
                yield (
                    images.to(self.device, non_blocking=non_blocking),
                    labels.to(self.device, non_blocking=non_blocking),
                )
        finally:
            # Shut the decoding processes down now (after a stop or an error), not whenever the
            # traceback that references the iterator is collected (that waits seconds per worker).
            shutdown = getattr(iterator, "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()


class _PlanSampler:
    """A batch sampler yielding the current plan's indices (it lives in the main process).

    It holds the plan itself, not its BatchLoader: a reference cycle would leave the DataLoader
    workers to the garbage collector, which tears their queues down first and then waits
    seconds for workers that never hear they should exit.
    """

    def __init__(self) -> None:
        self.plan: list[Batch] = []

    def __iter__(self) -> Iterator[list[int]]:
        return (list(batch.indices) for batch in self.plan)

    def __len__(self) -> int:
        return len(self.plan)
