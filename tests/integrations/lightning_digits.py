"""A Lightning training script as a user writes one, run by tests/integrations/test_lightning.py
the way a worker runs it: the trial's MobileViT on scikit-learn's digits (8x8 upscaled to
32 px, a few hundred images), reported, checkpointed and resumed by VitcubeCallback.

Test hooks (environment): STOP_AT_STEP=N creates the stop file after global step N, as a worker
would when the server says stop. Prints {"global_step": …} last.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from vitcube import trial
from vitcube.integrations.lightning import VitcubeCallback

torch.set_num_threads(1)


def digits(train: bool) -> TensorDataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32)[:, None] / 16.0  # [N, 1, 8, 8]
    images = F.interpolate(images, size=32, mode="bilinear", align_corners=False)
    images = images.repeat(1, 3, 1, 1)  # [N, 3, 32, 32]
    labels = torch.tensor(bunch.target)
    part = slice(0, 192) if train else slice(1500, 1596)
    return TensorDataset(images[part], labels[part])


class Classifier(pl.LightningModule):
    def __init__(self, model: nn.Module, epochs: int) -> None:
        super().__init__()
        self.model = model
        self.epochs = epochs

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        images, labels = batch
        loss = F.cross_entropy(self.model(images), labels)
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        images, labels = batch
        logits = self.model(images)
        self.log("val_loss", F.cross_entropy(logits, labels))
        self.log("val_top1", (logits.argmax(1) == labels).float().mean())

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.AdamW(self.parameters(), lr=3e-3)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=self.epochs)
        return [optimizer], [schedule]


class StopAtStep(pl.Callback):
    """The worker's stop, arriving after a given step (a test hook, not part of a script)."""

    def __init__(self, step: int, stop_file: Path) -> None:
        self.step = step
        self.stop_file = stop_file

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.global_step == self.step:
            self.stop_file.touch()


def main() -> None:
    t = trial.current()
    pl.seed_everything(t.seed, verbose=False)
    module = Classifier(t.build_model(num_classes=10), t.epochs)
    callbacks: list[pl.Callback] = [VitcubeCallback(model_attribute="model")]
    if os.environ.get("STOP_AT_STEP"):
        callbacks.append(StopAtStep(int(os.environ["STOP_AT_STEP"]), t.stop_file))
    trainer = pl.Trainer(
        max_epochs=t.to_epoch,
        accelerator="cpu",
        devices=1,
        callbacks=callbacks,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=1,  # a sanity check that must not be reported
    )
    trainer.fit(
        module,
        DataLoader(digits(train=True), batch_size=32, shuffle=True),
        DataLoader(digits(train=False), batch_size=48),
        ckpt_path=t.checkpoint_path,
    )
    print(json.dumps({"global_step": trainer.global_step}))


if __name__ == "__main__":
    main()
