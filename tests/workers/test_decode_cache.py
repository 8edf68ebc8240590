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
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from vitcube.workers.batches import Batch, BatchLoader, fixed_plan, host_loader_workers, load_size
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
    from vitcube.workers.recipe import TrainingConfig
    from vitcube.workers.runner import run_trial

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
    arrays = {p.name.split("-")[-2]: p for p in decode_cache_in_tmp.glob("*px.npy")}
    sizes = sorted(int(p.name.split("-")[-1][:-6]) for p in arrays.values())
    assert sizes == [32, load_size(32, 0.875)]  # train at the crop's size, val at its source's
    # Training reads whole images (with their aspects), evaluation centre squares.
    assert sorted(arrays) == ["centre", "whole"] and arrays["whole"].name.endswith("-32px.npy")
    assert len(list(decode_cache_in_tmp.glob("*-whole-aspect.npy"))) == 1
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


# -- training crops over the whole image --------------------------------------------------------

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def _wide_folder(root: Path) -> None:
    """A 300 x 100 image, red | green | blue thirds, as the only image of train/ and of val/."""
    pixels = np.zeros((100, 300, 3), dtype=np.uint8)
    for third, colour in enumerate((RED, GREEN, BLUE)):
        pixels[:, 100 * third : 100 * (third + 1)] = colour
    for split in ("train", "val"):
        (root / split / "a").mkdir(parents=True)
        Image.fromarray(pixels).save(root / split / "a" / "wide.png")


def _colour_share(crops: torch.Tensor, channel: int) -> float:
    """The share of crops (`B x 3 x H x W` floats) with some pixel of the pure colour `channel`."""
    others = [c for c in range(3) if c != channel]
    pure = (crops[:, channel] > 0.8) & (crops[:, others] < 0.2).all(dim=1)
    return float(pure.flatten(1).any(dim=1).float().mean())


def test_training_crops_reach_the_whole_width_of_a_wide_image(tmp_path: Path) -> None:
    from vitcube.workers.augment import AugmentOptions, TrainAugment

    _wide_folder(tmp_path / "data")
    data = load_dataset({"name": "imagefolder"}, tmp_path / "data")
    copies = Batch((0,) * 300, 32)  # one image, cropped 300 times
    options = AugmentOptions(crop_interpolation="bicubic")
    shares = {}
    for fit in ("whole", "centre"):
        loader = BatchLoader(data.train, CPU, resolutions=[32], fit=fit, cache_dir=tmp_path / "c")
        ((images, labels),) = loader.iterate([copies])
        aspect = loader.aspects(copies)
        augment = TrainAugment(options, num_classes=1, seed=0)
        crops, _ = augment(images, labels, 32, aspect=aspect)
        shares[fit] = [_colour_share(crops, channel) for channel in range(3)]
        if fit == "whole":
            assert torch.allclose(aspect, torch.full((300,), 3.0))
    red, green, blue = shares["whole"]
    assert red > 0.2 and blue > 0.2 and green > 0.5
    # The centre square (the old training path) holds only the green third: no crop sees more.
    assert shares["centre"] == [0.0, 1.0, 0.0]


def test_a_square_crop_of_a_squeezed_wide_image_is_not_distorted(tmp_path: Path) -> None:
    from vitcube.workers.augment import random_resized_crop

    # A 600 x 200 checkerboard of 20 px squares: 30 across, 10 down.
    rows, cols = np.meshgrid(np.arange(200), np.arange(600), indexing="ij")
    board = (((rows // 20 + cols // 20) % 2) * 255).astype(np.uint8)
    (tmp_path / "train" / "a").mkdir(parents=True)
    Image.fromarray(np.repeat(board[..., None], 3, axis=2)).save(tmp_path / "train" / "a" / "b.png")
    split = FolderSplit((tmp_path / "train" / "a" / "b.png",), (0,), tmp_path)
    loader = BatchLoader(split, CPU, resolutions=[120], fit="whole", cache_dir=tmp_path / "c")
    batch = Batch((0,) * 8, 120)
    ((squeezed, _),) = loader.iterate([batch])
    assert squeezed.shape == (8, 3, 120, 120)  # 4 px wide and 12 px tall squares in the tensor

    def transitions(crops: torch.Tensor) -> tuple[int, int]:
        """Black/white changes along the middle row and the middle column of each crop."""
        dark = crops[:, 0] < 0.5
        across = (dark[:, 20, 1:] != dark[:, 20, :-1]).sum(dim=1)
        down = (dark[:, 1:, 20] != dark[:, :-1, 20]).sum(dim=1)
        return int(across.max()), int(down.min())

    square: dict[str, Any] = {"scale": (1.0, 1.0), "ratio": (1.0, 1.0), "hflip": False}
    # A square crop in true pixels is a third of the width, the whole height: 10 x 10 squares.
    true = random_resized_crop(
        squeezed,
        40,
        aspect=loader.aspects(batch),
        generator=torch.Generator().manual_seed(0),
        **square,
    )
    across, down = transitions(true)
    assert down >= 9 and across <= 10 and abs(across - down) <= 1
    # Cropping the tensor's own pixels (as if the image were square) squashes the squares.
    naive = random_resized_crop(squeezed, 40, generator=torch.Generator().manual_seed(0), **square)
    assert transitions(naive)[0] > 2 * transitions(naive)[1]


def test_validation_keeps_the_centre_crop(tmp_path: Path) -> None:
    _wide_folder(tmp_path / "data")
    data = load_dataset({"name": "imagefolder"}, tmp_path / "data")
    # As the trainer builds its validation loader (the default fit: centre squares).
    val = BatchLoader(data.val, CPU, resolutions=[32], crop_fraction=0.875, resident=True)
    ((images, _, _),) = _epoch(val, 32, seed=0)
    assert images.shape == (1, 3, load_size(32, 0.875), load_size(32, 0.875))
    # The middle third only (the resampling filter bleeds a little of its neighbours in).
    assert int(images[:, 1].min()) >= 200 and int(images[:, [0, 2]].max()) <= 40
    assert val.aspects(Batch((0,), 32)).tolist() == [1.0]


def test_the_cache_keeps_the_aspect_ratios_and_rebuilds_an_old_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vitcube.workers import decode_cache

    folder = tmp_path / "train" / "a"
    folder.mkdir(parents=True)
    files = []
    for name, (width, height) in {"wide": (90, 30), "tall": (20, 40), "square": (25, 25)}.items():
        files.append(folder / f"{name}.png")
        Image.new("RGB", (width, height), (9, 9, 9)).save(files[-1])
    cache = tmp_path / "cache"

    monkeypatch.setattr(decode_cache, "CACHE_FORMAT_VERSION", 1)
    old = open_decoded(files, [16], cache, fit="whole", processes=1)
    assert old.images_decoded == 3
    monkeypatch.undo()

    decoded = open_decoded(files, [16], cache, fit="whole", processes=1)
    assert decoded.images_decoded == 3  # another version's cache is not reused
    assert not old.paths[16].exists() and decoded.paths[16].exists()  # and is deleted
    assert decoded.aspects.dtype == np.float32
    assert decoded.aspects.tolist() == pytest.approx([3.0, 0.5, 1.0])
    (aspect_file,) = cache.glob("*-whole-aspect.npy")
    assert np.array_equal(np.load(aspect_file), decoded.aspects)
    assert decoded.arrays[16].shape == (3, 3, 16, 16)  # each image whole, squeezed

    _make_undecodable(tuple(files))  # a later open reads the aspects from the cache
    again = open_decoded(files, [16], cache, fit="whole", processes=1)
    assert again.images_decoded == 0 and again.aspects.tolist() == decoded.aspects.tolist()
    # Arrays without their aspect file (a build that died before its last rename) are rebuilt.
    aspect_file.unlink()
    with pytest.raises(decode_cache.ImageDecodeError):
        open_decoded(files, [16], cache, fit="whole", processes=1)
