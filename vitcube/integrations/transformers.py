"""Hugging Face `transformers.Trainer` on the SDK: one callback, and a helper to resume.

    from vitcube import trial
    from vitcube.integrations.transformers import VitcubeCallback, resume_checkpoint

    t = trial.current()
    args = TrainingArguments(output_dir="out", num_train_epochs=t.to_epoch,
                             eval_strategy="epoch", save_strategy="epoch", logging_strategy="epoch")
    trainer = Trainer(model=..., args=args, compute_metrics=lambda p: {"val_top1": ...},
                      callbacks=[VitcubeCallback()], ...)
    trainer.train(resume_from_checkpoint=resume_checkpoint())

What the callback does:
- `on_evaluate` at the end of an epoch reports the evaluation's metrics as that epoch (1-based;
  an evaluation in the middle of an epoch reports nothing). Names lose the Trainer's `eval_`
  prefix, so the keys of `compute_metrics` come back as chosen: `eval_val_top1` → `val_top1`,
  `eval_accuracy` → `accuracy`; `eval_loss` becomes `val_loss`; the Trainer's timings
  (`eval_runtime`, `…_per_second`) and `epoch` are left out; the training loss last logged
  (`logging_strategy="epoch"` logs the epoch's mean) is added as `train_loss`. The search's
  metric is required: name it in `compute_metrics`, or pass `VitcubeCallback(metric="accuracy")`
  to say which (prefix-less) key holds it;
- `on_save` packs the checkpoint directory the Trainer just wrote (model, optimizer, scheduler,
  RNG and trainer state: everything `resume_from_checkpoint` restores) into one tar file and
  announces it as the state after the last whole epoch. `resume_checkpoint()` unpacks the
  trial's checkpoint and returns its directory for `trainer.train(resume_from_checkpoint=…)`
  (None on a fresh start), so a resumed run continues exactly where the save was, mid-epoch
  included;
- once `t.should_stop` (checked after every step; SIGTERM sets it through the SDK), it asks the
  Trainer to save a checkpoint and stop, so the trial resumes with nothing lost; it also stops
  training after `t.to_epoch`;
- `on_train_end` saves the model's weights.

Imports transformers (the `transformers` extra); never imported by vitcube itself.
"""

from __future__ import annotations

import math
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from vitcube import trial as sdk
from vitcube.integrations import as_search_metric

__all__ = ["VitcubeCallback", "resume_checkpoint"]

PREFIX = "eval_"
RENAMED = {"loss": "val_loss"}
LEFT_OUT_SUFFIXES = ("_runtime", "_per_second", "_compilation_time")


class VitcubeCallback(TrainerCallback):
    """Reports every epoch's evaluation to the worker, checkpoints, and honours `should_stop`.

    metric: the (prefix-less) evaluation key holding the search's metric, when it has another
    name (None: the search's metric name). trial: the SDK's Trial (None: `current()`).
    """

    def __init__(self, metric: str | None = None, *, trial: sdk.Trial | None = None) -> None:
        self.trial = trial if trial is not None else sdk.current()
        self.metric_key = metric or self.trial.metric.name
        self._train_loss: float | None = None
        self._stopping = False
        self._announced_step: int | None = None  # a stop may save the same step twice

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if logs and isinstance(logs.get("loss"), int | float):
            self._train_loss = float(logs["loss"])

    def on_evaluate(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        metrics: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        epoch = _whole_epoch(state.epoch)
        if epoch is None or epoch <= self.trial.from_epoch or metrics is None:
            return  # mid-epoch, or before this segment (a resumed run's first evaluation)
        self.trial.report(epoch, **self._metrics(metrics, epoch))
        if epoch >= self.trial.to_epoch:
            control.should_training_stop = True

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._honour_stop(control)

    def on_epoch_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._honour_stop(control)

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        directory = Path(args.output_dir or ".") / f"checkpoint-{state.global_step}"
        if (
            not state.is_world_process_zero
            or not directory.is_dir()
            or state.global_step == self._announced_step
        ):
            return
        self._announced_step = state.global_step
        epoch = max(self.trial.from_epoch, math.floor((state.epoch or 0.0) + 1e-6))
        self.trial.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        scratch = self.trial.checkpoint_dir / f".{directory.name}.tar.partial"
        with tarfile.open(scratch, "w") as archive:
            archive.add(directory, arcname=directory.name)
        self.trial.save_checkpoint_file(scratch, epoch=min(epoch, self.trial.to_epoch), move=True)

    def on_train_end(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        model: Any = None,
        **kwargs: Any,
    ) -> None:
        if model is not None and state.is_world_process_zero:
            self.trial.save_weights(model)

    # -- helpers --------------------------------------------------------------------------
    def _honour_stop(self, control: TrainerControl) -> None:
        if self._stopping or not self.trial.should_stop:
            return
        self._stopping = True
        control.should_save = True  # the Trainer saves after this step; on_save announces it
        control.should_training_stop = True

    def _metrics(self, metrics: dict[str, Any], epoch: int) -> dict[str, float]:
        reported: dict[str, float] = {}
        for key, value in metrics.items():
            name = key.removeprefix(PREFIX)
            if name == "epoch" or key.endswith(LEFT_OUT_SUFFIXES):
                continue
            reported[RENAMED.get(name, name)] = value
        if self._train_loss is not None:
            reported.setdefault("train_loss", self._train_loss)
        return as_search_metric(
            reported,
            self.metric_key,
            self.trial,
            missing=f"epoch {epoch}: the evaluation has no {self.metric_key!r}: return it "
            "from compute_metrics",
        )


def resume_checkpoint(trial: sdk.Trial | None = None) -> str | None:
    """The directory of the trial's checkpoint, unpacked, for `trainer.train(
    resume_from_checkpoint=…)`; None on a fresh start. Unpacked (safely: no links out, no
    absolute paths) into a fresh directory under the trial's checkpoint_dir."""
    t = trial if trial is not None else sdk.current()
    if t.checkpoint_path is None:
        return None
    t.checkpoint_dir.mkdir(parents=True, exist_ok=True)
    target = Path(tempfile.mkdtemp(prefix="resume-", dir=t.checkpoint_dir))
    try:
        with tarfile.open(t.checkpoint_path) as archive:
            archive.extractall(target, filter="data")
    except (tarfile.TarError, OSError) as error:
        shutil.rmtree(target, ignore_errors=True)
        raise ValueError(
            f"the trial's checkpoint {t.checkpoint_path} is not a Trainer checkpoint saved by "
            f"VitcubeCallback ({error})"
        ) from None
    folders = [path for path in target.iterdir() if path.is_dir()]
    if len(folders) != 1:
        raise ValueError(
            f"the trial's checkpoint {t.checkpoint_path} holds {len(folders)} folders, expected "
            "the one checkpoint-STEP folder VitcubeCallback saves"
        )
    return str(folders[0])


def _whole_epoch(epoch: float | None) -> int | None:
    """The epoch number when `epoch` (the Trainer's, fractional) is at an epoch's end."""
    if epoch is None:
        return None
    whole = round(epoch)
    return whole if whole >= 1 and abs(epoch - whole) < 1e-6 else None
