"""Bring your own training script: PyTorch Lightning on scikit-learn's digits, run by a worker.

The same data and recipe as train_digits.py, written as a LightningModule. The SDK's Lightning
callback (`vitcube.integrations.lightning.VitcubeCallback`) does the talking to the worker: it
reports every validated epoch, saves a Lightning checkpoint after each (the worker uploads it),
stops the segment at `to_epoch` or when the worker says stop, and saves the final weights. A
later segment, or another box after a crash, resumes with `fit(..., ckpt_path=t.checkpoint_path)`.

    vitcube worker --server URL --token WORKER_TOKEN \
        --command digits-lightning='python examples/byo/train_lightning.py'

Needs the `lightning` package (`pip install lightning`). --max-steps N (or
VITCUBE_EXAMPLE_MAX_STEPS) caps the training steps per epoch: for quick runs.
"""

from __future__ import annotations

import argparse
import os

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities.types import OptimizerLRSchedulerConfig
from torch.utils.data import DataLoader, TensorDataset
from train_digits import digits_split, upscale  # the same data, the same fixed split

from vitcube import trial
from vitcube.integrations.lightning import VitcubeCallback


class DigitsClassifier(pl.LightningModule):
    """The trial's network (`self.model`, what is exported), AdamW and a cosine over the run."""

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        resolution: int,
        epochs: int,
        lr: float,
        weight_decay: float,
    ) -> None:
        super().__init__()
        self.model = model
        self.resolution = resolution
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], index: int) -> torch.Tensor:
        images, labels = batch
        loss = F.cross_entropy(
            self.model(upscale(images, self.resolution)), labels, label_smoothing=0.1
        )
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=len(labels))
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], index: int) -> None:
        images, labels = batch
        logits = self.model(upscale(images, self.resolution))
        # Logged under the search's metric name: the callback reports what is logged.
        self.log("val_top1", (logits.argmax(1) == labels).float().mean(), batch_size=len(labels))
        self.log("val_loss", F.cross_entropy(logits, labels), batch_size=len(labels))

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        # T_max is the whole run: a resumed segment continues the same cosine.
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=self.epochs)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": cosine, "interval": "epoch"}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--max-steps",
        type=int,
        default=int(os.environ.get("VITCUBE_EXAMPLE_MAX_STEPS", "0")) or None,
        help="cap on the training steps per epoch (default: the whole split)",
    )
    args = parser.parse_args()

    try:
        t = trial.current()  # this process's trial, from the file the worker wrote
    except trial.TrialError as error:  # run by hand, outside a worker
        raise SystemExit(str(error)) from None
    pl.seed_everything(t.seed, verbose=False)
    train_x, train_y, val_x, val_y = digits_split()
    batch_size = int(t.training.get("batch_size") or 64)
    # The batch order is the trial's seed's; drop_last: a last batch of one breaks BatchNorm.
    train = DataLoader(
        TensorDataset(train_x, train_y),
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        generator=torch.Generator().manual_seed(t.seed),
    )
    val = DataLoader(TensorDataset(val_x, val_y), batch_size=256)

    module = DigitsClassifier(
        t.build_model(num_classes=10),
        resolution=int(t.arch["resolution"]),
        epochs=t.epochs,
        lr=float(t.training.get("lr") or 2e-3),
        weight_decay=float(t.training.get("weight_decay") or 0.05),
    )
    trainer = pl.Trainer(
        max_epochs=t.to_epoch,  # the callback also ends the segment there
        limit_train_batches=args.max_steps or 1.0,
        callbacks=[VitcubeCallback(model_attribute="model")],
        logger=False,
        enable_checkpointing=False,  # the callback checkpoints every epoch, for the worker
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    # None on a fresh start; else the checkpoint the callback saved last, wherever it ran.
    trainer.fit(module, train, val, ckpt_path=t.checkpoint_path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
