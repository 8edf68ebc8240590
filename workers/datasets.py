"""Datasets a worker trains on, loaded without torchvision.

`load_dataset(spec, data_root)` turns a trial's `dataset` block into an `ImageDataset` of two
splits. Small datasets (`digits`, the generated `shapes`, `cifar10`, `cifar100`) are held whole
in memory as uint8 tensors `[N, 3, H, W]`; `imagefolder` (class folders, or TinyImageNet as it
unpacks: `load_imagefolder`) is a list of files, decoded with Pillow once per host into a shared
memory-mapped cache (`workers.decode_cache`) or, where that is off, in DataLoader worker
processes every epoch (`FolderImages`). Augmentation (random resized crop, flip, resizing to the
trial's resolution) happens later, with torch on the training device (`workers.augment`).

Anything missing or malformed raises `DatasetError` naming the path and the expected layout, so
the worker fails the trial with `retry: false` instead of crashing.

The dataset names and fixed class counts come from vitcube.contract (the server checks a search's
dataset against the same table). Imports torch, numpy, Pillow, scikit-learn, vitcube.contract,
workers.decode_cache and workers.shapes.
"""

from __future__ import annotations

import importlib.util
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vitcube.contract import DATASET_CLASSES, DATASETS, IMAGEFOLDER_LAYOUTS
from vitcube.workers import shapes
from vitcube.workers.decode_cache import (
    Fit,
    ImageDecodeError,
    decode_cache_dir,
    decode_image,
    image_aspect,
)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".ppm")

CIFAR10_LAYOUT = (
    "<data-root>/cifar-10-batches-py/ with the python-pickle batches data_batch_1 … data_batch_5 "
    "and test_batch (cifar-10-python.tar.gz extracted)"
)
CIFAR100_LAYOUT = (
    "<data-root>/cifar-100-python/ with the python-pickle files train and test "
    "(cifar-100-python.tar.gz extracted)"
)
IMAGEFOLDER_LAYOUT = (
    "<data-root>/train/<class>/<image> and <data-root>/val/<class>/<image> "
    f"(images ending in {', '.join(IMAGE_SUFFIXES)}; val classes must also exist in train)"
)
TINYIMAGENET_ANNOTATIONS = "val_annotations.txt"
TINYIMAGENET_LAYOUT = (
    "TinyImageNet as tiny-imagenet-200.zip unpacks: <data-root>/train/<wnid>/images/<image> "
    "and <data-root>/val/images/<image> labelled by <data-root>/val/val_annotations.txt "
    "(one line per image, tab-separated: file name, wnid, then the box; every wnid a train "
    "folder, every file in val/images/)"
)


class DatasetError(ValueError):
    """The dataset is missing or malformed; the message names the path and the expected layout."""


@dataclass(frozen=True)
class TensorSplit:
    """A split held in memory.

    images: a `N x 3 x H x W` uint8 tensor; labels: a `N` int64 tensor.
    """

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass(frozen=True)
class FolderSplit:
    """A split of image files, decoded into the host's cache or on demand (`FolderImages`).

    root: the dataset's folder (the one holding train/ and val/), a fallback cache location.
    """

    files: tuple[Path, ...]
    labels: tuple[int, ...]
    root: Path | None = None

    def __len__(self) -> int:
        return len(self.files)


Split = TensorSplit | FolderSplit


@dataclass(frozen=True)
class ImageDataset:
    """Two splits and how to evaluate them.

    val_crop_fraction: the centre crop taken before resizing for evaluation (ImageNet-style
    0.875 for photographs, 1.0 for whole small images such as digits and CIFAR).
    """

    name: str
    num_classes: int
    train: Split
    val: Split
    val_crop_fraction: float = 1.0


def load_dataset(spec: dict[str, Any], data_root: Path | str | None = None) -> ImageDataset:
    """Load the dataset a trial names.

    spec: the trial's `dataset` block, `{"name": "digits" | "cifar10" | "cifar100" |
    "imagefolder", "path" (or "root"): optional sub-directory of data_root, "num_classes":
    optional, checked against what is on disk}`; an imagefolder also takes `"layout"`:
    `"folders"`, `"tinyimagenet"` or `"auto"` (the default: whichever is on disk).
    """
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise DatasetError(f"dataset must be an object with a 'name' (one of {DATASETS}): {spec!r}")
    name = spec["name"]
    if name == "digits":
        return load_digits()
    if name == "shapes":
        return load_shapes(spec)
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; this worker knows {', '.join(DATASETS)}")
    root = _resolve_root(name, spec, data_root)
    if name == "cifar10":
        data = load_cifar10(root)
    elif name == "cifar100":
        data = load_cifar100(root)
    else:
        data = load_imagefolder(root, layout=_imagefolder_layout(spec))
    expected = spec.get("num_classes")
    if expected is not None and expected != data.num_classes:
        raise DatasetError(
            f"dataset {name!r} at {root} has {data.num_classes} classes but the search says "
            f"num_classes {expected}; fix the search or the folders"
        )
    return data


def _resolve_root(name: str, spec: dict[str, Any], data_root: Path | str | None) -> Path:
    layout = {
        "cifar10": CIFAR10_LAYOUT,
        "cifar100": CIFAR100_LAYOUT,
        "imagefolder": _expected(str(spec.get("layout") or "auto")),
    }[name]
    if data_root is None:
        raise DatasetError(f"dataset {name!r} needs --data-root DIR; expected {layout}")
    root = Path(data_root).expanduser()
    sub = spec.get("path") or spec.get("root")
    if sub:
        root = root / str(sub)
    if not root.is_dir():
        raise DatasetError(f"dataset {name!r}: {root} is not a directory; expected {layout}")
    return root


# --- digits -----------------------------------------------------------------------------------

DIGITS_VAL_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0


def load_digits() -> ImageDataset:
    """scikit-learn's handwritten digits (1,797 8×8 grey images, 10 classes), shipped in the wheel.

    The split is fixed (seed 0, 20 % validation, stratified by class) so every trial of every
    search sees the same 1,438 training and 359 validation images.
    """
    pixels, labels = _digits_arrays()
    grey = np.clip(np.rint(pixels * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    images = np.repeat(grey[:, None, :, :], 3, axis=1)  # [N, 3, 8, 8]

    rng = np.random.default_rng(DIGITS_SPLIT_SEED)
    val_index: list[int] = []
    for label in range(DATASET_CLASSES["digits"]):
        members = np.flatnonzero(labels == label)
        rng.shuffle(members)
        val_index.extend(members[: round(len(members) * DIGITS_VAL_FRACTION)].tolist())
    is_val = np.zeros(len(labels), dtype=bool)
    is_val[val_index] = True
    return ImageDataset(
        name="digits",
        num_classes=DATASET_CLASSES["digits"],
        train=_tensor_split(images[~is_val], labels[~is_val]),
        val=_tensor_split(images[is_val], labels[is_val]),
    )


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """`N x 8 x 8` pixels in 0..16 and `N` labels, read from the CSV inside scikit-learn.

    Reading the file directly skips importing scikit-learn (and SciPy): seconds per worker start.
    """
    spec = importlib.util.find_spec("sklearn")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = Path(location) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            table = np.loadtxt(path, delimiter=",")
            return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    return np.asarray(bunch.images, dtype=np.float64), np.asarray(bunch.target, dtype=np.int64)


def _tensor_split(images: np.ndarray, labels: np.ndarray) -> TensorSplit:
    return TensorSplit(
        images=torch.from_numpy(np.ascontiguousarray(images)),
        labels=torch.from_numpy(np.ascontiguousarray(labels)).long(),
    )


# --- shapes (generated) ------------------------------------------------------------------------

SHAPES_OPTIONS = {
    "seed": shapes.DEFAULT_SEED,
    "train_images": shapes.DEFAULT_TRAIN_IMAGES,
    "val_images": shapes.DEFAULT_VAL_IMAGES,
    "size": shapes.DEFAULT_SIZE_PX,
}


def load_shapes(spec: dict[str, Any] | None = None) -> ImageDataset:
    """The generated `shapes` dataset (workers/shapes.py says what it holds), cached per host.

    spec: the trial's `dataset` block; optional integer keys `seed`, `train_images`,
    `val_images`, `size` (px) choose another generation (defaults: seed 0, 10,000 training and
    5,000 validation images of 48 px, `SHAPES_OPTIONS`).
    """
    options = dict(SHAPES_OPTIONS)
    for key in options:
        value = (spec or {}).get(key)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise DatasetError(
                f"dataset 'shapes': {key} must be a non-negative integer, got {value!r}"
            )
        options[key] = value
    if options["train_images"] < 2 or options["val_images"] < 1:
        raise DatasetError("dataset 'shapes' needs train_images >= 2 and val_images >= 1")
    try:
        arrays = shapes.load_or_generate(**options, cache_dir=decode_cache_dir())
    except ValueError as error:
        raise DatasetError(f"dataset 'shapes': {error}") from error
    return ImageDataset(
        name="shapes",
        num_classes=DATASET_CLASSES["shapes"],
        train=_tensor_split(arrays.train_images, arrays.train_labels),
        val=_tensor_split(arrays.val_images, arrays.val_labels),
    )


# --- CIFAR --------------------------------------------------------------------------------------


def load_cifar10(root: Path) -> ImageDataset:
    """CIFAR-10 from `root/cifar-10-batches-py/` (or `root` itself if it holds the batches)."""
    folder = _cifar_folder(root, "cifar-10-batches-py", "data_batch_1", CIFAR10_LAYOUT)
    train = [
        _read_cifar_batch(folder / f"data_batch_{i}", b"labels", CIFAR10_LAYOUT)
        for i in (1, 2, 3, 4, 5)
    ]
    test = _read_cifar_batch(folder / "test_batch", b"labels", CIFAR10_LAYOUT)
    return _cifar_dataset("cifar10", DATASET_CLASSES["cifar10"], train, test, folder)


def load_cifar100(root: Path) -> ImageDataset:
    """CIFAR-100 (fine labels) from `root/cifar-100-python/` (or `root` itself)."""
    folder = _cifar_folder(root, "cifar-100-python", "train", CIFAR100_LAYOUT)
    train = _read_cifar_batch(folder / "train", b"fine_labels", CIFAR100_LAYOUT)
    test = _read_cifar_batch(folder / "test", b"fine_labels", CIFAR100_LAYOUT)
    return _cifar_dataset("cifar100", DATASET_CLASSES["cifar100"], [train], test, folder)


def _cifar_folder(root: Path, name: str, marker: str, layout: str) -> Path:
    for folder in (root / name, root):
        if (folder / marker).is_file():
            return folder
    raise DatasetError(f"{root / name} not found or incomplete (no {marker}); expected {layout}")


def _read_cifar_batch(path: Path, label_key: bytes, layout: str) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise DatasetError(f"{path} is missing; expected {layout}")
    try:
        with path.open("rb") as handle:
            batch = pickle.load(handle, encoding="bytes")
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[label_key], dtype=np.int64)
    except Exception as error:  # unpickling garbage raises nearly anything
        raise DatasetError(
            f"{path} is not a CIFAR python-pickle batch ({type(error).__name__}: {error}); "
            f"expected {layout}"
        ) from error
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or data.shape[0] != labels.shape[0]:
        raise DatasetError(
            f"{path}: 'data' has shape {data.shape} for {labels.shape[0]} labels; expected "
            f"N x 3072 uint8 rows (3 x 32 x 32, channel-major) and N labels; expected {layout}"
        )
    return data.reshape(-1, 3, 32, 32), labels


def _cifar_dataset(
    name: str,
    num_classes: int,
    train: list[tuple[np.ndarray, np.ndarray]],
    test: tuple[np.ndarray, np.ndarray],
    folder: Path,
) -> ImageDataset:
    train_images = np.concatenate([images for images, _ in train])
    train_labels = np.concatenate([labels for _, labels in train])
    for labels in (train_labels, test[1]):
        if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
            raise DatasetError(
                f"{folder}: labels outside 0..{num_classes - 1} "
                f"(found {labels.min()}..{labels.max()})"
            )
    return ImageDataset(
        name=name,
        num_classes=num_classes,
        train=_tensor_split(train_images, train_labels),
        val=_tensor_split(test[0], test[1]),
    )


# --- image folders --------------------------------------------------------------------------------


def load_imagefolder(root: Path, *, layout: str = "auto") -> ImageDataset:
    """An image folder: class folders (`IMAGEFOLDER_LAYOUT`) or TinyImageNet's
    (`TINYIMAGENET_LAYOUT`).

    Classes are the sorted train folder names (wnids for TinyImageNet), so a class has the same
    index on both splits. layout: "folders", "tinyimagenet", or "auto": TinyImageNet's when its
    marks (train/<wnid>/images/, val/images/, val/val_annotations.txt) are on disk, class
    folders when none is; some of them only is a mixed tree, refused.
    """
    train_dir, val_dir = root / "train", root / "val"
    for split_dir in (train_dir, val_dir):
        if not split_dir.is_dir():
            raise DatasetError(f"{split_dir} is not a directory; expected {_expected(layout)}")
    class_dirs = sorted(p for p in train_dir.iterdir() if p.is_dir())
    if not class_dirs:
        raise DatasetError(f"{train_dir} has no class folders; expected {_expected(layout)}")
    index = {p.name: i for i, p in enumerate(class_dirs)}
    if layout == "auto":
        layout = _detect_layout(root, class_dirs)
    if layout == "tinyimagenet":
        train, val = _tinyimagenet_splits(root, class_dirs, index)
    else:
        train, val = _class_folder_splits(root, index)
    return ImageDataset(
        name="imagefolder",
        num_classes=len(class_dirs),
        train=train,
        val=val,
        val_crop_fraction=0.875,
    )


def _imagefolder_layout(spec: dict[str, Any]) -> str:
    layout = spec.get("layout") or "auto"
    if layout not in IMAGEFOLDER_LAYOUTS:
        raise DatasetError(
            f"dataset 'imagefolder': layout must be one of {', '.join(IMAGEFOLDER_LAYOUTS)} "
            f"(auto: whichever is on disk), got {layout!r}"
        )
    return str(layout)


def _expected(layout: str) -> str:
    if layout == "folders":
        return IMAGEFOLDER_LAYOUT
    if layout == "tinyimagenet":
        return TINYIMAGENET_LAYOUT
    return f"either {IMAGEFOLDER_LAYOUT}; or {TINYIMAGENET_LAYOUT}"


def _detect_layout(root: Path, class_dirs: list[Path]) -> str:
    """ "tinyimagenet" or "folders", whichever `root` holds; DatasetError for a mix of both."""
    val_dir = root / "val"
    nested = [p for p in class_dirs if (p / "images").is_dir()]
    # val/images/ is a TinyImageNet mark unless "images" is also one of the classes.
    val_images = (val_dir / "images").is_dir() and not any(p.name == "images" for p in class_dirs)
    annotations = (val_dir / TINYIMAGENET_ANNOTATIONS).is_file()
    if not nested and not val_images and not annotations:
        return "folders"
    if len(nested) == len(class_dirs) and (val_images or annotations):
        return "tinyimagenet"  # a missing val/images/ or annotation file is named when loading
    flat = [p.name for p in class_dirs if p not in nested]
    found = [
        f"train/<class>/images/ in {len(nested)} of {len(class_dirs)} class folders"
        + (f" (not in {_names(flat)})" if nested and flat else ""),
        "val/images/" if val_images else "no val/images/",
        f"val/{TINYIMAGENET_ANNOTATIONS}" if annotations else f"no val/{TINYIMAGENET_ANNOTATIONS}",
    ]
    if not val_images and not annotations:
        found[1:] = [
            f"val class folders ({_names(p.name for p in val_dir.iterdir() if p.is_dir())})"
        ]
    raise DatasetError(
        f"{root} mixes the two imagefolder layouts: found {', '.join(found)}; expected "
        f"{_expected('auto')} (or set the dataset's layout to say which one to read)"
    )


def _class_folder_splits(root: Path, index: dict[str, int]) -> tuple[FolderSplit, FolderSplit]:
    train_dir, val_dir = root / "train", root / "val"
    train = _folder_split(train_dir, index)
    unknown = sorted(p.name for p in val_dir.iterdir() if p.is_dir() and p.name not in index)
    if unknown:
        raise DatasetError(
            f"{val_dir} has classes missing from {train_dir}: {', '.join(unknown[:5])}; "
            f"expected {IMAGEFOLDER_LAYOUT}"
        )
    return train, _folder_split(val_dir, index)


def _folder_split(split_dir: Path, index: dict[str, int]) -> FolderSplit:
    files: list[Path] = []
    labels: list[int] = []
    for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
        for path in sorted(class_dir.iterdir()):
            if _is_image(path):
                files.append(path)
                labels.append(index[class_dir.name])
    if not files:
        hint = ""
        if any((p / "images").is_dir() for p in split_dir.iterdir() if p.is_dir()):
            hint = (
                " (its class folders hold images/: TinyImageNet's layout, which layout auto reads)"
            )
        raise DatasetError(f"{split_dir} holds no images{hint}; expected {IMAGEFOLDER_LAYOUT}")
    return FolderSplit(files=tuple(files), labels=tuple(labels), root=split_dir.parent)


def _tinyimagenet_splits(
    root: Path, class_dirs: list[Path], index: dict[str, int]
) -> tuple[FolderSplit, FolderSplit]:
    """train/<wnid>/images/* and val/images/* labelled by val/val_annotations.txt."""
    without = [p.name for p in class_dirs if not (p / "images").is_dir()]
    if without:
        raise DatasetError(
            f"{root / 'train'}: {len(without)} of {len(class_dirs)} wnid folders have no images/ "
            f"({_names(without)}); expected {TINYIMAGENET_LAYOUT}"
        )
    _check_wnids_file(root, index)
    files: list[Path] = []
    labels: list[int] = []
    for class_dir in class_dirs:
        for path in sorted((class_dir / "images").iterdir()):
            if _is_image(path):
                files.append(path)
                labels.append(index[class_dir.name])
    if not files:
        raise DatasetError(
            f"{root / 'train'}/<wnid>/images/ hold no images; expected {TINYIMAGENET_LAYOUT}"
        )
    train = FolderSplit(files=tuple(files), labels=tuple(labels), root=root)

    images_dir, annotations = root / "val" / "images", root / "val" / TINYIMAGENET_ANNOTATIONS
    if not images_dir.is_dir():
        held = _names(p.name for p in (root / "val").iterdir())
        raise DatasetError(
            f"{images_dir} is not a directory (val/ holds {held}); expected {TINYIMAGENET_LAYOUT}"
        )
    if not annotations.is_file():
        raise DatasetError(
            f"{images_dir} has no {TINYIMAGENET_ANNOTATIONS} beside it to label its images; "
            f"expected {TINYIMAGENET_LAYOUT}"
        )
    labelled = _read_val_annotations(annotations, index)
    on_disk = {p.name for p in images_dir.iterdir() if _is_image(p)}
    missing = sorted(set(labelled) - on_disk)
    if missing:
        raise DatasetError(
            f"{annotations} names {len(missing)} images that {images_dir} does not hold "
            f"({_names(missing)}); expected {TINYIMAGENET_LAYOUT}"
        )
    unlabelled = sorted(on_disk - set(labelled))
    if unlabelled:
        raise DatasetError(
            f"{images_dir} holds {len(unlabelled)} images with no line in {annotations.name} "
            f"({_names(unlabelled)}); expected {TINYIMAGENET_LAYOUT}"
        )
    if not labelled:
        raise DatasetError(f"{annotations} labels no images; expected {TINYIMAGENET_LAYOUT}")
    names = sorted(labelled)
    val = FolderSplit(
        files=tuple(images_dir / name for name in names),
        labels=tuple(labelled[name] for name in names),
        root=root,
    )
    return train, val


def _read_val_annotations(path: Path, index: dict[str, int]) -> dict[str, int]:
    """val_annotations.txt as {file name: class index}; DatasetError naming a bad line."""
    labelled: dict[str, int] = {}
    seen: set[str] = set()
    unknown: dict[str, int] = {}  # wnid -> first line naming it
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split("\t")]
        if len(fields) < 2:
            fields = line.split()
        if len(fields) < 2 or not fields[0] or not fields[1]:
            raise DatasetError(
                f"{path} line {number} is {line[:120]!r}: expected tab-separated file name, "
                f"wnid, then the box; expected {TINYIMAGENET_LAYOUT}"
            )
        name, wnid = fields[0], fields[1]
        if name in seen:
            raise DatasetError(
                f"{path} line {number} labels {name} a second time; expected {TINYIMAGENET_LAYOUT}"
            )
        seen.add(name)
        if wnid not in index:
            unknown.setdefault(wnid, number)
            continue
        labelled[name] = index[wnid]
    if unknown:
        where = ", ".join(f"{wnid} (line {line})" for wnid, line in list(unknown.items())[:5])
        raise DatasetError(
            f"{path} names {len(unknown)} wnids that {path.parent.parent / 'train'} has no "
            f"folder for: {where}; expected {TINYIMAGENET_LAYOUT}"
        )
    return labelled


def _check_wnids_file(root: Path, index: dict[str, int]) -> None:
    """TinyImageNet's wnids.txt, where present, must list exactly the train folders: a train/
    that lost folders (an interrupted unpack) would otherwise silently have fewer classes."""
    path = root / "wnids.txt"
    if not path.is_file():
        return
    listed = {
        line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()
    }
    absent, extra = sorted(listed - set(index)), sorted(set(index) - listed)
    if absent or extra:
        parts = (
            [f"{len(absent)} listed without a train folder ({_names(absent)})"] if absent else []
        )
        parts += [f"{len(extra)} train folders it does not list ({_names(extra)})"] if extra else []
        raise DatasetError(
            f"{path} lists {len(listed)} wnids and {root / 'train'} has {len(index)} folders: "
            f"{'; '.join(parts)}; expected {TINYIMAGENET_LAYOUT}"
        )


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()


def _names(names: Any, limit: int = 5) -> str:
    """The first `limit` of `names`, and how many more: for messages about many files."""
    listed = sorted(names)
    if not listed:
        return "nothing"
    shown = ", ".join(listed[:limit])
    return shown + (f", … ({len(listed)} in all)" if len(listed) > limit else "")


class FolderImages(torch.utils.data.Dataset[tuple[torch.Tensor, int]]):
    """Decodes one image with Pillow (in a DataLoader worker, no cache) into a uint8 tensor.

    The shorter side is resized to `load_size` and the centre square kept: `3 x load_size x
    load_size`. Random crops, flips and the final resize happen on the device.
    """

    def __init__(self, split: FolderSplit, load_size: int) -> None:
        self.split = split
        self.load_size = load_size

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(
            decode_file(self.split.files[i], self.load_size)
        ), self.split.labels[i]


def decode_file(path: Path, size: int, *, fit: Fit = "centre") -> np.ndarray:
    """`path` as a `3 x size x size` uint8 array (the decode cache stores the same pixels)."""
    try:
        return decode_image(path, size, fit=fit)
    except ImageDecodeError as error:
        raise DatasetError(f"{error}; expected {IMAGEFOLDER_LAYOUT}") from error


def file_aspect(path: Path) -> float:
    """`path`'s width / height, from its header."""
    try:
        return image_aspect(path)
    except ImageDecodeError as error:
        raise DatasetError(f"{error}; expected {IMAGEFOLDER_LAYOUT}") from error
