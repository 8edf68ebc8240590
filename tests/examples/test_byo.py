"""examples/byo/: each bring-your-own training script, run one segment at a time as a worker runs
it, with the test playing the worker (`trialfiles.play_worker`: the trial file, the channel, the
stop file). Real training on digits at 32 px, a few steps per epoch. The real
`vitcube worker --command` running these examples end to end is tested with the worker."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from trialfiles import VITCUBE, PlayedWorker, play_worker, tiny_arch

from vitcube.channel import Message

BYO = Path(__file__).resolve().parents[2] / "examples" / "byo"
PLAIN = (BYO / "train_digits.py",)
LIGHTNING = (BYO / "train_lightning.py",)
SHELL = ("bash", BYO / "train.sh")
# Training steps per epoch: the protocol is under test, not the accuracy. The shell's toy
# "epochs" take no time. VITCUBE: the shell script's vitcube, this environment's.
QUICK = {
    "VITCUBE_EXAMPLE_MAX_STEPS": "3",
    "VITCUBE_EXAMPLE_EPOCH_S": "0",
    "VITCUBE": str(VITCUBE),
}

pytestmark = pytest.mark.slow


def python(script: tuple[Path, ...]) -> tuple[str | Path, ...]:
    return (sys.executable, *script)


def segment(
    directory: Path, *, to_epoch: int, epochs: int, metric: dict[str, str] | None = None
) -> PlayedWorker:
    """A fresh trial's first segment, epochs 1 … to_epoch of `epochs`, on the tiny network."""
    return play_worker(directory, to_epoch=to_epoch, epochs=epochs, metric=metric, arch=tiny_arch())


def run(worker: PlayedWorker, command: tuple[str | Path, ...]) -> subprocess.CompletedProcess[str]:
    done = worker.run(*command, env=QUICK)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def epochs_of(messages: list[Message]) -> list[int]:
    return [m.epoch for m in messages if m.epoch is not None]


def test_the_plain_script_resumes_from_its_checkpoint_where_one_run_would_be(
    tmp_path: Path,
) -> None:
    first = segment(tmp_path / "1", to_epoch=2, epochs=3)
    run(first, python(PLAIN))

    assert epochs_of(first.reports()) == [1, 2]
    for report in first.reports():
        assert 0.0 <= report.metrics["val_top1"] <= 1.0
        assert report.metrics["train_loss"] > 0.0
    assert epochs_of(first.checkpoints()) == [1, 2]
    assert len(first.weights()) == 1

    # The next segment, handed the checkpoint saved last, trains epoch 3 only and lands where
    # one uninterrupted run does: the model, optimiser, cosine and RNG all came back.
    second = first.next_segment(tmp_path / "2", to_epoch=3)
    run(second, python(PLAIN))
    whole = segment(tmp_path / "whole", to_epoch=3, epochs=3)
    run(whole, python(PLAIN))

    assert epochs_of(second.reports()) == [3] and epochs_of(second.checkpoints()) == [3]
    assert second.reports()[0].metrics == whole.reports()[-1].metrics
    assert first.reports()[1].metrics == whole.reports()[1].metrics


def test_the_plain_script_stops_cleanly_when_the_worker_says_stop(tmp_path: Path) -> None:
    worker = segment(tmp_path, to_epoch=20, epochs=20)
    process = subprocess.Popen(
        [*map(str, python(PLAIN))],
        cwd=tmp_path,
        env=worker.env(**QUICK),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not worker.reports() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    worker.stop_file.touch()  # what the worker does when the server says stop
    output = process.communicate(timeout=120)[0]

    assert process.returncode == 0, output
    reported = epochs_of(worker.reports())
    assert reported[0] == 1 and reported[-1] < 20
    # Every epoch it reported has its checkpoint: a resume loses nothing it was told of.
    assert epochs_of(worker.checkpoints()) == reported
    assert worker.weights() == []  # not the end of the segment


def test_the_lightning_script_reports_checkpoints_and_resumes_through_the_callback(
    tmp_path: Path,
) -> None:
    first = segment(tmp_path / "1", to_epoch=2, epochs=3)
    run(first, python(LIGHTNING))

    assert epochs_of(first.reports()) == [1, 2]
    assert all(0.0 <= r.metrics["val_top1"] <= 1.0 for r in first.reports())
    assert epochs_of(first.checkpoints()) == [1, 2]
    assert len(first.weights()) == 1

    second = first.next_segment(tmp_path / "2", to_epoch=3)
    done = run(second, python(LIGHTNING))

    # Lightning restored its loop from the checkpoint: it trains the third epoch only.
    assert "Restored all states from the checkpoint" in done.stdout + done.stderr
    assert epochs_of(second.reports()) == [3] and epochs_of(second.checkpoints()) == [3]


def test_the_shell_script_reports_the_searchs_metric_through_vitcube_trial(
    tmp_path: Path,
) -> None:
    minimize = {"name": "val_error", "goal": "minimize"}
    first = segment(tmp_path / "1", to_epoch=2, epochs=3, metric=minimize)
    run(first, SHELL)

    errors = [r.metrics["val_error"] for r in first.reports()]
    assert epochs_of(first.reports()) == [1, 2] and errors[1] < errors[0] < 1.0
    assert epochs_of(first.checkpoints()) == [1, 2]

    second = first.next_segment(tmp_path / "2", to_epoch=3)
    run(second, SHELL)
    assert epochs_of(second.reports()) == [3]
    assert second.reports()[0].metrics["val_error"] < errors[1]

    # A checkpoint from another epoch is refused, not trained from.
    wrong = play_worker(
        tmp_path / "wrong",
        from_epoch=1,
        to_epoch=3,
        epochs=3,
        metric=minimize,
        checkpoint=second.checkpoints()[-1].path,
    )
    refused = wrong.run(*SHELL, env=QUICK)
    assert refused.returncode == 1
    assert "the checkpoint is after epoch 3, but this segment starts after epoch 1" in (
        refused.stderr
    )
    assert wrong.reports() == []


def test_the_shell_script_exits_0_on_sigterm_without_reporting_the_cut_epoch(
    tmp_path: Path,
) -> None:
    worker = segment(tmp_path, to_epoch=5, epochs=5)
    process = subprocess.Popen(
        [str(part) for part in SHELL],
        cwd=tmp_path,
        env=worker.env(**{**QUICK, "VITCUBE_EXAMPLE_EPOCH_S": "30"}),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not any(child.name() == "sleep" for child in psutil.Process(process.pid).children()):
        assert process.poll() is None and time.monotonic() < deadline, "no epoch started"
        time.sleep(0.05)  # reading the trial file; then into the first 30-s "epoch"
    time.sleep(0.2)  # from starting the "epoch" to waiting for it
    started = time.monotonic()
    process.terminate()
    output = process.communicate(timeout=60)[0]

    assert process.returncode == 0, output
    assert time.monotonic() - started < 10  # it did not sit out the epoch
    assert worker.reports() == []
