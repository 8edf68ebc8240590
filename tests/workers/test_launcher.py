"""The multi-process launcher behind `--gpus`, and when a worker gives up on its device.

The launcher is shown with CPU children: `launch_workers` takes the devices, so the real parent
and the real `python -m vitcube.workers` children run against a real server here exactly as
they would, one per GPU, on a GPU box. The signal is sent the way a terminal sends Ctrl-C: to
the parent's whole process group.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from tests.workers.conftest import wait_for
from vitcube.workers.loop import EXIT_WORKER_FAULTY, Worker, WorkerOptions
from vitcube.workers.progress import PlainProgress


@pytest.mark.slow
def test_ctrl_c_hands_each_childs_trial_back_once(
    live_server: Any, worker_token: str, tmp_path: Path
) -> None:
    search_id = live_server.create_search(
        max_trials=2,
        parallelism=2,
        training={"epochs": 500, "batch_size": 32, "max_steps_per_epoch": 2},
    )
    base_args = [
        "--server", live_server.url, "--token", worker_token, "--threads", "1",
        "--spool-dir", str(tmp_path / "spool"),
    ]  # fmt: skip
    parent_script = textwrap.dedent(
        f"""
        import sys
        from vitcube.workers.cli import ChildWorker, launch_workers
        children = [ChildWorker(device="cpu", name=f"launcher:cpu{{i}}") for i in range(2)]
        sys.exit(launch_workers(children, {base_args!r}))
        """
    )
    log_path = tmp_path / "launcher.log"
    with log_path.open("wb") as log:
        parent = subprocess.Popen(
            [sys.executable, "-c", parent_script],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, OMP_NUM_THREADS="1"),
            start_new_session=True,  # its own process group, as a shell's foreground job
        )
    children: list[int] = []
    try:

        def both_training() -> bool:
            trials = live_server.trials(search_id)
            return len(trials) == 2 and all(
                t["state"] == "running" and len(t["curve"]) >= 1 for t in trials
            )

        wait_for(both_training, 180, "both children to train an epoch")
        children = _children(parent.pid)
        assert len(children) == 2, children
        for pid in children:  # out of the parent's group: a Ctrl-C does not reach them directly
            assert os.getsid(pid) == pid and os.getpgid(pid) != os.getpgid(parent.pid)
        os.killpg(parent.pid, signal.SIGINT)  # Ctrl-C: the terminal signals the whole group
        time.sleep(0.2)
        os.killpg(parent.pid, signal.SIGINT)  # an impatient second one is not forwarded
        assert parent.wait(timeout=240) == 0, log_path.read_text()  # a loaded CI box is slow
    finally:
        if parent.poll() is None:
            parent.kill()
        for pid in children:  # in their own sessions: killing the parent does not end them
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    text = log_path.read_text(errors="replace")
    trials = live_server.trials(search_id)
    assert sorted(t["worker"] for t in trials) == ["launcher:cpu0", "launcher:cpu1"]
    for trial in trials:  # each handed back once, gracefully: queued again, one attempt
        assert (trial["state"], trial["attempts"]) == ("queued", 1), (trial, text)
        assert "interrupted by SIGINT" in (trial["error"] or ""), trial
    assert text.count("failed (will be retried)") == 2, text
    # a second signal would have meant "now": the KeyboardInterrupt path and its traceback
    assert "killed during training" not in text and "KeyboardInterrupt" not in text, text
    assert "handing their trials back; signal again to kill them" in text, text


def _children(pid: int) -> list[int]:
    """The live child processes of `pid` (Linux /proc)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in path.read_text().split()]


def _worker(tmp_path: Path, max_worker_faults: int) -> Worker:
    options = WorkerOptions(
        server="http://127.0.0.1:9",
        token="t",
        spool_dir=tmp_path,
        max_worker_faults=max_worker_faults,
    )
    return Worker(options, PlainProgress(io.StringIO()))


def test_a_worker_stops_leasing_after_worker_faults_in_a_row(tmp_path: Path) -> None:
    worker = _worker(tmp_path, max_worker_faults=3)
    for fault in ("host", "host", None, "host", "host"):  # a trial that failed otherwise resets
        worker._count_fault(fault)
        assert worker.faulty is None
    worker._count_fault("host")
    assert worker.faulty == "3 worker faults in a row (--max-worker-faults)"
    sticky = _worker(tmp_path, max_worker_faults=3)
    sticky._count_fault("sticky")  # the CUDA context is dead: no point in leasing again
    assert sticky.faulty is not None and "sticky CUDA error" in sticky.faulty
    never = _worker(tmp_path, max_worker_faults=0)
    for _ in range(10):
        never._count_fault("host")
    assert never.faulty is None
    assert EXIT_WORKER_FAULTY not in (0, 1, 2, 3)  # not success, a crash, usage or auth
