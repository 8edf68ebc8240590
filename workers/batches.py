"""Which images go into which batch, at which resolution, and getting them onto the device.

A *plan* is one epoch's list of `Batch(indices, resolution)`. `fixed_plan` is the usual
shuffled fixed-size batching; `variable_plan` is MobileViT's multi-scale variable batch
sampler: every batch picks one of a few resolutions around the trial's and scales its batch
size so that `batch_size x resolution²` stays about constant (small images, bigger batches).
`BatchLoader` turns a plan into uint8 device tensors: in-memory splits (and decoded image
folders that fit) are indexed on the device with one index copy per epoch; other image folders
are gathered from the host's decode cache, or decoded, by persistent DataLoader processes.

Imports torch, numpy and workers.datasets / workers.decode_cache only.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from vitcube.workers.datasets import (
    IMAGEFOLDER_LAYOUT,
    DatasetError,
    FolderSplit,
    Split,
    TensorSplit,
    decode_file,
    file_aspect,
)
from vitcube.workers.decode_cache import (
    CacheUnavailable,
    DecodedSplit,
    Fit,
    ImageDecodeError,
    decode_cache_dir,
    open_decoded,
)

# Batches each DataLoader process keeps ready (DataLoader's prefetch_factor).
PREFETCH_BATCHES = 2
LOADER_WORKERS_ENV = "VITCUBE_LOADER_WORKERS"
MAX_LOADER_WORKERS = 16

log = logging.getLogger(__name__)


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

    images: a `B x 3 x H x W` uint8 tensor; labels: `B` int64; `aspects(batch)` gives each
    image's width / height (a `B` float32 CPU tensor) for the crop. An in-memory split keeps its
    own size. An image folder loads each batch at `load_size(batch.resolution, crop_fraction)` px,
    the size its crop needs (the batch's resolution for training crops, the source of the centre
    crop for evaluation), so nothing is resampled twice and a small multiscale batch is not
    loaded at the largest scale. It reads the host's decode cache (`workers.decode_cache`,
    decoded once per host) unless that is off (`cache_dir=None`) or the disk is full; then
    DataLoader processes decode every batch with Pillow.

    resolutions: every resolution a plan will ask for (an image folder caches one array each).
    fit: how an image folder's pictures fill the square: "centre" (shorter side, centre square:
    evaluation) or "whole" (squeezed whole, their true aspect ratios kept for training crops).
    resident: keep the decoded split on the device when it fits (the validation split).
    check: called while the decode cache is built or awaited (`Control.check`: an interrupt).
    num_workers: DataLoader processes (persistent across epochs, each prefetching
    PREFETCH_BATCHES batches); `host_loader_workers` gives the host's share.
    images_decoded: files this loader decoded into the cache (0 when another epoch, trial or
    process had already done it).
    """

    def __init__(
        self,
        split: Split,
        device: torch.device,
        *,
        resolutions: Sequence[int] = (),
        crop_fraction: float = 1.0,
        fit: Fit = "centre",
        num_workers: int = 0,
        resident: bool = False,
        cache_dir: Path | Literal["auto"] | None = "auto",
        check: Callable[[], None] | None = None,
    ) -> None:
        self.split = split
        self.device = device
        self.crop_fraction = crop_fraction
        self.num_workers = num_workers
        self.images_decoded = 0
        self._sampler = _PlanSampler()
        self._loader: torch.utils.data.DataLoader | None = None
        self._source: torch.utils.data.Dataset[tuple[torch.Tensor, torch.Tensor]] | None = None
        # In-memory path: load size -> `N x 3 x S x S` images on the device (0: one array for all).
        self._images: dict[int, torch.Tensor] = {}
        if isinstance(split, TensorSplit):
            self._images = {0: split.images.to(device)}
            self._labels = split.labels.to(device)
            height, width = split.images.shape[-2:]
            self._aspects = torch.full((len(split),), width / max(1, height))
            return
        assert isinstance(split, FolderSplit)
        labels = torch.tensor(split.labels, dtype=torch.long)
        sizes = sorted({load_size(r, crop_fraction) for r in resolutions})
        if not sizes:
            raise ValueError("a BatchLoader over an image folder needs the resolutions it loads")
        decoded = self._open_cache(split, sizes, fit, cache_dir, check)
        if decoded is None:
            self._source = _DecodedBatches(split, labels, crop_fraction, fit)
            # Headers only: no pixels are decoded here.
            self._aspects = (
                torch.tensor([file_aspect(path) for path in split.files], dtype=torch.float32)
                if fit == "whole"
                else torch.ones(len(split))
            )
            return
        self._aspects = torch.from_numpy(np.array(decoded.aspects, dtype=np.float32))
        if device.type != "cuda" or (resident and _fits_on_device(decoded.arrays, device)):
            # Held whole: on the GPU (copied once), or on the CPU as the shared page-cache pages.
            self._images = {
                size: _as_tensor(array).to(device) for size, array in decoded.arrays.items()
            }
            self._labels = labels.to(device)
        else:
            self._source = _CachedBatches(decoded.paths, labels, crop_fraction)

    def __len__(self) -> int:
        return len(self.split)

    def aspects(self, batch: Batch) -> torch.Tensor:
        """`B` float32 (CPU): the width / height of the picture in each of the batch's images."""
        return self._aspects[list(batch.indices)]

    def iterate(self, plan: list[Batch]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self._images:
            yield from self._iterate_in_memory(plan)
            return
        self._sampler.plan = plan
        non_blocking = self.device.type == "cuda"
        finished = False
        try:
            for images, labels in self._dataloader():
                yield (
                    images.to(self.device, non_blocking=non_blocking),
                    labels.to(self.device, non_blocking=non_blocking),
                )
            finished = True
        except (ConnectionError, EOFError) as error:
            # A loader process killed while it hands a batch over (the batch's shared-memory file
            # descriptor goes through a socket) surfaces as a reset connection, not as torch's
            # "DataLoader worker is killed": the same host fault, said so.
            raise RuntimeError(
                f"lost a DataLoader worker mid-batch ({type(error).__name__}: {error})"
            ) from error
        finally:
            if not finished:
                # Stopped or failed mid-epoch: shut the processes down now, not whenever the
                # traceback that references this generator is collected (seconds per worker).
                self.close()

    def close(self) -> None:
        """Stop the DataLoader processes (a later `iterate` starts new ones)."""
        if self._loader is not None:
            shutdown = getattr(getattr(self._loader, "_iterator", None), "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()
            self._loader = None

    def _iterate_in_memory(self, plan: list[Batch]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        # The epoch's whole order goes to the device in one copy: one small index tensor per step
        # from pageable memory would be a blocking host-to-device copy every step.
        order = torch.tensor([i for batch in plan for i in batch.indices], dtype=torch.long)
        if self.device.type == "cuda":
            order = order.pin_memory().to(self.device, non_blocking=True)
        start = 0
        for batch in plan:
            index = order[start : start + len(batch.indices)]
            start += len(batch.indices)
            images = self._images.get(0)
            if images is None:
                images = self._images[load_size(batch.resolution, self.crop_fraction)]
            yield images.index_select(0, index), self._labels.index_select(0, index)

    def _dataloader(self) -> torch.utils.data.DataLoader:
        if self._loader is None:
            workers = self.num_workers
            self._loader = torch.utils.data.DataLoader(
                self._source,  # type: ignore[arg-type]
                batch_size=None,  # each item is a whole batch
                sampler=self._sampler,
                num_workers=workers,
                pin_memory=self.device.type == "cuda",
                persistent_workers=workers > 0,
                prefetch_factor=PREFETCH_BATCHES if workers > 0 else None,
            )
        return self._loader

    def _open_cache(
        self,
        split: FolderSplit,
        sizes: list[int],
        fit: Fit,
        cache_dir: Path | Literal["auto"] | None,
        check: Callable[[], None] | None,
    ) -> DecodedSplit | None:
        directory = decode_cache_dir(split.root) if cache_dir == "auto" else cache_dir
        if directory is None:
            return None
        try:
            decoded = open_decoded(split.files, sizes, Path(directory), fit=fit, check=check)
        except CacheUnavailable as error:
            log.warning("%s; decoding the images every epoch instead", error)
            return None
        except ImageDecodeError as error:
            raise DatasetError(f"{error}; expected {IMAGEFOLDER_LAYOUT}") from error
        self.images_decoded = decoded.images_decoded
        return decoded


def load_size(resolution: int, crop_fraction: float = 1.0) -> int:
    """The square an image is loaded at for a `resolution` px crop of `crop_fraction` of it."""
    return math.ceil(resolution / crop_fraction - 1e-9)


def host_loader_workers(device: torch.device, *, requested: int | None = None) -> int:
    """DataLoader processes for one training process: this host's share of its cores.

    The host setting `VITCUBE_LOADER_WORKERS` when set; else `requested` (a recipe that names
    `num_workers`); else the cores this process may use ÷ the GPUs of the box (at most
    MAX_LOADER_WORKERS) on CUDA, and a few on the CPU (where training needs the cores).
    """
    setting = os.environ.get(LOADER_WORKERS_ENV, "").strip()
    if setting:
        if not setting.isdigit():
            raise ValueError(f"{LOADER_WORKERS_ENV} must be a whole number >= 0, got {setting!r}")
        return int(setting)
    if requested is not None:
        return requested
    cores = _usable_cores()
    if device.type != "cuda":
        return max(1, min(4, cores // 2))
    return max(1, min(MAX_LOADER_WORKERS, cores // max(1, host_gpu_count())))


def host_gpu_count() -> int:
    """GPUs on this box, not only the ones this process sees (a `--gpus` child sees one)."""
    try:
        listed = len(os.listdir("/proc/driver/nvidia/gpus"))
    except OSError:
        listed = 0
    return max(listed, torch.cuda.device_count() if torch.cuda.is_available() else 0)


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _fits_on_device(arrays: dict[int, np.ndarray], device: torch.device) -> bool:
    """A quarter of the free device memory at most: the model and its activations come first."""
    free, _ = torch.cuda.mem_get_info(device)
    return sum(array.nbytes for array in arrays.values()) <= free // 4


def _as_tensor(array: np.ndarray) -> torch.Tensor:
    """A tensor over a read-only memory map, without copying it (it is only ever read)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array)


class _CachedBatches(torch.utils.data.Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Gathers a batch from the decode cache's memory maps (in a DataLoader process)."""

    def __init__(self, paths: dict[int, Path], labels: torch.Tensor, crop_fraction: float) -> None:
        self.paths = paths
        self.labels = labels
        self.crop_fraction = crop_fraction
        self._arrays: dict[int, np.ndarray] = {}

    def __getstate__(self) -> dict[str, object]:
        # Each process maps the files itself; a pickled memmap would be a copy of the whole array.
        return {**self.__dict__, "_arrays": {}}

    def __getitem__(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        size = load_size(batch.resolution, self.crop_fraction)
        array = self._arrays.get(size)
        if array is None:
            array = self._arrays[size] = np.load(self.paths[size], mmap_mode="r")
        index = np.asarray(batch.indices)
        return torch.from_numpy(array[index]), self.labels[index]


class _DecodedBatches(torch.utils.data.Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Decodes a batch's files with Pillow (in a DataLoader process): no cache on this host."""

    def __init__(
        self, split: FolderSplit, labels: torch.Tensor, crop_fraction: float, fit: Fit
    ) -> None:
        self.split = split
        self.labels = labels
        self.crop_fraction = crop_fraction
        self.fit: Fit = fit

    def __getitem__(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        size = load_size(batch.resolution, self.crop_fraction)
        images = [
            torch.from_numpy(decode_file(self.split.files[i], size, fit=self.fit))
            for i in batch.indices
        ]
        return torch.stack(images), self.labels[list(batch.indices)]


class _PlanSampler:
    """Yields the current plan's batches to the DataLoader (it lives in the main process).

    It holds the plan itself, not its BatchLoader: a reference cycle would leave the DataLoader
    workers to the garbage collector, which tears their queues down first and then waits
    seconds for workers that never hear they should exit.
    """

    def __init__(self) -> None:
        self.plan: list[Batch] = []

    def __iter__(self) -> Iterator[Batch]:
        return iter(self.plan)

    def __len__(self) -> int:
        return len(self.plan)
