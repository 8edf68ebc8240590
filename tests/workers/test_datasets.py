"""Each dataset loader on small files written in the real on-disk formats, and clear errors."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from vitcube.workers.batches import BatchLoader, fixed_plan
from vitcube.workers.datasets import DatasetError, FolderImages, FolderSplit, load_dataset


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


# --- TinyImageNet as it unpacks -----------------------------------------------------------------

# Written out of sorted order, so a loader that indexed wnids as it met them would disagree.
TINY_WNIDS = {"n03000000": (200, 30, 30), "n01000000": (30, 200, 30), "n02000000": (30, 30, 200)}
TINY_TRAIN_PER_CLASS = 4
# val file -> wnid: two images per class, interleaved as TinyImageNet's are.
TINY_VAL = {f"val_{i}.JPEG": wnid for i, wnid in enumerate(list(TINY_WNIDS) * 2)}


def _tiny_image(path: Path, colour: tuple[int, int, int], seed: int) -> None:
    """A 64x64 JPEG of one class's colour plus a little noise (classes tell apart when decoded)."""
    noise = np.random.default_rng(seed).integers(-20, 20, size=(64, 64, 3))
    pixels = np.clip(np.asarray(colour) + noise, 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, "JPEG")


def _tinyimagenet(root: Path) -> Path:
    """A tree shaped as tiny-imagenet-200.zip unpacks: 3 wnids, 4 train and 2 val images each."""
    for w, (wnid, colour) in enumerate(TINY_WNIDS.items()):
        images = root / "train" / wnid / "images"
        images.mkdir(parents=True)
        boxes = []
        for i in range(TINY_TRAIN_PER_CLASS):
            _tiny_image(images / f"{wnid}_{i}.JPEG", colour, seed=10 * w + i)
            boxes.append(f"{wnid}_{i}.JPEG\t0\t0\t63\t63")
        (root / "train" / wnid / f"{wnid}_boxes.txt").write_text("\n".join(boxes) + "\n")
    (root / "val" / "images").mkdir(parents=True)
    lines = []
    for i, (name, wnid) in enumerate(TINY_VAL.items()):
        _tiny_image(root / "val" / "images" / name, TINY_WNIDS[wnid], seed=100 + i)
        lines.append(f"{name}\t{wnid}\t{i}\t{i + 1}\t{40 + i}\t{50 + i}")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    (root / "test" / "images").mkdir(parents=True)  # unlabelled: never read
    _tiny_image(root / "test" / "images" / "test_0.JPEG", (0, 0, 0), seed=999)
    (root / "wnids.txt").write_text("\n".join(TINY_WNIDS) + "\n")
    (root / "words.txt").write_text("".join(f"{w}\tthing {w}\n" for w in TINY_WNIDS))
    return root


def _mean_colour_labels(split: FolderSplit) -> list[int]:
    """The class each image's decoded colour says it is (its brightest channel's wnid index)."""
    by_channel = {int(np.argmax(c)): i for i, (_, c) in enumerate(sorted(TINY_WNIDS.items()))}
    images = FolderImages(split, 16)
    return [
        by_channel[int(images[i][0].float().mean(dim=(1, 2)).argmax())] for i in range(len(images))
    ]


@pytest.mark.parametrize("layout", [None, "auto", "tinyimagenet"])
def test_tinyimagenet_as_it_unpacks_has_the_same_classes_on_both_splits(
    tmp_path: Path, layout: str | None
) -> None:
    _tinyimagenet(tmp_path / "tiny-imagenet-200")
    spec = {"name": "imagefolder", "num_classes": 3, "path": "tiny-imagenet-200"}
    if layout is not None:
        spec["layout"] = layout
    data = load_dataset(spec, tmp_path)
    assert data.num_classes == 3
    assert len(data.train) == 3 * TINY_TRAIN_PER_CLASS and len(data.val) == len(TINY_VAL)
    assert isinstance(data.train, FolderSplit) and isinstance(data.val, FolderSplit)
    # Class i is the i-th wnid in sorted order, on train (from the folders) and val (from the
    # annotations) alike; the pixels of every image agree with its label.
    assert data.train.labels == (0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2)
    assert all(f.parent.name == "images" for f in data.train.files + data.val.files)
    assert data.val.labels == tuple(
        sorted(TINY_WNIDS).index(TINY_VAL[f.name]) for f in data.val.files
    )
    assert sorted(set(data.val.labels)) == [0, 1, 2]
    assert _mean_colour_labels(data.train) == list(data.train.labels)
    assert _mean_colour_labels(data.val) == list(data.val.labels)
    assert not any("test" in f.parts for f in data.train.files + data.val.files)


def test_tinyimagenet_trains_through_the_decode_cache(tmp_path: Path) -> None:
    from vitcube.models import ArchConfig
    from vitcube.workers.recipe import TrainingConfig
    from vitcube.workers.runner import run_trial

    data = load_dataset({"name": "imagefolder"}, _tinyimagenet(tmp_path / "tiny"))
    loader = BatchLoader(
        data.train, torch.device("cpu"), resolutions=[32], cache_dir=tmp_path / "cache"
    )
    plan = fixed_plan(len(loader), 5, 32, generator=None, drop_last=False)
    batches = list(loader.iterate(plan))
    assert [tuple(images.shape) for images, _ in batches] == [
        (5, 3, 32, 32),
        (5, 3, 32, 32),
        (2, 3, 32, 32),
    ]
    assert torch.cat([labels for _, labels in batches]).tolist() == list(data.train.labels)
    assert list((tmp_path / "cache").glob("*px.npy"))  # decoded once, into the cache

    arch = ArchConfig.from_dict(
        {
            "family": "mobilevit_v2",
            "width": 0.5,
            "resolution": 32,
            "num_classes": 3,
            "dropped_stages": [4, 5],
        }
    ).scale()
    config = TrainingConfig.from_dict({"epochs": 1, "batch_size": 4, "eval_batch_size": 6})
    result = run_trial(arch.to_dict(), data, config=config, seed=0, device=torch.device("cpu"))
    assert [point["epoch"] for point in result.curve] == [1]
    assert 0.0 <= result.curve[0]["val_top1"] <= 1.0


EXPECTED_TINY = "expected TinyImageNet as tiny-imagenet-200.zip unpacks"


def _drop_annotations(root: Path) -> None:
    (root / "val" / "val_annotations.txt").unlink()


def _annotate_unknown_wnid(root: Path) -> None:
    path = root / "val" / "val_annotations.txt"
    lines = path.read_text().splitlines()
    lines[2] = lines[2].replace(lines[2].split("\t")[1], "n09999999")
    path.write_text("\n".join(lines) + "\n")


def _annotate_missing_file(root: Path) -> None:
    (root / "val" / "images" / "val_4.JPEG").unlink()


def _annotate_nothing(root: Path) -> None:
    _tiny_image(root / "val" / "images" / "val_99.JPEG", (0, 0, 0), seed=5)


def _garble_a_line(root: Path) -> None:
    path = root / "val" / "val_annotations.txt"
    path.write_text(path.read_text() + "val_7.JPEG\n")


def _annotate_twice(root: Path) -> None:
    path = root / "val" / "val_annotations.txt"
    path.write_text(path.read_text() + "val_1.JPEG\tn01000000\t0\t0\t1\t1\n")


def _flatten_a_wnid(root: Path) -> None:
    """n02000000's images moved up out of images/: the class-folder layout for one class."""
    images = root / "train" / "n02000000" / "images"
    for path in images.iterdir():
        path.rename(images.parent / path.name)
    images.rmdir()


def _val_as_class_folders(root: Path) -> None:
    for name, wnid in TINY_VAL.items():
        (root / "val" / wnid).mkdir(exist_ok=True)
        (root / "val" / "images" / name).rename(root / "val" / wnid / name)
    (root / "val" / "images").rmdir()
    _drop_annotations(root)


def _drop_a_train_folder(root: Path) -> None:
    for path in (root / "train" / "n03000000" / "images").iterdir():
        path.unlink()
    (root / "train" / "n03000000" / "images").rmdir()
    (root / "train" / "n03000000" / "n03000000_boxes.txt").unlink()
    (root / "train" / "n03000000").rmdir()


@pytest.mark.parametrize(
    ("break_it", "layout", "message"),
    [
        (
            _drop_annotations,
            "auto",
            rf"val/images has no val_annotations\.txt beside it to label its images; "
            rf"{EXPECTED_TINY}",
        ),
        (
            _annotate_unknown_wnid,
            "auto",
            rf"val_annotations\.txt names 1 wnids that \S*/train has no folder for: "
            rf"n09999999 \(line 3\); {EXPECTED_TINY}",
        ),
        (
            _annotate_missing_file,
            "tinyimagenet",
            rf"val_annotations\.txt names 1 images that \S*/val/images does not hold "
            rf"\(val_4\.JPEG\); {EXPECTED_TINY}",
        ),
        (
            _annotate_nothing,
            "auto",
            r"val/images holds 1 images with no line in val_annotations\.txt \(val_99\.JPEG\)",
        ),
        (
            _garble_a_line,
            "auto",
            r"val_annotations\.txt line 7 is 'val_7\.JPEG': expected tab-separated file name, "
            r"wnid, then the box",
        ),
        (_annotate_twice, "auto", r"line 7 labels val_1\.JPEG a second time"),
        (
            _flatten_a_wnid,
            "tinyimagenet",
            rf"train: 1 of 3 wnid folders have no images/ \(n02000000\); {EXPECTED_TINY}",
        ),
        (
            _flatten_a_wnid,
            "auto",
            r"mixes the two imagefolder layouts: found train/<class>/images/ in 2 of 3 class "
            r"folders \(not in n02000000\), val/images/, val/val_annotations\.txt; expected "
            r"either <data-root>/train/<class>/<image>.*; or TinyImageNet",
        ),
        (
            _val_as_class_folders,
            "auto",
            r"mixes the two imagefolder layouts: found train/<class>/images/ in 3 of 3 class "
            r"folders, val class folders \(n01000000, n02000000, n03000000\)",
        ),
        (
            _val_as_class_folders,
            "tinyimagenet",
            r"val/images is not a directory \(val/ holds n01000000, n02000000, n03000000\)",
        ),
        (
            lambda root: None,
            "folders",
            r"train holds no images \(its class folders hold images/: TinyImageNet's layout, "
            r"which layout auto reads\); expected <data-root>/train/<class>/<image>",
        ),
        (
            _drop_a_train_folder,
            "auto",
            r"wnids\.txt lists 3 wnids and \S*/train has 2 folders: 1 listed without a train "
            r"folder \(n03000000\)",
        ),
        (lambda root: None, "tiny", r"layout must be one of auto, folders, tinyimagenet"),
    ],
)
def test_a_malformed_tinyimagenet_says_what_was_expected(
    tmp_path: Path, break_it: Any, layout: str, message: str
) -> None:
    root = _tinyimagenet(tmp_path / "tiny")
    break_it(root)
    with pytest.raises(DatasetError, match=message):
        load_dataset({"name": "imagefolder", "layout": layout}, root)


def test_class_folders_are_not_mistaken_for_tinyimagenet(tmp_path: Path) -> None:
    # A class called "images" is a class, not TinyImageNet's val/images/.
    _write_images(tmp_path, "train", {"images": 2, "other": 2}, (8, 8))
    _write_images(tmp_path, "val", {"images": 1, "other": 1}, (8, 8))
    data = load_dataset({"name": "imagefolder"}, tmp_path)
    assert data.num_classes == 2 and data.val.labels == (0, 1)
    with pytest.raises(DatasetError, match=r"train: 2 of 2 wnid folders have no images/"):
        load_dataset({"name": "imagefolder", "layout": "tinyimagenet"}, tmp_path)
