"""Bring your own training script: plain PyTorch on scikit-learn's digits, run by a vitcube worker.

The worker box registers it under a label, and a search names that label (digits_plain.yaml):

    vitcube worker --server URL --token WORKER_TOKEN \
        --command digits='python examples/byo/train_digits.py'

The worker leases a trial, writes what it is (the network, the recipe, the epochs of this
segment) to a trial file and runs this script; `vitcube.trial` reads that file and talks back
over the worker's channel. Everything else (the lease, heartbeats, uploading checkpoints,
resuming on another box, stop and SIGTERM) stays with the worker. This script only has to:
build the network it is given, train epochs from_epoch+1 … to_epoch, report the search's metric
after each, save a checkpoint it can resume from, and stop when asked.

--max-steps N (or VITCUBE_EXAMPLE_MAX_STEPS) caps the training steps per epoch: for quick runs.
"""

from __future__ import annotations

import argparse
import os
import random

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from vitcube import trial

VAL_FRACTION = 0.2
SPLIT_SEED = 0  # the split is fixed: every trial, and every segment of one, sees the same images


def digits_split() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """scikit-learn's 1,797 handwritten digits as `N x 1 x 8 x 8` floats in [0, 1], split once.

    Returns train images, train labels, val images, val labels. The images stay 8x8 in memory
    and are upscaled batch by batch (`upscale`).
    """
    bunch = load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(bunch.target, dtype=torch.long)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(SPLIT_SEED))
    n_val = round(len(labels) * VAL_FRACTION)
    val, train = order[:n_val], order[n_val:]
    return images[train], labels[train], images[val], labels[val]


def upscale(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """`B x 1 x 8 x 8` in [0, 1] -> `B x 3 x R x R`, normalised to [-1, 1]."""
    big = F.interpolate(images, size=(resolution, resolution), mode="bilinear", align_corners=False)
    return (big.expand(-1, 3, -1, -1) - 0.5) / 0.5


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    resolution: int,
    device: torch.device,
) -> tuple[float, float]:
    """Top-1 accuracy and mean cross-entropy on the validation split."""
    model.eval()
    correct, loss = 0, 0.0
    for start in range(0, len(labels), 256):
        x = upscale(images[start : start + 256], resolution).to(device)
        y = labels[start : start + 256].to(device)
        logits = model(x)
        loss += F.cross_entropy(logits, y, reduction="sum").item()
        correct += int((logits.argmax(1) == y).sum())
    return correct / len(labels), loss / len(labels)


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
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolution = int(t.arch["resolution"])
    batch_size = int(t.training.get("batch_size") or 64)
    train_x, train_y, val_x, val_y = digits_split()

    torch.manual_seed(t.seed)  # the initial weights are the trial's
    model = t.build_model(num_classes=10).to(device)
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=float(t.training.get("lr") or 2e-3),
        weight_decay=float(t.training.get("weight_decay") or 0.05),
    )
    # The cosine spans the whole run (t.epochs), not this segment: a resumed segment continues
    # the same schedule from the scheduler state in the checkpoint.
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=t.epochs)

    state = t.load_checkpoint()  # None on a fresh start, else what save_checkpoint saved last
    if state is not None:
        if state["epoch"] != t.from_epoch:
            raise SystemExit(
                f"the checkpoint is after epoch {state['epoch']}, "
                f"but this segment starts after epoch {t.from_epoch}"
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"]["torch"])
        np.random.set_state(state["rng"]["numpy"])
        random.setstate(state["rng"]["python"])

    for epoch in range(t.from_epoch + 1, t.to_epoch + 1):
        model.train()
        # The batch order depends on the trial's seed and the epoch only, so an epoch trained
        # again after a resume sees the same batches.
        order = torch.randperm(
            len(train_y), generator=torch.Generator().manual_seed(t.seed * 1000 + epoch)
        )
        steps = range(0, len(order) - batch_size + 1, batch_size)  # full batches: BatchNorm
        if args.max_steps:
            steps = steps[: args.max_steps]
        total = 0.0
        for start in steps:
            if t.should_stop:
                # The server said stop, or the worker got SIGTERM. The checkpoint of the last
                # whole epoch is saved already; the worker resumes from it (or stops the trial).
                return 0
            index = order[start : start + batch_size]
            x, y = upscale(train_x[index], resolution).to(device), train_y[index].to(device)
            loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item()
        scheduler.step()

        val_top1, val_loss = evaluate(model, val_x, val_y, resolution, device)
        t.report(epoch, val_top1=val_top1, val_loss=val_loss, train_loss=total / len(steps))
        t.save_checkpoint(
            {
                "epoch": epoch,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": {
                    "torch": torch.get_rng_state(),
                    "numpy": np.random.get_state(),
                    "python": random.getstate(),
                },
            }
        )
        if t.should_stop:
            return 0

    t.save_weights(model)  # the weights at the end of the segment, for export
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
