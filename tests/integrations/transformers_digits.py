"""A Hugging Face Trainer script as a user writes one, run by
tests/integrations/test_transformers.py the way a worker runs it: the trial's MobileViT on
scikit-learn's digits (8x8 upscaled to 32 px, a few hundred images), reported, checkpointed and
resumed by VitcubeCallback and resume_checkpoint.

Test hooks (environment): STOP_AT_STEP=N creates the stop file after global step N, as a worker
would when the server says stop. Prints {"global_step": …} last.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import Dataset
from transformers import (
    EvalPrediction,
    Trainer,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)

from vitcube import trial
from vitcube.integrations.transformers import VitcubeCallback, resume_checkpoint

torch.set_num_threads(1)


class Digits(Dataset[dict[str, torch.Tensor]]):
    def __init__(self, train: bool) -> None:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        images = torch.tensor(bunch.images, dtype=torch.float32)[:, None] / 16.0  # [N, 1, 8, 8]
        images = F.interpolate(images, size=32, mode="bilinear", align_corners=False)
        part = slice(0, 192) if train else slice(1500, 1596)
        self.images = images.repeat(1, 3, 1, 1)[part]  # [n, 3, 32, 32]
        self.labels = torch.tensor(bunch.target)[part]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"pixel_values": self.images[index], "labels": self.labels[index]}


class Classifier(nn.Module):
    """The Trainer's calling convention (inputs by name, the loss first) around a network."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(
        self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None
    ) -> dict[str, Any]:
        logits = self.network(pixel_values)
        loss = F.cross_entropy(logits, labels) if labels is not None else None
        return {"loss": loss, "logits": logits}


def top1(prediction: EvalPrediction) -> dict[str, float]:
    logits = np.asarray(prediction.predictions)
    labels = np.asarray(prediction.label_ids)
    return {"val_top1": float((logits.argmax(-1) == labels).mean())}


class StopAtStep(TrainerCallback):
    """The worker's stop, arriving after a given step (a test hook, not part of a script)."""

    def __init__(self, step: int, stop_file: Path) -> None:
        self.step = step
        self.stop_file = stop_file

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        if state.global_step == self.step:
            self.stop_file.touch()


def main() -> None:
    t = trial.current()
    callbacks: list[TrainerCallback] = [VitcubeCallback()]
    if os.environ.get("STOP_AT_STEP"):
        callbacks.insert(0, StopAtStep(int(os.environ["STOP_AT_STEP"]), t.stop_file))
    args = TrainingArguments(
        output_dir="hf-output",
        num_train_epochs=t.to_epoch,
        per_device_train_batch_size=32,
        per_device_eval_batch_size=48,
        learning_rate=3e-3,
        eval_strategy="epoch",
        save_strategy="epoch",
        logging_strategy="epoch",
        seed=t.seed,
        use_cpu=True,
        report_to=[],
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    trainer = Trainer(
        model=Classifier(t.build_model(num_classes=10)),
        args=args,
        train_dataset=Digits(train=True),
        eval_dataset=Digits(train=False),
        compute_metrics=top1,
        callbacks=callbacks,
    )
    trainer.train(resume_from_checkpoint=resume_checkpoint())
    print(json.dumps({"global_step": trainer.state.global_step}))


if __name__ == "__main__":
    main()
