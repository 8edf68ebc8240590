"""vitcube.integrations.transformers: a real Hugging Face Trainer script
(transformers_digits.py beside this file) trains the trial's MobileViT on digits as a worker
runs it, segment after segment: the reports carry the search's metric per epoch under the
names compute_metrics chose, the checkpoint announced after an epoch resumes at the next one,
a stop saves mid-epoch and ends training early, and resuming that save loses no step."""

from __future__ import annotations

import tarfile
from pathlib import Path
from typing import Any

import pytest
import torch
from trialfiles import PlayedWorker, play_worker, tiny_arch

from vitcube.trial import Trial

pytest.importorskip("transformers")
pytest.importorskip("accelerate")
pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).with_name("transformers_digits.py")
STEPS_PER_EPOCH = 6  # 192 training images, batches of 32


@pytest.fixture(scope="module")
def first_segment(tmp_path_factory: pytest.TempPathFactory) -> tuple[PlayedWorker, dict[str, Any]]:
    """Epoch 1 of a 3-epoch trial."""
    worker = play_worker(
        tmp_path_factory.mktemp("transformers") / "segment-1",
        from_epoch=0,
        to_epoch=1,
        epochs=3,
        arch=tiny_arch(),
    )
    return worker, worker.run_python(SCRIPT)


def test_an_epoch_is_reported_checkpointed_and_its_weights_saved(
    first_segment: tuple[PlayedWorker, dict[str, Any]],
) -> None:
    worker, printed = first_segment
    assert printed["global_step"] == STEPS_PER_EPOCH
    (report,) = worker.reports()
    assert report.epoch == 1
    # eval_val_top1 -> val_top1, eval_loss -> val_loss, the epoch's logged loss -> train_loss;
    # the Trainer's timings are left out.
    assert set(report.metrics) == {"val_top1", "val_loss", "train_loss"}
    assert 0.0 <= report.metrics["val_top1"] <= 1.0
    (checkpoint,) = worker.checkpoints()
    assert checkpoint.epoch == 1 and checkpoint.path is not None
    with tarfile.open(checkpoint.path) as archive:  # the Trainer's whole checkpoint folder
        names = set(archive.getnames())
    assert {"checkpoint-6/trainer_state.json", "checkpoint-6/optimizer.pt"} <= names
    (weights,) = worker.weights()
    assert weights.path is not None
    exported = torch.load(weights.path, weights_only=True)
    network = Trial.from_file(worker.trial_file).build_model(num_classes=10)
    network.load_state_dict({k.removeprefix("network."): v for k, v in exported.items()})
    assert [m.type for m in worker.messages()] == ["report", "checkpoint", "weights"]


def test_resume_at_the_next_epoch_a_stop_saves_mid_epoch_and_that_save_resumes(
    first_segment: tuple[PlayedWorker, dict[str, Any]],
) -> None:
    worker, _ = first_segment
    second = worker.next_segment(worker.directory.parent / "segment-2", to_epoch=3)
    stop_at = 2 * STEPS_PER_EPOCH + 2  # the server says stop two steps into epoch 3
    printed = second.run_python(SCRIPT, STOP_AT_STEP=str(stop_at))

    assert printed["global_step"] == stop_at  # it stopped at the step the stop came
    assert [m.epoch for m in second.reports()] == [2]  # resumed: epoch 1 not trained again
    checkpoints = second.checkpoints()
    # Epoch 2's, then the stop's own save two steps into epoch 3 (still "after epoch 2").
    assert [m.epoch for m in checkpoints] == [2, 2]
    assert checkpoints[-1].path is not None
    with tarfile.open(checkpoints[-1].path) as archive:
        assert f"checkpoint-{stop_at}/trainer_state.json" in archive.getnames()
    assert len(second.weights()) == 1

    third = second.next_segment(worker.directory.parent / "segment-3", to_epoch=3)
    printed = third.run_python(SCRIPT)
    assert printed["global_step"] == 3 * STEPS_PER_EPOCH  # no step lost, none trained twice
    assert [m.epoch for m in third.reports()] == [3]
    assert [m.epoch for m in third.checkpoints()] == [3]
