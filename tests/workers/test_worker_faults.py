"""A real worker fault, end to end: a DataLoader process dies under a real worker.

That is what a bus error from a too-small /dev/shm looks like to the worker (the loader process
is killed by a signal). The trial must go back to the queue without being charged an attempt,
and the worker, told to give up after one fault in a row, must stop leasing and exit with the
code that asks its scheduler for a replacement.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.workers.conftest import TINY_BASE, wait_for
from vitcube.workers.loop import EXIT_WORKER_FAULTY

pytestmark = pytest.mark.slow


def _image_folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for split, count in (("train", 24), ("val", 4)):
        for name in ("cat", "dog", "emu"):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, size=(36, 36, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def _loader_processes(pid: int) -> list[int]:
    """The worker's DataLoader processes: its children, less multiprocessing's helpers."""
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            children += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    loaders = []
    for child in children:
        try:
            command = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if b"resource_tracker" not in command and b"forkserver" not in command:
            loaders.append(child)
    return loaders


def test_a_killed_dataloader_process_hands_the_trial_back_uncharged(
    live_server: Any, start_worker: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_root = _image_folder(tmp_path / "data")
    monkeypatch.setenv("VITCUBE_DECODE_CACHE", "off")  # Pillow in DataLoader processes
    search_id = live_server.create_search(
        base={**TINY_BASE, "num_classes": 3},
        dataset={"name": "imagefolder", "num_classes": 3},
        training={"epochs": 500, "batch_size": 16, "max_steps_per_epoch": 2, "num_workers": 1},
    )
    worker = start_worker(
        live_server, "--data-root", str(data_root), "--max-worker-faults", "1", name="flaky"
    )

    def training() -> bool:
        trial = live_server.trial(search_id)
        return trial["state"] == "running" and len(trial["curve"]) >= 1

    wait_for(training, 120, "the first epoch")
    loaders = wait_for(lambda: _loader_processes(worker.process.pid), 30, "a DataLoader process")
    for pid in loaders:
        os.kill(pid, signal.SIGKILL)
    assert worker.wait(240) == EXIT_WORKER_FAULTY, worker.log()  # a loaded CI box is slow
    trial = live_server.trial(search_id)
    assert (trial["state"], trial["attempts"]) == ("queued", 0), trial  # not charged
    assert trial["error"].startswith("worker fault on RuntimeError: DataLoader worker"), trial
    assert "/dev/shm" in trial["error"]
    log = worker.log()
    assert "failed (worker fault, handed back uncharged)" in log
    assert "1 worker faults in a row (--max-worker-faults); exiting with code 4" in log
