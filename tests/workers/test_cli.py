"""Worker command-line pieces that need no server: --gpus, failure triage, progress output."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys

import pytest
import torch
from rich.console import Console

from tests.factories import trial_lease
from tests.imports import modules_loaded_by
from vitcube.workers.cli import parse_gpus
from vitcube.workers.datasets import DatasetError
from vitcube.workers.faults import CompilerMissing, describe_despite_signals, describe_failure
from vitcube.workers.host import loader_shm_bytes, missing_compiler, shm_warning
from vitcube.workers.progress import PlainProgress, RichProgress
from vitcube.workers.recipe import TrainingConfig
from vitcube.workers.training import EpochReport, TrainingDiverged

WORKER = [sys.executable, "-m", "vitcube.workers"]
LEASE = trial_lease(arch={"resolution": 224}, training={"batch_size": 256})


def test_gpus_option_takes_all_or_a_list_of_indices() -> None:
    assert parse_gpus("all", 4) == [0, 1, 2, 3]
    assert parse_gpus("1,3", 4) == [1, 3]
    assert parse_gpus(" 0,2,3 ", 4) == [0, 2, 3]
    assert parse_gpus("2,", 4) == [2]  # one GPU in list form
    with pytest.raises(ValueError, match="no GPU is visible"):
        parse_gpus("all", 0)
    with pytest.raises(ValueError, match=r"GPU\(s\) \[5\] not visible \(4 visible\)"):
        parse_gpus("0,5", 4)
    with pytest.raises(ValueError, match="all or a list of GPU indices like 0,1,2,3"):
        parse_gpus("first", 4)
    with pytest.raises(ValueError, match="listed twice"):
        parse_gpus("1,1", 4)


def test_a_bare_gpu_count_is_refused_with_the_fix() -> None:
    with pytest.raises(ValueError) as count:
        parse_gpus("4", 8)
    assert "--gpus 4 is ambiguous" in str(count.value)
    assert "--gpus 0,1,2,3, or use --gpus all" in str(count.value)
    assert "--device cuda:4" in str(count.value)
    with pytest.raises(ValueError, match="--gpus 0,1, or use --gpus all"):
        parse_gpus("1", 8)


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
    message, retry, fault = describe_failure(oom, LEASE, None)
    assert not retry and fault is None
    assert "batch size 256 and 224 px, even with the batch split into micro-batches" in message
    message, retry, _ = describe_failure(DatasetError("/data/x is missing"), LEASE, None)
    assert not retry and "/data/x is missing" in message
    assert describe_failure(TrainingDiverged("loss became nan"), LEASE, None).retry is False
    assert describe_failure(ValueError("training.lr must be"), LEASE, None).retry is False
    with pytest.raises(ValueError) as bad_recipe:
        TrainingConfig.from_dict({"epochs": 5, "lr": -1})
    message, retry, _ = describe_failure(bad_recipe.value, LEASE, None)
    assert (
        not retry
        and message == "invalid trial: training.lr must be a number in (0, 10), or null, got -1"
    )
    message, retry, fault = describe_failure(RuntimeError("flaky NFS"), LEASE, None)
    assert retry and fault is None and message.startswith("RuntimeError: flaky NFS")


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (RuntimeError("CUDA error: an illegal memory access was encountered"), "sticky"),
        (RuntimeError("CUDA error: device-side assert triggered"), "sticky"),
        (RuntimeError("CUDA error: uncorrectable ECC error encountered"), "sticky"),
        (
            RuntimeError(
                "CUDA error: CUBLAS_STATUS_EXECUTION_FAILED when calling `cublasSgemm( handle)`"
            ),
            "host",
        ),
        (RuntimeError("cuDNN error: CUDNN_STATUS_INTERNAL_ERROR"), "host"),
        (RuntimeError("DataLoader worker (pid 4242) is killed by signal: Bus error. "), "host"),
        (RuntimeError("DataLoader worker (pid(s) 17, 18) exited unexpectedly"), "host"),
        (
            RuntimeError(
                "lost a DataLoader worker mid-batch (ConnectionResetError: [Errno 104] "
                "Connection reset by peer)"
            ),
            "host",
        ),
    ],
)
def test_a_broken_gpu_or_loader_is_a_worker_fault_not_the_trials(
    error: Exception, kind: str
) -> None:
    message, retry, fault = describe_failure(error, LEASE, None)
    assert retry and fault == kind
    assert message.startswith("worker fault on RuntimeError: ")
    if "DataLoader" in str(error):
        assert "/dev/shm too small" in message


def test_a_worker_fault_is_found_in_the_cause_of_a_wrapped_error() -> None:
    try:
        try:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        except RuntimeError as cuda:
            raise ValueError("could not collate the batch") from cuda
    except ValueError as wrapped:
        assert describe_failure(wrapped, LEASE, None).fault == "sticky"
    # an ordinary ValueError stays the trial's own, final failure
    assert describe_failure(ValueError("bad arch"), LEASE, None).fault is None


class _InterruptedWhileDescribed(Exception):
    """An error whose description is cut short by a second one, as torch's SIGCHLD handler does
    (it raises a dead DataLoader worker's error at whatever line the main thread is running)."""

    def __str__(self) -> str:
        raise RuntimeError("DataLoader worker (pid 4242) is killed by signal: Killed. ")


def test_an_error_raised_while_a_failure_is_described_is_described_instead() -> None:
    message, retry, fault = describe_despite_signals(_InterruptedWhileDescribed(), LEASE, None)
    assert retry and fault == "host"
    assert "is killed by signal" in message


def test_compile_without_a_compiler_is_a_final_failure_that_says_what_to_do(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert missing_compiler("cpu") is None or shutil.which("g++") is None
    monkeypatch.setenv("PATH", "/nonexistent")  # a host without cc, gcc, clang
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.delenv("CXX", raising=False)
    reason = missing_compiler("cuda")
    assert reason is not None
    assert "no C compiler (Triton" in reason and "training.compile false" in reason
    message, retry, fault = describe_failure(CompilerMissing(reason), LEASE, None)
    assert (message, retry, fault) == (reason, False, None)
    assert "no C++ compiler" in (missing_compiler("cpu") or "")


def test_shared_memory_warning_names_the_fix() -> None:
    need = loader_shm_bytes(num_workers=4, batch_size=64, load_size=293)
    assert need == 4 * 2 * 64 * 3 * 293 * 293  # ~132 MB: 4 workers x 2 batches in flight
    warning = shm_warning(64 << 20, need, num_workers=4)  # a container's default 64 MiB
    assert warning is not None
    assert warning.startswith("/dev/shm has 64 MiB free but 4 DataLoader workers need about 126")
    assert "shm_size" in warning and "emptyDir {medium: Memory}" in warning
    assert shm_warning(2 << 30, need, num_workers=4) is None
    assert shm_warning(None, need, num_workers=4) is None  # no /dev/shm (not Linux)
    box = shm_warning(512 << 20, 8 * need, num_workers=4, processes=8)  # 8 GPUs share it
    assert box is not None and "8 worker processes x 4 DataLoader workers need about 1" in box


def test_plain_progress_prints_epoch_lines_with_accuracy_and_eta() -> None:
    stream = io.StringIO()
    progress = PlainProgress(stream, step_every_s=0.0)
    progress.start_trial(7, "search 1, mobilevit_v2 at 64 px")
    progress.on_start(epochs=4, steps_per_epoch=10, train_images=640)
    progress.on_step(epoch=1, step=5, loss=2.25, images_per_s=321.0, lr=0.001)
    progress.on_epoch(1, EpochReport(1, 2.0, 0.5, 0.9, 0.001, 300.0).metrics())
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
    progress.on_epoch(1, EpochReport(1, 1.5, 0.625, 0.9, 0.001, 99.0).metrics())
    progress.close()
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "trial 7" in text and "62.5%" in text and "epoch 1/2" in text


def test_imports_stay_light_and_one_way() -> None:
    assert modules_loaded_by("import vitcube.workers.cli", ["torch"]) == []
    everything = (
        "import vitcube.workers.cli, vitcube.workers.loop, vitcube.workers.training\n"
        "import vitcube.workers.executors.builtin, vitcube.workers.executors.surrogate\n"
        "import vitcube.workers.progress, vitcube.workers.spool\n"
    )
    heavy = ("vitcube.service", "vitcube.search", "fastapi", "sqlalchemy", "botorch")
    assert modules_loaded_by(everything, heavy) == []
