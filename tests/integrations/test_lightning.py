"""vitcube.integrations.lightning: a real Lightning script (lightning_digits.py beside this file)
trains the trial's MobileViT on digits as a worker runs it, one segment after another: the
reports carry the search's metric per epoch, the checkpoint announced after an epoch loads and
resumes at the next epoch, the stop file ends training early, and the weights are saved."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from trialfiles import PlayedWorker, play_worker, tiny_arch

from vitcube.trial import Trial

pytest.importorskip("lightning")
pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).with_name("lightning_digits.py")
STEPS_PER_EPOCH = 6  # 192 training images, batches of 32


@pytest.fixture(scope="module")
def first_segment(tmp_path_factory: pytest.TempPathFactory) -> tuple[PlayedWorker, dict[str, Any]]:
    """Epoch 1 of a 3-epoch trial."""
    worker = play_worker(
        tmp_path_factory.mktemp("lightning") / "segment-1",
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
    assert printed["global_step"] == STEPS_PER_EPOCH  # max_epochs = to_epoch: one epoch
    (report,) = worker.reports()  # the sanity check's validation reported nothing
    assert report.epoch == 1
    assert 0.0 <= report.metrics["val_top1"] <= 1.0
    assert {"val_loss", "train_loss"} <= set(report.metrics)
    (checkpoint,) = worker.checkpoints()
    assert checkpoint.epoch == 1 and checkpoint.path is not None
    state = torch.load(checkpoint.path, weights_only=False, map_location="cpu")
    assert state["global_step"] == STEPS_PER_EPOCH  # Lightning's own checkpoint, whole
    assert any(key.startswith("model.") for key in state["state_dict"])
    assert state["optimizer_states"] and state["lr_schedulers"]
    (weights,) = worker.weights()
    assert weights.path is not None
    exported = torch.load(weights.path, weights_only=True)
    built = Trial.from_file(worker.trial_file).build_model(num_classes=10)
    built.load_state_dict(exported)  # the network itself (model_attribute="model"), for export
    # The segment's messages come in the protocol's order: report, its checkpoint, weights.
    assert [m.type for m in worker.messages()] == ["report", "checkpoint", "weights"]


def test_the_next_segment_resumes_at_the_next_epoch_and_a_stop_ends_it_early(
    first_segment: tuple[PlayedWorker, dict[str, Any]],
) -> None:
    worker, _ = first_segment
    second = worker.next_segment(worker.directory.parent / "segment-2", to_epoch=3)
    # The server says stop two steps into epoch 3 (the stop file appears after step 14).
    stop_at = 2 * STEPS_PER_EPOCH + 2
    printed = second.run_python(SCRIPT, STOP_AT_STEP=str(stop_at))

    assert [m.epoch for m in second.reports()] == [2]  # resumed: epoch 1 was not trained again
    assert stop_at < printed["global_step"] < 3 * STEPS_PER_EPOCH  # stopped within epoch 3
    assert second.stop_file.exists()
    (checkpoint,) = second.checkpoints()  # the cut-short epoch 3 is neither reported nor saved
    assert checkpoint.epoch == 2 and checkpoint.path is not None
    resumed = torch.load(checkpoint.path, weights_only=False, map_location="cpu")
    assert resumed["global_step"] == 2 * STEPS_PER_EPOCH
    assert len(second.weights()) == 1
