"""Worker command-line pieces that need no server: --gpus, failure triage, progress output."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest
import torch
from rich.console import Console

from tests.factories import trial_lease
from vitcube.workers.cli import parse_gpus
from vitcube.workers.datasets import DatasetError
from vitcube.workers.loop import describe_failure
from vitcube.workers.progress import PlainProgress, RichProgress
from vitcube.workers.trainer import EpochReport, TrainingConfig, TrainingDiverged

WORKER = [sys.executable, "-m", "vitcube.workers"]
LEASE = trial_lease(arch={"resolution": 224}, training={"batch_size": 256})


def test_gpus_option() -> None:
    assert parse_gpus("all", 4) == [0, 1, 2, 3]
    assert parse_gpus("2", 4) == [0, 1]
    assert parse_gpus("1,3", 4) == [1, 3]
    with pytest.raises(ValueError, match="no GPU is visible"):
        parse_gpus("all", 0)
    with pytest.raises(ValueError, match=r"GPU\(s\) \[5\] not visible \(4 visible\)"):
        parse_gpus("0,5", 4)
    with pytest.raises(ValueError, match="all, a count or a list"):
        parse_gpus("first", 4)


def test_gpus_all_on_a_box_without_gpus_says_so() -> None:
    if torch.cuda.is_available():
        pytest.skip("this box has a GPU")
    done = subprocess.run(
        [*WORKER, "--server", "http://127.0.0.1:9", "--token", "t", "--gpus", "all"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "no GPU is visible on this machine; use --device cpu" in done.stderr


def test_failures_that_a_retry_cannot_fix_are_final() -> None:
    oom = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    message, retry = describe_failure(oom, LEASE, None)
    assert not retry
    assert "batch size 256 and 224 px: lower training.batch_size" in message
    message, retry = describe_failure(DatasetError("/data/x is missing"), LEASE, None)
    assert not retry and "/data/x is missing" in message
    assert describe_failure(TrainingDiverged("loss became nan"), LEASE, None)[1] is False
    assert describe_failure(ValueError("training.lr must be"), LEASE, None)[1] is False
    with pytest.raises(ValueError) as bad_recipe:
        TrainingConfig.from_dict({"epochs": 5, "lr": -1})
    message, retry = describe_failure(bad_recipe.value, LEASE, None)
    assert not retry and message == "invalid trial: training.lr must be a number in (0, 10), got -1"
    message, retry = describe_failure(RuntimeError("flaky NFS"), LEASE, None)
    assert retry and message.startswith("RuntimeError: flaky NFS")


def test_plain_progress_prints_epoch_lines_with_accuracy_and_eta() -> None:
    stream = io.StringIO()
    progress = PlainProgress(stream, step_every_s=0.0)
    progress.start_trial(7, "search 1, mobilevit_v2 at 64 px")
    progress.on_start(epochs=4, steps_per_epoch=10, train_images=640)
    progress.on_step(epoch=1, step=5, loss=2.25, images_per_s=321.0, lr=0.001)
    progress.on_epoch(EpochReport(1, 2.0, 0.5, 0.9, 0.001, 300.0))
    progress.end_trial("completed")
    text = stream.getvalue()
    assert "trial 7: search 1, mobilevit_v2 at 64 px" in text
    assert "trial 7 epoch 1/4 step 5: loss 2.2500, 321 img/s" in text
    assert "trial 7 epoch 1/4: loss 2.0000, top-1 50.00%, top-5 90.00%, 300 img/s, ETA" in text


def test_rich_progress_renders_a_bar() -> None:
    console = Console(file=io.StringIO(), force_terminal=True, width=160)
    progress = RichProgress(console)
    progress.start_trial(7, "search 1")
    progress.on_start(epochs=2, steps_per_epoch=3, train_images=96)
    progress.on_step(epoch=1, step=3, loss=1.5, images_per_s=99.0, lr=0.001)
    progress.on_epoch(EpochReport(1, 1.5, 0.625, 0.9, 0.001, 99.0))
    progress.close()
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "trial 7" in text and "62.5%" in text and "epoch 1/2" in text


def test_imports_stay_light_and_one_way() -> None:
    probe = (
        "import sys, vitcube.workers.cli\n"
        "assert 'torch' not in sys.modules, 'importing workers.cli imported torch'\n"
        "import vitcube.workers.loop, vitcube.workers.trainer\n"
        "import vitcube.workers.progress, vitcube.workers.spool\n"
        "heavy = ('vitcube.service', 'vitcube.search', 'fastapi', 'sqlalchemy', 'botorch')\n"
        "leaked = sorted(m for m in heavy if m in sys.modules)\n"
        "assert not leaked, leaked\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
