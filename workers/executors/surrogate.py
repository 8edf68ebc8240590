"""The surrogate executor: the documented synthetic landscape (`workers.surrogate`) instead of
training, for load tests, optimiser benchmarks and demos without a GPU.

A `--trainer surrogate` worker serves builtin trials (label "builtin"); its reports say
`surrogate: true`. A segment reports epochs from_epoch + 1 … to_epoch of the run's curve (a
function of the trial alone, so a resumed segment continues it exactly), checkpointing each
epoch end but the run's last (a tiny JSON file: the epochs done), so that a preempted or
promoted trial resumes where it stopped, as a trained one does. `epoch_s` makes each epoch
take that long (0: instant), so signals and stops can land mid-run as they do in training.

Imports models (the MAC and parameter counts), workers.surrogate and the standard library.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from vitcube.contract import BUILTIN_TRAINER
from vitcube.workers.executors import Control, Executor, Segment, TrialOutcome

SURROGATE_CHECKPOINT_FORMAT = "vitcube-surrogate-checkpoint/1"
# Training images per epoch the surrogate reports (what the real datasets hold; digits' fixed
# split keeps 80 % of 1,797), so a surrogate search counts train_macs as a real one would.
SURROGATE_TRAIN_IMAGES = {"digits": 1437, "cifar10": 50_000, "cifar100": 50_000}


class SurrogateExecutor(Executor):
    """Reports the landscape's curve for builtin trials; `epoch_s` seconds per epoch."""

    label = BUILTIN_TRAINER

    def __init__(self, *, epoch_s: float = 0.0) -> None:
        self.epoch_s = epoch_s

    def run(self, segment: Segment) -> TrialOutcome:
        from vitcube.models import Arch, count_macs, count_params
        from vitcube.workers.surrogate import surrogate_curve

        lease, control = segment.lease, segment.control
        epochs, end = segment.epochs, segment.to_epoch
        if epochs < 1:
            raise ValueError(f"training.epochs must be >= 1, got {epochs}")
        arch = Arch.from_dict(dict(lease.arch))
        values = surrogate_curve(
            arch,
            dataset=str(lease.dataset.get("name", "digits")),
            epochs=epochs,
            seed=lease.seed,
            landscape=str(lease.dataset.get("landscape", "balanced")),
        )
        start = min(self._resume(segment), end - 1)
        segment.events.on_start(epochs=end, steps_per_epoch=1, train_images=0)
        curve = [{"epoch": e, "val_top1": float(values[e - 1])} for e in range(1, start + 1)]
        stopped = False
        for epoch in range(start + 1, end + 1):
            self._train_an_epoch(control)
            control.check()
            if control.stop.is_set():
                stopped = True
                break
            top1 = float(values[epoch - 1])
            curve.append({"epoch": epoch, "val_top1": top1})
            segment.events.on_epoch(epoch, {"val_top1": top1})
            if epoch < epochs:
                self._checkpoint(segment, epoch)
        best = segment.metric.best_point(curve) if curve else None
        return TrialOutcome(
            value=float(best["val_top1"]) if best is not None else 0.0,
            metric=segment.metric,
            curve=curve,
            stopped=stopped,
            best_epoch=int(best["epoch"]) if best is not None else 0,
            params=count_params(arch),
            macs=count_macs(arch),
            resumed_from_epoch=start or None,
            epochs_trained=float(len(curve) - start),
            train_images=surrogate_train_images(lease.dataset),
        )

    def _train_an_epoch(self, control: Control) -> None:
        """Wait `epoch_s`, as an epoch of training would, ending early on a signal or stop."""
        deadline = time.monotonic() + self.epoch_s
        while (left := deadline - time.monotonic()) > 0:
            control.check()
            if control.stop.is_set():
                return
            control.interrupted.wait(min(left, 0.05))

    def _resume(self, segment: Segment) -> int:
        """The epochs the lease's checkpoint says are done; 0 without one (or with one that is
        not the surrogate's: it is discarded)."""
        path = segment.checkpoints.resume_path()
        if path is None:
            return 0
        try:
            state = json.loads(path.read_text())
            if not isinstance(state, dict) or state.get("format") != SURROGATE_CHECKPOINT_FORMAT:
                raise ValueError(f"not a {SURROGATE_CHECKPOINT_FORMAT} checkpoint")
            epoch = state.get("epoch")
            if not isinstance(epoch, int) or not 0 <= epoch < segment.epochs:
                raise ValueError(f"its epoch {epoch!r} is not in 0 … {segment.epochs - 1}")
        except (OSError, UnicodeDecodeError, ValueError) as error:
            segment.checkpoints.discard(f"the surrogate cannot resume it: {error}")
            return 0
        segment.log(f"trial {segment.lease.id}: resuming from its checkpoint at epoch {epoch}")
        return epoch

    def _checkpoint(self, segment: Segment, epoch: int) -> None:
        path = segment.scratch / f"surrogate-e{epoch}.json"
        state = {"format": SURROGATE_CHECKPOINT_FORMAT, "trial": segment.lease.id, "epoch": epoch}
        path.write_text(json.dumps(state))
        segment.checkpoints.submit(path, epoch=epoch)


def surrogate_train_images(dataset: Mapping[str, Any]) -> int | None:
    """The images per epoch of a surrogate trial: the spec's `train_images` (shapes' option;
    any dataset may name it), else the real dataset's size, else unknown (an image folder)."""
    named = dataset.get("train_images")
    if isinstance(named, int) and not isinstance(named, bool) and named > 0:
        return named
    if dataset.get("name") == "shapes":
        from vitcube.workers.shapes import DEFAULT_TRAIN_IMAGES

        return DEFAULT_TRAIN_IMAGES
    return SURROGATE_TRAIN_IMAGES.get(str(dataset.get("name")))
