"""Decode an image folder once per host into memory-mapped uint8 arrays every process shares.

Decoding a JPEG costs milliseconds per image per core; doing it every epoch of every trial caps
an ImageNet-sized image folder at a few thousand images/s per box. `open_decoded(files, sizes,
cache_dir)` instead decodes each file once, resizes it (shorter side to the size, centre square)
to every size asked for, and keeps the result as one `.npy` file per size, `N x 3 x S x S` uint8,
under `cache_dir`. Later calls, in this process or any other on the box, memory-map the file
read-only, so every GPU worker reads the same pages of the page cache.

A cache file is named by what it depends on: the split's folder, the list of files with their
sizes and modification times, the size and the format version. A changed, added or removed file
gives a new name (and the stale file is deleted). Files are written to a temporary name and
renamed when complete, so a crash mid-write never leaves a file that looks usable; an exclusive
lock (`fcntl.flock`, released by the kernel when a process dies) makes a second process that
arrives during the build wait for it instead of decoding the same images again.

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

import numpy as np

CACHE_FORMAT_VERSION = 1
CACHE_DIR_ENV = "VITCUBE_DECODE_CACHE"
# Images per task handed to a decoding process: large enough that task overhead is noise.
CHUNK_IMAGES = 64
# How often a process waiting for another's build checks whether it should give up.
LOCK_POLL_S = 0.2
# Free space a cache must leave on its disk.
FREE_SPACE_MARGIN_BYTES = 1 << 30

log = logging.getLogger(__name__)


class ImageDecodeError(ValueError):
    """A file cannot be decoded as an image; the message names it."""


class CacheUnavailable(OSError):
    """The cache cannot be written here (no space, no permission); decode on the fly instead."""


@dataclass(frozen=True)
class DecodedSplit:
    """A split decoded at several sizes.

    arrays: size → a read-only memory-mapped `N x 3 x size x size` uint8 array; paths: size →
    its file; images_decoded: how many files this call decoded (0 when every size was cached).
    """

    arrays: dict[int, np.ndarray]
    paths: dict[int, Path]
    images_decoded: int


def decode_image(path: Path, size: int) -> np.ndarray:
    """One file as a `3 x size x size` uint8 array: shorter side resized to `size`, centre square.

    Raises ImageDecodeError naming the file when Pillow cannot read it.
    """
    return _decode_sizes(path, (size,))[0]


def _decode_sizes(path: Path, sizes: Sequence[int]) -> list[np.ndarray]:
    from PIL import Image

    try:
        with Image.open(path) as image:
            # JPEG: let the decoder skip DCT detail the smallest-needed size does not use.
            image.draft("RGB", (max(sizes), max(sizes)))
            rgb = image.convert("RGB")
    except Exception as error:  # Pillow raises nearly anything on a corrupt file
        raise ImageDecodeError(
            f"{path} cannot be decoded as an image ({type(error).__name__}: {error})"
        ) from error
    out = []  # [3, S, S] each
    for size in sizes:
        width, height = rgb.size
        scale = size / min(width, height)
        scaled = (max(size, round(width * scale)), max(size, round(height * scale)))
        resized = rgb.resize(scaled, Image.Resampling.BILINEAR, reducing_gap=3.0)
        left, top = (scaled[0] - size) // 2, (scaled[1] - size) // 2
        square = resized.crop((left, top, left + size, top + size))
        out.append(np.ascontiguousarray(np.asarray(square, dtype=np.uint8).transpose(2, 0, 1)))
    return out


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
    processes: int | None = None,
    check: Callable[[], None] | None = None,
) -> DecodedSplit:
    """Memory-map `files` decoded at each of `sizes`; decode (once for all sizes) what is missing.

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
    paths = {size: cache_dir / f"{prefix}-{digest}-{size}px.npy" for size in sizes}
    arrays = _open_existing(paths, len(files))
    if len(arrays) == len(paths):
        return DecodedSplit(arrays, paths, 0)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        lock_path = cache_dir / f"{prefix}.lock"
        lock = lock_path.open("a")
    except OSError as error:
        raise CacheUnavailable(f"cannot write the decode cache in {cache_dir}: {error}") from error
    with lock:
        _lock(lock.fileno(), check)  # waits while another process builds
        arrays = _open_existing(paths, len(files))  # it may have built them while we waited
        missing = [size for size in sizes if size not in arrays]
        decoded = 0
        if missing:
            _remove_leftovers(cache_dir, prefix, digest, missing)
            _check_space(cache_dir, len(files), missing)
            decoded = _build(files, {size: paths[size] for size in missing}, processes, check)
            arrays.update(_open_existing({size: paths[size] for size in missing}, len(files)))
    return DecodedSplit(arrays, paths, decoded)


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


def _open_existing(paths: dict[int, Path], n: int) -> dict[int, np.ndarray]:
    arrays: dict[int, np.ndarray] = {}
    for size, path in paths.items():
        try:
            array = np.load(path, mmap_mode="r")
        except (OSError, ValueError):  # absent, or not an array: rebuilt under the lock
            continue
        if array.shape == (n, 3, size, size) and array.dtype == np.uint8:
            arrays[size] = array
    return arrays


def _remove_leftovers(cache_dir: Path, prefix: str, digest: str, sizes: Sequence[int]) -> None:
    """Delete half-written files of crashed builds and caches of older versions of this split.

    Called under the lock, so no other process is writing them; a process still reading an old
    file keeps its mapping (unlinking an open file on POSIX frees it only after the last close).
    """
    for size in sizes:
        for path in cache_dir.glob(f"{prefix}-*-{size}px.npy*"):
            if path.name != f"{prefix}-{digest}-{size}px.npy":
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
    processes: int | None,
    check: Callable[[], None] | None = None,
) -> int:
    """Decode every file once into temporary arrays, rename each into place; return the count."""
    n = len(files)
    temps = {size: path.with_name(f"{path.name}.tmp-{os.getpid()}") for size, path in paths.items()}
    log.info("decoding %d images at %s px into %s", n, sorted(paths), next(iter(paths.values())))
    try:
        for size, temp in temps.items():
            array = np.lib.format.open_memmap(
                temp, mode="w+", dtype=np.uint8, shape=(n, 3, size, size)
            )
            del array  # header and length written; the decoders fill it
        chunks = [(start, min(n, start + CHUNK_IMAGES)) for start in range(0, n, CHUNK_IMAGES)]
        tasks = [
            ([str(f) for f in files[a:b]], a, {s: str(t) for s, t in temps.items()})
            for a, b in chunks
        ]
        workers = min(processes or _usable_cores(), len(tasks))
        decoded = 0
        for count in _run_tasks(tasks, workers):
            decoded += count
            if check is not None:
                check()
        for size, temp in temps.items():
            with temp.open("rb+") as handle:
                os.fsync(handle.fileno())
            os.replace(temp, paths[size])
        with contextlib.suppress(OSError):  # make the renames durable where the OS allows
            directory = os.open(next(iter(paths.values())).parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        return decoded
    finally:
        for temp in temps.values():
            with contextlib.suppress(OSError):
                temp.unlink()


def _run_tasks(tasks: list[tuple[list[str], int, dict[int, str]]], workers: int) -> Iterator[int]:
    if workers <= 1:
        yield from (_decode_chunk(task) for task in tasks)
        return
    # spawn, not fork: the caller may hold CUDA state and threads that a fork must not copy.
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        yield from pool.imap_unordered(_decode_chunk, tasks)


def _decode_chunk(task: tuple[list[str], int, dict[int, str]]) -> int:
    """Decode files[start:start+len] into rows of the temporary arrays (in a decoding process)."""
    names, start, temps = task
    sizes = sorted(temps)
    arrays = {size: np.load(temps[size], mmap_mode="r+") for size in sizes}
    for offset, name in enumerate(names):
        for size, pixels in zip(sizes, _decode_sizes(Path(name), sizes), strict=True):
            arrays[size][start + offset] = pixels
    for array in arrays.values():
        array.flush()
    return len(names)


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
