"""Does a preempted trial that resumes from its checkpoint end where an uninterrupted one does?

For each seed, the demo's baseline network (MobileViT v2-0.5 at 64 px, 10 classes) trains on
scikit-learn's digits with the demo's recipe (8 epochs, batch 64, peak LR 0.002) three ways:
- uninterrupted, checkpointing at every epoch end as a worker does when saving is cheap;
- preempted at an epoch boundary (epoch 3), resumed from that checkpoint in a fresh network;
- preempted mid-epoch (SIGTERM a few steps into epoch 5: the worker's checkpoint at that step
  boundary), resumed from it in a fresh network.
It prints each run's final top-1 (the best epoch's, as reported), the largest difference
between a resumed run and its uninterrupted twin, and, for scale, the seed-to-seed standard
deviation of the uninterrupted top-1 (the noise a difference would have to beat). On the CPU
the resumed runs are bit-exact, so the difference is 0; on a GPU it is within that noise.

    python benchmarks/bench_resume.py [--seeds 0,1,2] [--epochs 8]

Imports torch, models and workers (trainer, checkpoint, datasets).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from vitcube.models import ArchConfig
from vitcube.workers.checkpoint import load_checkpoint, save_checkpoint
from vitcube.workers.datasets import load_digits
from vitcube.workers.executors import Control, TrainingAborted
from vitcube.workers.recipe import TrainingConfig
from vitcube.workers.runner import TrainedTrial, run_trial
from vitcube.workers.training import TrainingListener

BASE = {"family": "mobilevit_v2", "width": 0.5, "resolution": 64, "num_classes": 10}


class EverySave:
    """The worker's sink when saving is cheap: a checkpoint file at every epoch end."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.paths: dict[tuple[int, int], Path] = {}

    def due(self) -> bool:
        return True

    def save(self, state_fn: Any) -> Path:
        state = state_fn()
        path = self.directory / f"e{state['epoch']}-s{state['step']}.pt"
        save_checkpoint(state, path)
        self.paths[(int(state["epoch"]), int(state["step"]))] = path
        return path


class SigtermAt(TrainingListener):
    """Sets `interrupted` (what the worker's SIGTERM handler does) at a step of an epoch."""

    def __init__(self, control: Control, epoch: int, step: int) -> None:
        self.control, self.epoch, self.step = control, epoch, step

    def on_step(self, *, epoch: int, step: int, **_: Any) -> None:
        if epoch == self.epoch and step >= self.step:
            self.control.interrupted.set()


def _run(seed: int, config: TrainingConfig, **kwargs: Any) -> TrainedTrial:
    arch = ArchConfig.from_dict(BASE).scale().to_dict()
    return run_trial(
        arch, load_digits(), config=config, seed=seed, device=torch.device("cpu"),
        onnx_latency=False, **kwargs,
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    config = TrainingConfig.from_dict({"epochs": args.epochs, "batch_size": 64, "lr": 0.002})
    boundary_epoch, sigterm_epoch = args.epochs // 2 - 1, args.epochs // 2 + 1

    rows = []
    for seed in seeds:
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            sink = EverySave(Path(tmp) / "full")
            sink.directory.mkdir()
            full = _run(seed, config, checkpoints=sink)
            boundary = _run(seed, config, resume=load_checkpoint(sink.paths[boundary_epoch, 0]))

            control = Control()
            mid_sink = EverySave(Path(tmp) / "mid")
            mid_sink.directory.mkdir()
            try:
                _run(
                    seed,
                    config,
                    control=control,
                    listener=SigtermAt(control, sigterm_epoch, step=3),
                    checkpoints=mid_sink,
                )
                raise SystemExit("the SIGTERM never landed: fewer steps than expected")
            except TrainingAborted:
                pass
            (epoch, step), path = max(mid_sink.paths.items())
            mid = _run(seed, config, resume=load_checkpoint(path))
            rows.append((seed, full, boundary, mid, (epoch, step), time.perf_counter() - started))
            print(
                f"seed {seed}: uninterrupted {full.top1:.4f} | resumed at epoch "
                f"{boundary_epoch} {boundary.top1:.4f} | SIGTERM {step} steps into epoch "
                f"{epoch + 1}, resumed {mid.top1:.4f}  ({rows[-1][-1]:.0f} s)",
                flush=True,
            )

    print()
    print("| seed | uninterrupted top-1 | resumed (epoch boundary) | resumed (mid-epoch) |")
    print("| ---: | ---: | ---: | ---: |")
    for seed, full, boundary, mid, (epoch, step), _ in rows:
        print(
            f"| {seed} | {full.top1:.4f} | {boundary.top1:.4f} (from epoch {boundary_epoch}) | "
            f"{mid.top1:.4f} (from {step} steps into epoch {epoch + 1}) |"
        )
    worst = max(max(abs(b.top1 - f.top1), abs(m.top1 - f.top1)) for _, f, b, m, _, _ in rows)
    curves_equal = all(
        [p["val_top1"] for p in f.curve]
        == [p["val_top1"] for p in b.curve]
        == [p["val_top1"] for p in m.curve]
        for _, f, b, m, _, _ in rows
    )
    noise = statistics.stdev(f.top1 for _, f, _, _, _, _ in rows) if len(rows) > 1 else float("nan")
    print()
    print(f"largest |resumed - uninterrupted| top-1: {worst * 100:.2f} points")
    print(f"resumed curves equal to the uninterrupted ones: {curves_equal}")
    print(
        f"seed-to-seed std of the uninterrupted top-1: {noise * 100:.2f} points ({len(rows)} seeds)"
    )


if __name__ == "__main__":
    main()
