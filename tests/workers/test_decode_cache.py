"""The decode cache: an image folder is decoded once per host and every later reader maps it.

A cache hit is shown without mocks: after the first decode the image files are overwritten with
zeros of the same length and their modification times put back, so their identity (name, size,
mtime) is unchanged but any decode would fail; a loader that still returns the right pixels read
them from the cache.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vitcube.workers.batches import BatchLoader, fixed_plan, host_loader_workers, load_size
from vitcube.workers.datasets import FolderSplit, decode_file, load_dataset
from vitcube.workers.decode_cache import decode_cache_dir, open_decoded

CPU = torch.device("cpu")


def _imagefolder(root: Path, per_class: int = 3, size: tuple[int, int] = (40, 30)) -> None:
    rng = np.random.default_rng(0)
    for split, count in (("train", per_class), ("val", 2)):
        for name in ("cat", "dog"):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}{'.png' if i % 2 else '.jpg'}")


def _make_undecodable(files: tuple[Path, ...]) -> None:
    """Zero every file, keeping its size and mtime: the cache's key is unchanged."""
    for path in files:
        stat = path.stat()
        path.write_bytes(b"\0" * stat.st_size)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def _expected(split: FolderSplit, size: int) -> torch.Tensor:
    return torch.stack([torch.from_numpy(decode_file(path, size)) for path in split.files])


def _epoch(loader: BatchLoader, resolution: int, seed: int) -> list[tuple[torch.Tensor, ...]]:
    generator = torch.Generator().manual_seed(seed)
    plan = fixed_plan(len(loader), 3, resolution, generator=generator, drop_last=False)
    return [
        (images, labels, torch.tensor(batch.indices))
        for (images, labels), batch in zip(loader.iterate(plan), plan, strict=True)
    ]


def test_second_epoch_and_second_loader_read_the_cache_not_the_files(
    tmp_path: Path, decode_cache_in_tmp: Path
) -> None:
    _imagefolder(tmp_path)
    data = load_dataset({"name": "imagefolder"}, tmp_path)
    train = data.train
    assert isinstance(train, FolderSplit)
    expected = {size: _expected(train, size) for size in (16, 24)}

    loader = BatchLoader(train, CPU, resolutions=[16, 24])
    assert loader.images_decoded == len(train)  # each file once, for both sizes
    _make_undecodable(train.files)
    for epoch in range(2):
        for resolution in (16, 24):
            for images, labels, indices in _epoch(loader, resolution, seed=epoch):
                assert torch.equal(images, expected[resolution][indices])
                assert labels.tolist() == [train.labels[i] for i in indices]
    again = BatchLoader(train, CPU, resolutions=[24, 16])
    assert again.images_decoded == 0
    ((images, _, indices), *_) = _epoch(again, 24, seed=5)
    assert torch.equal(images, expected[24][indices])
    cached = sorted(p.name for p in decode_cache_in_tmp.iterdir() if p.suffix == ".npy")
    assert len(cached) == 2 and cached[0].endswith("-16px.npy")


def test_loaders_load_at_the_size_the_crop_needs(tmp_path: Path) -> None:
    _imagefolder(tmp_path)
    data = load_dataset({"name": "imagefolder"}, tmp_path)
    train = BatchLoader(data.train, CPU, resolutions=[16, 32])
    val = BatchLoader(data.val, CPU, resolutions=[32], crop_fraction=0.875, resident=True)
    shapes = {images.shape[-1] for images, *_ in _epoch(train, 16, 0) + _epoch(train, 32, 0)}
    assert shapes == {16, 32}  # a small multiscale batch is not loaded at the largest size
    assert {images.shape[-1] for images, *_ in _epoch(val, 32, 0)} == {load_size(32, 0.875)}
    assert round(load_size(32, 0.875) * 0.875) == 32  # the centre crop is the trial's size
    # Decoded in the cache and uncached, the pixels are the same (one decode function).
    uncached = BatchLoader(data.train, CPU, resolutions=[16], cache_dir=None)
    for (a, la, _), (b, lb, _) in zip(_epoch(train, 16, 3), _epoch(uncached, 16, 3), strict=True):
        assert torch.equal(a, b) and torch.equal(la, lb)


def test_a_changed_file_invalidates_the_cache(tmp_path: Path, decode_cache_in_tmp: Path) -> None:
    _imagefolder(tmp_path)
    split = load_dataset({"name": "imagefolder"}, tmp_path).train
    assert isinstance(split, FolderSplit)
    assert BatchLoader(split, CPU, resolutions=[16]).images_decoded == len(split)
    before = sorted(decode_cache_in_tmp.glob("*.npy"))
    changed = split.files[2]
    Image.fromarray(np.full((30, 40, 3), 7, dtype=np.uint8)).save(changed)
    os.utime(changed, ns=(time.time_ns(), changed.stat().st_mtime_ns + 10**9))
    loader = BatchLoader(split, CPU, resolutions=[16])
    assert loader.images_decoded == len(split)
    after = sorted(decode_cache_in_tmp.glob("*.npy"))
    assert len(after) == 1 and after != before  # the stale array is gone
    images = torch.cat(
        [
            batch[0]
            for batch in loader.iterate(fixed_plan(6, 6, 16, generator=None, drop_last=False))
        ]
    )
    assert int(images[2].float().std()) == 0 and int(images[2, 0, 0, 0]) == 7


def _open_decoded_script(files: list[Path], size: int, cache: Path, go: Path) -> str:
    return textwrap.dedent(
        f"""
        import os, sys, time
        from pathlib import Path
        from vitcube.workers.decode_cache import open_decoded
        files = [Path(p) for p in {[str(f) for f in files]!r}]
        while not os.path.exists({str(go)!r}):
            time.sleep(0.001)
        decoded = open_decoded(files, [{size}], Path({str(cache)!r}), processes=1)
        array = decoded.arrays[{size}]
        print(decoded.images_decoded, int(array.astype("int64").sum()), flush=True)
        """
    )


def _many_images(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    files = []
    for i in range(n):
        path = folder / f"{i:04d}.jpg"
        Image.fromarray(rng.integers(0, 256, size=(96, 128, 3), dtype=np.uint8)).save(path)
        files.append(path)
    return files


@pytest.mark.slow
def test_two_processes_at_once_decode_once_and_read_the_same_array(tmp_path: Path) -> None:
    files = _many_images(tmp_path / "train" / "a", 400)
    cache, go = tmp_path / "cache", tmp_path / "go"
    script = _open_decoded_script(files, 64, cache, go)
    processes = [
        subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    time.sleep(1.0)  # both have imported and wait for the start signal
    go.touch()
    outputs = [p.communicate(timeout=120)[0].split() for p in processes]
    assert all(p.returncode == 0 for p in processes)
    assert sorted(int(out[0]) for out in outputs) == [0, len(files)]  # one decoded, one waited
    assert outputs[0][1] == outputs[1][1]
    expected = np.stack([decode_file(path, 64) for path in files])
    assert int(expected.astype(np.int64).sum()) == int(outputs[0][1])
    later = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    assert later.stdout.split() == ["0", outputs[0][1]]  # a later process only maps the file


@pytest.mark.slow
def test_a_build_killed_mid_write_leaves_no_usable_cache(tmp_path: Path) -> None:
    files = _many_images(tmp_path / "train" / "a", 400)
    cache, go = tmp_path / "cache", tmp_path / "go"
    go.touch()
    builder = subprocess.Popen(
        [sys.executable, "-c", _open_decoded_script(files, 64, cache, go)], stdout=subprocess.PIPE
    )
    deadline = time.monotonic() + 60
    while not list(cache.glob("*.tmp-*")):
        assert builder.poll() is None and time.monotonic() < deadline, "the build never started"
        time.sleep(0.001)
    builder.send_signal(signal.SIGKILL)
    builder.wait(timeout=30)
    assert list(cache.glob("*.npy")) == []  # only the temporary file, never the cache's name
    decoded = open_decoded(files, [64], cache, processes=1)
    assert decoded.images_decoded == len(files)  # rebuilt, not trusted
    assert np.array_equal(decoded.arrays[64][399], decode_file(files[399], 64))
    assert list(cache.glob("*.tmp-*")) == []  # the dead build's leftovers are removed


def test_cache_setting_and_loader_workers_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VITCUBE_DECODE_CACHE", "off")
    assert decode_cache_dir(tmp_path) is None
    monkeypatch.setenv("VITCUBE_DECODE_CACHE", str(tmp_path / "here"))
    assert decode_cache_dir(tmp_path) == tmp_path / "here"
    monkeypatch.delenv("VITCUBE_DECODE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert decode_cache_dir(tmp_path) == tmp_path / "xdg" / "vitcube" / "decoded"

    monkeypatch.delenv("VITCUBE_LOADER_WORKERS", raising=False)
    assert host_loader_workers(CPU, requested=3) == 3
    assert host_loader_workers(CPU) >= 1
    monkeypatch.setenv("VITCUBE_LOADER_WORKERS", "6")
    assert host_loader_workers(CPU, requested=3) == 6  # the host's setting wins
    monkeypatch.setenv("VITCUBE_LOADER_WORKERS", "many")
    with pytest.raises(ValueError, match="VITCUBE_LOADER_WORKERS must be a whole number"):
        host_loader_workers(CPU)


def test_trials_on_an_image_folder_train_from_the_cache(
    tmp_path: Path, decode_cache_in_tmp: Path
) -> None:
    from vitcube.models import ArchConfig
    from vitcube.workers.trainer import TrainingConfig, run_trial

    _imagefolder(tmp_path / "data", per_class=4)
    data = load_dataset({"name": "imagefolder"}, tmp_path / "data")
    arch = (
        ArchConfig.from_dict(
            {
                "family": "mobilevit_v2",
                "width": 0.5,
                "resolution": 32,
                "num_classes": 2,
                "dropped_stages": [4, 5],
            }
        )
        .scale()
        .to_dict()
    )
    config = TrainingConfig.from_dict({"epochs": 2, "batch_size": 4, "eval_batch_size": 4})
    first = run_trial(arch, data, config=config, seed=0, device=CPU)
    sizes = sorted(int(p.name.split("-")[-1][:-6]) for p in decode_cache_in_tmp.glob("*.npy"))
    assert sizes == [32, load_size(32, 0.875)]  # train at the crop's size, val at its source's
    assert isinstance(data.train, FolderSplit) and isinstance(data.val, FolderSplit)
    _make_undecodable(data.train.files + data.val.files)
    second = run_trial(arch, data, config=config, seed=0, device=CPU)  # a decode would raise
    assert second.curve == [
        {**point, "epoch_time_s": second.curve[i]["epoch_time_s"]}
        for i, point in enumerate(first.curve)
    ]


def test_a_full_disk_falls_back_to_decoding_every_epoch(
    tmp_path: Path, decode_cache_in_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vitcube.workers import decode_cache

    _imagefolder(tmp_path)
    split = load_dataset({"name": "imagefolder"}, tmp_path).train
    assert isinstance(split, FolderSplit)
    # No disk here has an exabyte free: the cache must not start writing.
    monkeypatch.setattr(decode_cache, "FREE_SPACE_MARGIN_BYTES", 1 << 60)
    loader = BatchLoader(split, CPU, resolutions=[16])
    assert loader.images_decoded == 0 and list(decode_cache_in_tmp.glob("*.npy*")) == []
    ((images, _, indices), *_) = _epoch(loader, 16, seed=0)
    assert torch.equal(images, _expected(split, 16)[indices])


def test_loader_processes_gather_from_the_cache_and_persist_across_epochs(tmp_path: Path) -> None:
    # On a GPU box the training split is gathered from the cache by DataLoader processes (the
    # CPU path maps it in this process): the same gather, run here through two processes.
    from vitcube.workers.batches import Batch, _CachedBatches

    _imagefolder(tmp_path, per_class=5)
    split = load_dataset({"name": "imagefolder"}, tmp_path).train
    assert isinstance(split, FolderSplit)
    decoded = open_decoded(split.files, [16], tmp_path / "cache")
    labels = torch.tensor(split.labels)
    source = _CachedBatches(decoded.paths, labels, 1.0)
    batches = [Batch((7, 0, 3), 16), Batch((9, 2), 16)]
    loader = torch.utils.data.DataLoader(
        source,
        batch_size=None,
        sampler=batches,
        num_workers=2,
    )
    expected = _expected(split, 16)
    received = list(loader)
    assert len(received) == len(batches)
    for (images, got), batch in zip(received, batches, strict=True):
        assert torch.equal(images, expected[list(batch.indices)])
        assert got.tolist() == [split.labels[i] for i in batch.indices]

    # The uncached path's persistent processes follow each epoch's new plan.
    persistent = BatchLoader(split, CPU, resolutions=[16], num_workers=2, cache_dir=None)
    for seed in (0, 1):
        for images, _, indices in _epoch(persistent, 16, seed):
            assert torch.equal(images, expected[indices])
    persistent.close()


class _Interrupted(Exception):
    pass


def test_an_interrupt_ends_the_build_and_the_wait_leaving_no_cache(tmp_path: Path) -> None:
    files = _many_images(tmp_path / "train" / "a", 200)
    cache = tmp_path / "cache"
    chunks_done = []

    def interrupt_after_one_chunk() -> None:
        chunks_done.append(1)
        raise _Interrupted

    with pytest.raises(_Interrupted):
        open_decoded(files, [32], cache, processes=1, check=interrupt_after_one_chunk)
    assert chunks_done == [1]
    assert [p.name for p in cache.iterdir() if not p.name.endswith(".lock")] == []

    # Another process holds the lock (builds): the waiting one gives up when told to.
    decoded = open_decoded(files[:3], [32], cache, processes=1)  # a lock file to hold
    assert decoded.images_decoded == 3
    lock_path = next(cache.glob("*.lock"))
    waits = []

    def interrupt_on_third_poll() -> None:
        waits.append(1)
        if len(waits) == 3:
            raise _Interrupted

    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys, time\n"
            f"handle = open({str(lock_path)!r}, 'a')\n"
            "fcntl.flock(handle.fileno(), fcntl.LOCK_EX)\n"
            "print('locked', flush=True)\n"
            "time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(_Interrupted):
            open_decoded(files, [32], cache, processes=1, check=interrupt_on_third_poll)
        assert len(waits) == 3 and not list(cache.glob("*.tmp-*"))
    finally:
        holder.kill()
        holder.wait(timeout=30)
    # The lock is the kernel's (flock): the killed holder released it.
    assert open_decoded(files, [32], cache, processes=1).images_decoded == len(files)
