"""Decode an image folder once per host into memory-mapped uint8 arrays every process shares.

Decoding a JPEG costs milliseconds per image per core; doing it every epoch of every trial caps
an ImageNet-sized image folder at a few thousand images/s per box. `open_decoded(files, sizes,
cache_dir, fit=...)` instead decodes each file once, resizes it to every size asked for, and
keeps the result as one `.npy` file per size, `N x 3 x S x S` uint8, under `cache_dir`. Two
fits: `"centre"` (shorter side to the size, centre square: what evaluation crops from) and
`"whole"` (the whole image squeezed into the square, ignoring its aspect, for training crops
that may reach any part of it); a `"whole"` cache also keeps each image's true width / height,
`N` float32, in a file beside the arrays, so a crop can be drawn in the image's real geometry.
Later calls, in this process or any other on the box, memory-map the file read-only, so every
GPU worker reads the same pages of the page cache.

A cache file is named by what it depends on: the split's folder, the list of files with their
sizes and modification times, the fit, the size and the format version. A changed, added or
removed file gives a new name (and the stale file is deleted). Files are written to a temporary
name and renamed when complete (the aspect file last), so a crash mid-write never leaves a file
that looks usable; an exclusive lock (`fcntl.flock`, released by the kernel when a process dies)
makes a second process that arrives during the build wait for it instead of decoding the same
images again.

`decode_cache_dir(dataset_root)` is the host setting: `VITCUBE_DECODE_CACHE` (a directory, or
`off`), by default `$XDG_CACHE_HOME/vitcube/decoded` (`~/.cache/vitcube/decoded`) or, where
that cannot be written, `<dataset root>/.vitcube-cache`.

Imports numpy, Pillow and the standard library only (no torch, nothing of vitcube's), so the
decoding processes start fast.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import multiprocessing
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

# 2: the "whole" fit and its aspect file (version 1 held centre squares only).
CACHE_FORMAT_VERSION = 2
CACHE_DIR_ENV = "VITCUBE_DECODE_CACHE"
# Images per task handed to a decoding process: large enough that task overhead is noise.
CHUNK_IMAGES = 64
# How often a process waiting for another's build checks whether it should give up.
LOCK_POLL_S = 0.2
# Free space a cache must leave on its disk.
FREE_SPACE_MARGIN_BYTES = 1 << 30

log = logging.getLogger(__name__)

Fit = Literal["centre", "whole"]


class ImageDecodeError(ValueError):
    """A file cannot be decoded as an image; the message names it."""


class CacheUnavailable(OSError):
    """The cache cannot be written here (no space, no permission); decode on the fly instead."""


@dataclass(frozen=True)
class DecodedSplit:
    """A split decoded at several sizes.

    arrays: size → a read-only memory-mapped `N x 3 x size x size` uint8 array; paths: size →
    its file; images_decoded: how many files this call decoded (0 when every size was cached);
    aspects: `N` float32, the width / height of the picture each row holds (the images' true
    aspect ratios for the "whole" fit, ones for the centre squares).
    """

    arrays: dict[int, np.ndarray]
    paths: dict[int, Path]
    images_decoded: int
    aspects: np.ndarray


def decode_image(path: Path, size: int, *, fit: Fit = "centre") -> np.ndarray:
    """One file as a `3 x size x size` uint8 array: shorter side resized to `size` and the centre
    square kept ("centre"), or the whole image resized to `size x size` ("whole").

    Raises ImageDecodeError naming the file when Pillow cannot read it.
    """
    return _decode_sizes(path, (size,), fit)[0][0]


def image_aspect(path: Path) -> float:
    """The width / height of an image file, read from its header (nothing is decoded)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            width, height = image.size
    except Exception as error:  # Pillow raises nearly anything on a corrupt file
        raise ImageDecodeError(
            f"{path} cannot be decoded as an image ({type(error).__name__}: {error})"
        ) from error
    return width / height


def _decode_sizes(path: Path, sizes: Sequence[int], fit: Fit) -> tuple[list[np.ndarray], float]:
    """The file at each size (`3 x S x S` uint8 each) and its true width / height."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            aspect = image.size[0] / image.size[1]  # before draft, which may shrink the image
            # JPEG: let the decoder skip DCT detail the smallest-needed size does not use.
            image.draft("RGB", (max(sizes), max(sizes)))
            rgb = image.convert("RGB")
    except Exception as error:  # Pillow raises nearly anything on a corrupt file
        raise ImageDecodeError(
            f"{path} cannot be decoded as an image ({type(error).__name__}: {error})"
        ) from error
    out = []  # [3, S, S] each
    for size in sizes:
        if fit == "whole":
            squeezed = rgb.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)
            out.append(
                np.ascontiguousarray(np.asarray(squeezed, dtype=np.uint8).transpose(2, 0, 1))
            )
            continue
        width, height = rgb.size
        scale = size / min(width, height)
        scaled = (max(size, round(width * scale)), max(size, round(height * scale)))
        resized = rgb.resize(scaled, Image.Resampling.BILINEAR, reducing_gap=3.0)
        left, top = (scaled[0] - size) // 2, (scaled[1] - size) // 2
        square = resized.crop((left, top, left + size, top + size))
        out.append(np.ascontiguousarray(np.asarray(square, dtype=np.uint8).transpose(2, 0, 1)))
    return out, aspect


def decode_cache_dir(dataset_root: Path | None = None) -> Path | None:
    """Where decoded splits live on this host, or None when caching is off or nowhere writable."""
    setting = os.environ.get(CACHE_DIR_ENV, "").strip()
    if setting.lower() in ("off", "0", "none", "false"):
        return None
    if setting:
        return Path(setting).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    candidates = [(Path(xdg) if xdg else Path.home() / ".cache") / "vitcube" / "decoded"]
    if dataset_root is not None:
        candidates.append(Path(dataset_root) / ".vitcube-cache")
    for candidate in candidates:
        try:
            candidate.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(candidate, os.W_OK):
            return candidate
    return None


def open_decoded(
    files: Sequence[Path],
    sizes: Sequence[int],
    cache_dir: Path,
    *,
    fit: Fit = "centre",
    processes: int | None = None,
    check: Callable[[], None] | None = None,
) -> DecodedSplit:
    """Memory-map `files` decoded at each of `sizes`; decode (once for all sizes) what is missing.

    fit: "centre" squares or "whole" images squeezed into the square (`decode_image`); the two
    are separate files, so a split can be cached both ways.

    processes: decoding processes for a build (default: every core this process may use; the
    other processes of the box wait for the build anyway). check: called while waiting for
    another process's build and between chunks of this one's; what it raises (a trial being
    interrupted) ends the wait or the build, leaving no cache file. Raises ImageDecodeError for
    a file Pillow cannot read (no cache file is left behind) and CacheUnavailable when
    `cache_dir` cannot hold the arrays.
    """
    if not files:
        raise ValueError("open_decoded needs at least one file")
    sizes = sorted(set(sizes))
    prefix, digest = _names(files)
    paths = {size: cache_dir / f"{prefix}-{digest}-{fit}-{size}px.npy" for size in sizes}
    # Only the whole fit needs the aspects: a centre square's is 1.
    aspect_path = cache_dir / f"{prefix}-{digest}-{fit}-aspect.npy" if fit == "whole" else None
    arrays, aspects = _open_existing(paths, aspect_path, len(files))
    if len(arrays) == len(paths):
        return DecodedSplit(arrays, paths, 0, aspects)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        lock_path = cache_dir / f"{prefix}.lock"
        lock = lock_path.open("a")
    except OSError as error:
        raise CacheUnavailable(f"cannot write the decode cache in {cache_dir}: {error}") from error
    with lock:
        _lock(lock.fileno(), check)  # waits while another process builds
        # It may have built them while we waited.
        arrays, aspects = _open_existing(paths, aspect_path, len(files))
        missing = [size for size in sizes if size not in arrays]
        decoded = 0
        if missing:
            _remove_leftovers(cache_dir, prefix, digest)
            _check_space(cache_dir, len(files), missing)
            decoded = _build(
                files, {size: paths[size] for size in missing}, aspect_path, fit, processes, check
            )
            arrays, aspects = _open_existing(paths, aspect_path, len(files))
            if len(arrays) != len(paths):
                raise CacheUnavailable(f"the decode cache in {cache_dir} vanished as it was built")
    return DecodedSplit(arrays, paths, decoded, aspects)


def _names(files: Sequence[Path]) -> tuple[str, str]:
    """(prefix naming the split's folder, digest of every file's name, size and mtime)."""
    resolved = [Path(os.path.abspath(path)) for path in files]
    folder = Path(os.path.commonpath([str(path.parent) for path in resolved]))
    slug = "-".join(part for part in folder.parts[-2:] if part not in ("/", ""))
    slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in slug)[:60] or "split"
    prefix = f"{slug}-{hashlib.sha256(str(folder).encode()).hexdigest()[:10]}"
    content = hashlib.sha256(f"vitcube-decoded-v{CACHE_FORMAT_VERSION}\n".encode())
    for path in resolved:
        stat = path.stat()
        content.update(f"{path.relative_to(folder)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return prefix, content.hexdigest()[:24]


def _open_existing(
    paths: dict[int, Path], aspect_path: Path | None, n: int
) -> tuple[dict[int, np.ndarray], np.ndarray]:
    """The complete arrays among `paths` and the aspects (none of the arrays counts as complete
    when the aspect file, written last, is missing: a build died before it finished)."""
    if aspect_path is None:
        aspects = np.ones(n, dtype=np.float32)
    else:
        try:
            aspects = np.load(aspect_path)
        except (OSError, ValueError):
            return {}, np.ones(n, dtype=np.float32)
        if aspects.shape != (n,) or aspects.dtype != np.float32:
            return {}, np.ones(n, dtype=np.float32)
    arrays: dict[int, np.ndarray] = {}
    for size, path in paths.items():
        try:
            array = np.load(path, mmap_mode="r")
        except (OSError, ValueError):  # absent, or not an array: rebuilt under the lock
            continue
        if array.shape == (n, 3, size, size) and array.dtype == np.uint8:
            arrays[size] = array
    return arrays, aspects


def _remove_leftovers(cache_dir: Path, prefix: str, digest: str) -> None:
    """Delete half-written files of crashed builds and every file of this split's folder that
    another digest names (older contents, older format versions).

    Called under the lock, so no other process is writing them; a process still reading an old
    file keeps its mapping (unlinking an open file on POSIX frees it only after the last close).
    """
    for path in cache_dir.glob(f"{prefix}-*.npy*"):
        if not path.name.startswith(f"{prefix}-{digest}-") or ".tmp-" in path.name:
            with contextlib.suppress(OSError):
                path.unlink()


def _check_space(cache_dir: Path, n: int, sizes: Sequence[int]) -> None:
    need = sum(n * 3 * size * size for size in sizes)
    free = shutil.disk_usage(cache_dir).free
    if free - need < FREE_SPACE_MARGIN_BYTES:
        raise CacheUnavailable(
            f"the decode cache needs {need / 2**30:.1f} GiB in {cache_dir} but "
            f"{free / 2**30:.1f} GiB are free; set {CACHE_DIR_ENV} to a bigger disk"
        )


def _lock(fd: int, check: Callable[[], None] | None) -> None:
    if check is None:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            check()
            time.sleep(LOCK_POLL_S)


def _build(
    files: Sequence[Path],
    paths: dict[int, Path],
    aspect_path: Path | None,
    fit: Fit,
    processes: int | None,
    check: Callable[[], None] | None = None,
) -> int:
    """Decode every file once into temporary arrays, rename each into place (the aspects last);
    return the count."""
    n = len(files)
    temps = {size: path.with_name(f"{path.name}.tmp-{os.getpid()}") for size, path in paths.items()}
    aspect_temp = (
        None
        if aspect_path is None
        else aspect_path.with_name(f"{aspect_path.name}.tmp-{os.getpid()}")
    )
    log.info("decoding %d images at %s px into %s", n, sorted(paths), next(iter(paths.values())))
    try:
        for size, temp in temps.items():
            array = np.lib.format.open_memmap(
                temp, mode="w+", dtype=np.uint8, shape=(n, 3, size, size)
            )
            del array  # header and length written; the decoders fill it
        if aspect_temp is not None:
            aspects = np.lib.format.open_memmap(
                aspect_temp, mode="w+", dtype=np.float32, shape=(n,)
            )
            del aspects
        chunks = [(start, min(n, start + CHUNK_IMAGES)) for start in range(0, n, CHUNK_IMAGES)]
        tasks = [
            (
                [str(f) for f in files[a:b]],
                a,
                {s: str(t) for s, t in temps.items()},
                None if aspect_temp is None else str(aspect_temp),
                fit,
            )
            for a, b in chunks
        ]
        workers = min(processes or _usable_cores(), len(tasks))
        decoded = 0
        for count in _run_tasks(tasks, workers):
            decoded += count
            if check is not None:
                check()
        renames = [(temp, paths[size]) for size, temp in temps.items()]
        if aspect_temp is not None and aspect_path is not None:
            renames.append((aspect_temp, aspect_path))  # last: it marks the arrays complete
        for temp, path in renames:
            with temp.open("rb+") as handle:
                os.fsync(handle.fileno())
            os.replace(temp, path)
        with contextlib.suppress(OSError):  # make the renames durable where the OS allows
            directory = os.open(next(iter(paths.values())).parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        return decoded
    finally:
        for temp in [*temps.values(), *([aspect_temp] if aspect_temp is not None else [])]:
            with contextlib.suppress(OSError):
                temp.unlink()


_Task = tuple[list[str], int, dict[int, str], str | None, Fit]


def _run_tasks(tasks: list[_Task], workers: int) -> Iterator[int]:
    if workers <= 1:
        yield from (_decode_chunk(task) for task in tasks)
        return
    # spawn, not fork: the caller may hold CUDA state and threads that a fork must not copy.
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        yield from pool.imap_unordered(_decode_chunk, tasks)


def _decode_chunk(task: _Task) -> int:
    """Decode files[start:start+len] into rows of the temporary arrays (in a decoding process)."""
    names, start, temps, aspect_temp, fit = task
    sizes = sorted(temps)
    arrays = {size: np.load(temps[size], mmap_mode="r+") for size in sizes}
    aspects = None if aspect_temp is None else np.load(aspect_temp, mmap_mode="r+")
    for offset, name in enumerate(names):
        decoded, aspect = _decode_sizes(Path(name), sizes, fit)
        for size, pixels in zip(sizes, decoded, strict=True):
            arrays[size][start + offset] = pixels
        if aspects is not None:
            aspects[start + offset] = aspect
    for array in [*arrays.values(), *([aspects] if aspects is not None else [])]:
        array.flush()
    return len(names)


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
