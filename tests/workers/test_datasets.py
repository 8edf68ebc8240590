"""Each dataset loader on small files written in the real on-disk formats, and clear errors."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vitcube.workers.batches import BatchLoader, fixed_plan
from vitcube.workers.datasets import DatasetError, FolderImages, load_dataset


def _write_cifar_batch(path: Path, n: int, label_key: str, num_classes: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    batch = {
        b"batch_label": b"testing batch",
        b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
        label_key.encode(): rng.integers(0, num_classes, size=n).tolist(),
        b"filenames": [f"img{i}.png".encode() for i in range(n)],
    }
    with path.open("wb") as handle:
        pickle.dump(batch, handle, protocol=2)


@pytest.fixture
def cifar10_root(tmp_path: Path) -> Path:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for i in range(1, 6):
        _write_cifar_batch(folder / f"data_batch_{i}", 6, "labels", 10, seed=i)
    _write_cifar_batch(folder / "test_batch", 4, "labels", 10, seed=9)
    return tmp_path


def test_digits_is_a_fixed_stratified_split() -> None:
    first = load_dataset({"name": "digits"})
    second = load_dataset({"name": "digits"})
    assert first.num_classes == 10
    assert len(first.train) + len(first.val) == 1797
    assert 340 <= len(first.val) <= 380
    assert torch.equal(first.val.labels, second.val.labels)  # type: ignore[union-attr]
    assert first.train.images.shape[1:] == (3, 8, 8)  # type: ignore[union-attr]
    assert first.train.images.dtype == torch.uint8  # type: ignore[union-attr]
    assert int(first.train.images.max()) == 255  # type: ignore[union-attr]
    assert set(first.val.labels.tolist()) == set(range(10))  # type: ignore[union-attr]


def test_cifar10_pickle_batches(cifar10_root: Path) -> None:
    data = load_dataset({"name": "cifar10"}, cifar10_root)
    assert data.num_classes == 10
    assert data.train.images.shape == (30, 3, 32, 32)  # type: ignore[union-attr]
    assert data.val.images.shape == (4, 3, 32, 32)  # type: ignore[union-attr]
    # Channel-major rows: the first 1024 bytes are the red plane.
    with (cifar10_root / "cifar-10-batches-py" / "data_batch_1").open("rb") as handle:
        raw = pickle.load(handle, encoding="bytes")
    red = np.asarray(raw[b"data"][0][:1024]).reshape(32, 32)
    assert np.array_equal(data.train.images[0, 0].numpy(), red)  # type: ignore[union-attr]
    assert data.train.labels[0].item() == raw[b"labels"][0]  # type: ignore[union-attr]


def test_cifar100_uses_fine_labels(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    _write_cifar_batch(folder / "train", 12, "fine_labels", 100, seed=1)
    _write_cifar_batch(folder / "test", 5, "fine_labels", 100, seed=2)
    data = load_dataset({"name": "cifar100"}, tmp_path)
    assert data.num_classes == 100
    assert len(data.train) == 12 and len(data.val) == 5


def test_cifar_missing_and_malformed_name_the_path(tmp_path: Path, cifar10_root: Path) -> None:
    with pytest.raises(DatasetError, match="needs --data-root"):
        load_dataset({"name": "cifar10"}, None)
    with pytest.raises(DatasetError, match=r"cifar-10-batches-py.*data_batch_1"):
        load_dataset({"name": "cifar10"}, tmp_path / "nothing-here")
    (cifar10_root / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"not a pickle at all")
    with pytest.raises(DatasetError, match=r"data_batch_3 is not a CIFAR python-pickle batch"):
        load_dataset({"name": "cifar10"}, cifar10_root)
    (cifar10_root / "cifar-10-batches-py" / "test_batch").unlink()
    _write_cifar_batch(cifar10_root / "cifar-10-batches-py" / "data_batch_3", 6, "labels", 10, 3)
    with pytest.raises(DatasetError, match="test_batch is missing"):
        load_dataset({"name": "cifar10"}, cifar10_root)


def _write_images(root: Path, split: str, classes: dict[str, int], size: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    for name, count in classes.items():
        folder = root / split / name
        folder.mkdir(parents=True)
        for i in range(count):
            pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
            suffix = ".png" if i % 2 else ".jpg"
            Image.fromarray(pixels).save(folder / f"{i}{suffix}")


def test_imagefolder_decodes_with_pillow_in_dataloader_workers(tmp_path: Path) -> None:
    _write_images(tmp_path, "train", {"cat": 3, "dog": 2, "emu": 2}, (40, 30))
    _write_images(tmp_path, "val", {"cat": 1, "emu": 2}, (20, 50))
    (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image")
    data = load_dataset({"name": "imagefolder", "num_classes": 3}, tmp_path)
    assert data.num_classes == 3 and len(data.train) == 7 and len(data.val) == 3
    assert sorted(set(data.val.labels)) == [0, 2]  # type: ignore[union-attr]
    image, label = FolderImages(data.train, 24)[0]  # type: ignore[arg-type]
    assert image.shape == (3, 24, 24) and image.dtype == torch.uint8 and label == 0
    # No decode cache: DataLoader processes decode every batch at the size it asks for.
    loader = BatchLoader(
        data.train, torch.device("cpu"), resolutions=[24], num_workers=2, cache_dir=None
    )
    plan = fixed_plan(len(loader), 4, 24, generator=None, drop_last=False)
    batches = list(loader.iterate(plan))
    assert [b[0].shape for b in batches] == [(4, 3, 24, 24), (3, 3, 24, 24)]
    assert torch.cat([b[1] for b in batches]).tolist() == [0, 0, 0, 1, 1, 2, 2]


def test_imagefolder_layout_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"train is not a directory; expected .*train/<class>"):
        load_dataset({"name": "imagefolder"}, tmp_path)
    with pytest.raises(DatasetError, match=r"nowhere is not a directory"):
        load_dataset({"name": "imagefolder", "path": "nowhere"}, tmp_path)
    _write_images(tmp_path, "train", {"cat": 2}, (8, 8))
    _write_images(tmp_path, "val", {"cat": 1, "cow": 1}, (8, 8))
    with pytest.raises(DatasetError, match=r"val has classes missing from .*train: cow"):
        load_dataset({"name": "imagefolder"}, tmp_path)
    for image in (tmp_path / "val" / "cow").iterdir():
        image.unlink()
    (tmp_path / "val" / "cow").rmdir()
    with pytest.raises(DatasetError, match="has 1 classes but the search says num_classes 5"):
        load_dataset({"name": "imagefolder", "num_classes": 5}, tmp_path)
    for image in (tmp_path / "val" / "cat").iterdir():
        image.unlink()
    with pytest.raises(DatasetError, match="val holds no images"):
        load_dataset({"name": "imagefolder"}, tmp_path)


def test_corrupt_image_names_the_file(tmp_path: Path) -> None:
    _write_images(tmp_path, "train", {"a": 2, "b": 2}, (8, 8))
    _write_images(tmp_path, "val", {"a": 1}, (8, 8))
    broken = tmp_path / "train" / "b" / "9.png"
    broken.write_bytes(b"\x89PNG truncated")
    data = load_dataset({"name": "imagefolder"}, tmp_path)
    loader = BatchLoader(
        data.train, torch.device("cpu"), resolutions=[8], num_workers=1, cache_dir=None
    )
    plan = fixed_plan(len(loader), 8, 8, generator=None, drop_last=False)
    with pytest.raises(DatasetError, match=r"9\.png cannot be decoded"):
        list(loader.iterate(plan))
    # Building the decode cache names the same file, and leaves no cache behind.
    cache = tmp_path / "cache"
    with pytest.raises(DatasetError, match=r"9\.png cannot be decoded"):
        BatchLoader(data.train, torch.device("cpu"), resolutions=[8], cache_dir=cache)
    assert [p.name for p in cache.iterdir() if not p.name.endswith(".lock")] == []


def test_unknown_dataset_is_refused() -> None:
    with pytest.raises(DatasetError, match="unknown dataset 'mnist'"):
        load_dataset({"name": "mnist"})
