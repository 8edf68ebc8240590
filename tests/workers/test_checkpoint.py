"""Checkpoints on the worker: resume parity on the CPU, refused checkpoints, the save cadence."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch

from vitcube.models import ArchConfig
from vitcube.workers.checkpoint import (
    CheckpointCadence,
    CheckpointError,
    TrialCheckpoints,
    load_checkpoint,
    save_checkpoint,
)
from vitcube.workers.datasets import load_digits
from vitcube.workers.executors import Control, TrainingAborted
from vitcube.workers.recipe import TrainingConfig
from vitcube.workers.runner import TrainedTrial, run_trial
from vitcube.workers.training import TrainingListener

TINY_BASE = {
    "family": "mobilevit_v2",
    "width": 0.5,
    "resolution": 32,
    "num_classes": 10,
    "dropped_stages": [4, 5],
}
# Every source of randomness the trainer has: plan shuffles, crops, RandAugment, erasing, Mixup.
RECIPE = {
    "epochs": 3,
    "batch_size": 32,
    "max_steps_per_epoch": 4,
    "lr": 0.004,
    "rand_augment": True,
    "random_erase_p": 0.5,
    "mixup_alpha": 0.2,
    "cutmix_alpha": 1.0,
}
CPU = torch.device("cpu")


def tiny_arch(**overrides: Any) -> dict[str, Any]:
    return ArchConfig.from_dict({**TINY_BASE, **overrides}).scale().to_dict()


class FileSink:
    """A checkpoint sink that saves every epoch end into a directory (no uploads)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.paths: list[Path] = []

    def due(self) -> bool:
        return True

    def save(self, state_fn: Any) -> Path:
        state = state_fn()
        path = self.directory / f"e{state['epoch']}-s{state['step']}.pt"
        save_checkpoint(state, path)
        self.paths.append(path)
        return path


class InterruptAt(TrainingListener):
    """Sets `interrupted` after the first step of `epoch` (as SIGTERM would)."""

    def __init__(self, control: Control, epoch: int) -> None:
        self.control = control
        self.epoch = epoch
        self.started = False

    def on_start(self, **kwargs: Any) -> None:
        self.started = True

    def on_step(self, *, epoch: int, step: int, **kwargs: Any) -> None:
        if epoch == self.epoch and step == 1:
            self.control.interrupted.set()


def _train(**kwargs: Any) -> TrainedTrial:
    config = kwargs.pop("config", TrainingConfig.from_dict(RECIPE))
    return run_trial(
        kwargs.pop("arch", tiny_arch()),
        load_digits(),
        config=config,
        seed=3,
        device=CPU,
        onnx_latency=False,
        **kwargs,
    )


def _without_times(curve: list[dict[str, float]]) -> list[dict[str, float]]:
    return [{k: v for k, v in point.items() if k != "epoch_time_s"} for point in curve]


def test_a_resumed_run_gives_the_uninterrupted_curve_and_top1_exactly(tmp_path: Path) -> None:
    sink = FileSink(tmp_path)
    full = _train(checkpoints=sink)
    assert [p.name for p in sink.paths] == ["e1-s0.pt", "e2-s0.pt"]  # never after the last
    assert full.resumed_from_epoch is None and full.epochs_trained == 3

    # Preempted at an epoch boundary: resume from the end of epoch 1.
    boundary = _train(resume=load_checkpoint(sink.paths[0]))
    assert _without_times(boundary.curve) == _without_times(full.curve)
    assert boundary.top1 == full.top1 and boundary.best_epoch == full.best_epoch
    assert boundary.resumed_from_epoch == 1 and boundary.epochs_trained == 2

    # SIGTERM mid-epoch: a checkpoint one step into epoch 2, then the rest of that epoch.
    control = Control()
    interrupted = FileSink(tmp_path / "mid")
    with pytest.raises(TrainingAborted):
        _train(control=control, listener=InterruptAt(control, epoch=2), checkpoints=interrupted)
    assert interrupted.paths[-1].name == "e1-s1.pt"
    mid = load_checkpoint(interrupted.paths[-1])
    resumed = _train(resume=mid)
    assert _without_times(resumed.curve) == _without_times(full.curve)
    assert resumed.top1 == full.top1
    assert resumed.resumed_from_epoch == 1
    assert resumed.epochs_trained == pytest.approx(2 - 1 / 4)
    # The weights reported are the best epoch's, whichever run trained them.
    assert resumed.weights is not None and full.weights is not None
    assert all(torch.equal(resumed.weights[k], full.weights[k]) for k in full.weights)


class SegmentEndsOnly(FileSink):
    """A sink whose cadence never asks for a save: only a segment's end is saved."""

    def due(self) -> bool:
        return False


def test_segments_of_a_run_resumed_in_turn_give_the_uninterrupted_run(tmp_path: Path) -> None:
    """A lease's segment (to_epoch) trains up to that epoch and always leaves a checkpoint at its
    end; the next segment resumes from it with the LR schedule of the whole run."""
    full = _train()
    sink = SegmentEndsOnly(tmp_path)
    first = _train(checkpoints=sink, to_epoch=1)
    assert [p.name for p in sink.paths] == ["e1-s0.pt"]
    assert _without_times(first.curve) == _without_times(full.curve[:1])
    assert first.epochs_trained == 1
    second = _train(resume=load_checkpoint(sink.paths[-1]), checkpoints=sink, to_epoch=2)
    assert [p.name for p in sink.paths] == ["e1-s0.pt", "e2-s0.pt"]
    assert second.resumed_from_epoch == 1 and second.epochs_trained == 1
    last = _train(resume=load_checkpoint(sink.paths[-1]), checkpoints=sink)
    assert len(sink.paths) == 2  # nothing is saved after the last epoch
    assert _without_times(last.curve) == _without_times(full.curve)
    assert last.top1 == full.top1 and last.best_epoch == full.best_epoch

    with pytest.raises(ValueError, match=r"at most training\.epochs = 3"):
        _train(to_epoch=4)
    with pytest.raises(ValueError, match="after the checkpoint's epoch 2"):
        _train(resume=load_checkpoint(sink.paths[-1]), to_epoch=2)


def test_the_checkpoint_file_holds_what_resume_needs(tmp_path: Path) -> None:
    sink = FileSink(tmp_path)
    _train(config=TrainingConfig.from_dict({**RECIPE, "epochs": 2}), checkpoints=sink)
    state = torch.load(sink.paths[0], weights_only=True, map_location="cpu")
    assert state["format"] == "vitcube-checkpoint/1"
    assert state["arch"] == tiny_arch() and (state["epoch"], state["step"]) == (1, 0)
    assert state["scaler"] is None and state["ema_updates"] == 4
    assert set(state["rng"]) >= {"torch", "cuda", "plan", "plan_epoch_start", "augment"}
    assert [p["epoch"] for p in state["curve"]] == [1] and state["best"]["epoch"] == 1
    assert state["model"].keys() == state["ema"].keys()
    assert state["optimizer"]["state"] and isinstance(state["recipe_digest"], str)


def _one_checkpoint(tmp_path: Path) -> Path:
    sink = FileSink(tmp_path)
    _train(config=TrainingConfig.from_dict({**RECIPE, "epochs": 2}), checkpoints=sink)
    return sink.paths[0]


def test_a_corrupt_or_truncated_or_foreign_file_is_a_checkpoint_error(tmp_path: Path) -> None:
    path = _one_checkpoint(tmp_path)
    data = path.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all" * 100)
    flipped = tmp_path / "flipped.pt"
    flipped.write_bytes(data[:200] + bytes(b ^ 0xFF for b in data[200:4000]) + data[4000:])
    foreign = tmp_path / "foreign.pt"
    torch.save({"format": "something-else"}, foreign)
    for bad in (truncated, garbage, flipped, foreign):
        with pytest.raises(CheckpointError):
            load_checkpoint(bad)


def test_a_checkpoint_of_another_network_or_recipe_is_refused_before_training(
    tmp_path: Path,
) -> None:
    state = load_checkpoint(_one_checkpoint(tmp_path))
    listener = InterruptAt(Control(), epoch=99)
    with pytest.raises(CheckpointError, match="another architecture"):
        _train(arch=tiny_arch(width=0.75), resume=state, listener=listener)
    with pytest.raises(CheckpointError, match="another recipe"):
        _train(config=TrainingConfig.from_dict({**RECIPE, "lr": 0.001}), resume=state)
    # Same architecture dict, tensors that do not fit (a damaged or hand-edited checkpoint).
    damaged = copy.copy(state)
    damaged["model"] = {k: v[..., :1] if v.ndim else v for k, v in state["model"].items()}
    with pytest.raises(CheckpointError, match="do not fit"):
        _train(
            config=TrainingConfig.from_dict({**RECIPE, "epochs": 2}),
            resume=damaged,
            listener=listener,
        )
    assert not listener.started  # refused before the first step


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_cadence_saves_every_epoch_while_cheap_else_every_interval() -> None:
    clock = FakeClock()
    cadence = CheckpointCadence(180.0, clock=clock)
    assert cadence.due()  # the first epoch end measures what a save costs
    cadence.saved(cost_s=0.5)
    clock.now += 20.0  # a 20 s epoch: a 0.5 s save is 2.5 % of it
    assert cadence.due()
    cadence.saved(cost_s=5.0)
    clock.now += 20.0  # 5 s is 25 % of 20 s: wait for the interval
    assert not cadence.due()
    clock.now += 80.0  # 100 s since the save: 5 % of it is 5 s, cheap again
    assert cadence.due()
    cadence.saved(cost_s=30.0)
    clock.now += 179.0
    assert not cadence.due()
    clock.now += 1.0
    assert cadence.due()  # checkpoint_every_s passed
    every_epoch = CheckpointCadence(0.0, clock=clock)
    every_epoch.saved(cost_s=100.0)
    assert every_epoch.due()
    with pytest.raises(ValueError, match="checkpoint_every_s"):
        CheckpointCadence(-1.0)


def test_trial_checkpoints_write_atomically_and_keep_only_the_newest(tmp_path: Path) -> None:
    sink = TrialCheckpoints(tmp_path / "ck", 7, cadence=CheckpointCadence(0.0))
    first = sink.save(lambda: {"format": "x", "epoch": 1, "step": 0, "payload": torch.ones(3)})
    second = sink.save(lambda: {"format": "x", "epoch": 2, "step": 5, "payload": torch.ones(3)})
    assert not first.exists() and second.exists()
    assert [p.name for p in (tmp_path / "ck").iterdir()] == [second.name]  # no temporaries
    assert torch.load(second, weights_only=True)["step"] == 5
