"""PyTorch Lightning on the SDK: one callback that reports, checkpoints, resumes and stops.

    from vitcube import trial
    from vitcube.integrations.lightning import VitcubeCallback

    t = trial.current()
    module = MyModule(t.build_model(num_classes=100))     # logs "val_top1" in validation
    trainer = lightning.pytorch.Trainer(max_epochs=t.to_epoch, callbacks=[VitcubeCallback()])
    trainer.fit(module, train_loader, val_loader, ckpt_path=t.checkpoint_path)

What the callback does, at the end of every training epoch that ran its validation:
- reports `trainer.callback_metrics` (every scalar, as floats) as epoch `current_epoch + 1`
  (1-based, absolute: a resumed run continues the numbering). The search's metric is required:
  log it under its name, or pass `VitcubeCallback(metric="val/acc")` to say which logged key is
  it. Sanity-check validation reports nothing, and neither does an epoch cut short by a stop;
- saves a checkpoint with `trainer.save_checkpoint` (the module, optimizers, schedulers and loop
  state: all Lightning resumes from) and announces it; the next segment, or another box after
  a crash, gets it back as `t.checkpoint_path`, hence `fit(..., ckpt_path=t.checkpoint_path)`
  (None on a fresh start: Lightning then starts from scratch);
- sets `trainer.should_stop` once `t.should_stop` (checked after every batch) or after
  `t.to_epoch`, so `max_epochs` larger than `t.to_epoch` cannot overrun the segment;
- at the end of fit, saves the weights (`model_attribute` names the LightningModule's attribute
  holding the network to export, e.g. "model"; by default the whole module's state dict).

SIGTERM: Lightning handles it itself (it stops at the next batch and exits 0) and keeps the
SDK's flag; the trial resumes from the last epoch's checkpoint, so at most one epoch is lost.
Validate every epoch (`check_val_every_n_epoch=1`, the default): an epoch without validation
has no report. Under DDP every rank runs the callback; only rank 0 reports and saves.

Imports lightning (the `lightning` extra); never imported by vitcube itself.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from vitcube import trial as sdk
from vitcube.integrations import as_search_metric

__all__ = ["VitcubeCallback"]


class VitcubeCallback(Callback):
    """Reports each validated epoch to the worker, checkpoints it, and honours `should_stop`.

    metric: the key in `trainer.callback_metrics` that holds the search's metric, when it is
    logged under another name (None: the search's metric name). model_attribute: the
    LightningModule attribute whose weights `save_weights` exports (None: the module).
    trial: the SDK's Trial (None: `vitcube.trial.current()`).
    """

    def __init__(
        self,
        metric: str | None = None,
        *,
        model_attribute: str | None = None,
        trial: sdk.Trial | None = None,
    ) -> None:
        super().__init__()
        self.trial = trial if trial is not None else sdk.current()
        self.metric_key = metric or self.trial.metric.name
        self.model_attribute = model_attribute
        self._validated_epoch: int | None = None  # 0-based, Lightning's current_epoch
        self._cut_short_epoch: int | None = None

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:
            self._validated_epoch = trainer.current_epoch

    def on_train_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if trainer.should_stop or not self.trial.should_stop:
            return
        trainer.should_stop = True
        if batch_idx + 1 < trainer.num_training_batches:
            self._cut_short_epoch = trainer.current_epoch

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        index = trainer.current_epoch
        if self._cut_short_epoch == index:
            return  # stopped mid-epoch: not an epoch's result, and the last checkpoint stands
        epoch = index + 1
        if self._validated_epoch == index:
            self.trial.report(epoch, **self._metrics(trainer, epoch))
        self._save_checkpoint(trainer, epoch)
        if epoch >= self.trial.to_epoch or self.trial.should_stop:
            trainer.should_stop = True

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        network = getattr(pl_module, self.model_attribute) if self.model_attribute else pl_module
        self.trial.save_weights(network)

    # -- helpers --------------------------------------------------------------------------
    def _metrics(self, trainer: Trainer, epoch: int) -> dict[str, float]:
        metrics: dict[str, float] = {}
        for key, logged in trainer.callback_metrics.items():
            value: Any = logged
            if isinstance(logged, torch.Tensor):
                if logged.numel() != 1:
                    continue  # a logged vector is no scalar metric
                value = logged.item()
            if isinstance(value, int | float) and not isinstance(value, bool):
                metrics[key] = float(value)
        name = self.trial.metric.name
        return as_search_metric(
            metrics,
            self.metric_key,
            self.trial,
            missing=f"epoch {epoch}: Lightning logged no {self.metric_key!r}: log it in "
            f"validation (self.log({name!r}, value))",
        )

    def _save_checkpoint(self, trainer: Trainer, epoch: int) -> None:
        # Every rank calls save_checkpoint (it synchronises); only global rank 0 writes the file.
        self.trial.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        scratch = self.trial.checkpoint_dir / f".lightning-epoch{epoch}.ckpt.partial"
        trainer.save_checkpoint(scratch)
        if trainer.is_global_zero:
            self.trial.save_checkpoint_file(scratch, epoch=epoch, move=True)
