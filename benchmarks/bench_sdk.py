"""What the training-script SDK (`vitcube.trial`) costs a training loop, per call.

A command trainer calls `t.report(epoch, …)` once per epoch and `t.save_checkpoint(state)` once
per epoch or so. This runs the same loop three ways in one process, interleaved round by round
so machine noise falls on all of them alike, and prints the median per-iteration time of each:
- bare: the loop's own work only (a small matmul standing in for a training step);
- + report: the same plus `t.report(epoch, val_top1=…, train_loss=…)`;
- bare save / + save_checkpoint: `torch.save` of a MobileViT-XXS training state (model and
  AdamW state) to a file, against `t.save_checkpoint` of the same state (a `torch.save` to a
  temporary name, an atomic rename, one channel line).
The overheads are the differences, in microseconds per call, and the ratio of the save paths.
A worker reads the channel in another process, so nothing here includes its side.

    python benchmarks/bench_sdk.py [--iterations 2000] [--saves 10] [--rounds 5]

Imports torch, vitcube.models, vitcube.channel and vitcube.trial.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def make_trial(directory: Path) -> Any:
    """A trial file and channel in `directory`, as a worker would write them; the SDK's Trial."""
    from vitcube import trial
    from vitcube.channel import CHANNEL_ENV, STOP_FILE_ENV, TRIAL_FILE_ENV, TrialFile
    from vitcube.models import ArchConfig

    arch = ArchConfig.preset("mobilevit_xxs", num_classes=10, resolution=64).baseline()
    spec = TrialFile(
        trial_id=1,
        search_id=1,
        arch=arch.to_dict(),
        factors={"r": 1.0, "d_i": 1.0, "d_m": 1.0, "w": 1.0},
        effective_factors={"r": 1.0, "d_i": 1.0, "d_m": 1.0, "w": 1.0},
        macs=1,
        params=1,
        seed=0,
        training={"epochs": 1_000_000},
        dataset={"name": "digits"},
        from_epoch=0,
        to_epoch=1_000_000,
        epochs=1_000_000,
        metric={"name": "val_top1", "goal": "maximize"},
        channel=str(directory / "channel.jsonl"),
        stop_file=str(directory / "stop"),
        checkpoint_dir=str(directory / "checkpoints"),
    )
    (directory / "checkpoints").mkdir()
    spec.write(directory / "trial.json")
    os.environ[TRIAL_FILE_ENV] = str(directory / "trial.json")
    os.environ[CHANNEL_ENV] = spec.channel
    os.environ[STOP_FILE_ENV] = spec.stop_file
    return trial.current()


def training_state() -> dict[str, Any]:
    """A MobileViT-XXS model and its AdamW state after one step: what a script checkpoints."""
    from vitcube.models import ArchConfig, build_model

    torch.manual_seed(0)
    arch = ArchConfig.preset("mobilevit_xxs", num_classes=10, resolution=64).baseline()
    model = build_model(arch)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.rand(2, 3, 64, 64)).sum().backward()
    optimizer.step()
    return {"epoch": 1, "model": model.state_dict(), "optimizer": optimizer.state_dict()}


def per_call_us(fn: Callable[[int], None], n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        fn(i)
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--saves", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        t = make_trial(directory)
        a = torch.rand(64, 64)

        def bare(i: int) -> None:
            torch.mm(a, a)

        def with_report(i: int) -> None:
            torch.mm(a, a)
            t.report(i + 1, val_top1=0.5, train_loss=1.0)

        state = training_state()
        bare_path = directory / "bare.pt"

        def bare_save(i: int) -> None:
            torch.save(state, bare_path)

        def sdk_save(i: int) -> None:
            t.save_checkpoint(state)

        timings: dict[str, list[float]] = {k: [] for k in ("bare", "report", "save", "sdk_save")}
        for _ in range(args.rounds):
            timings["bare"].append(per_call_us(bare, args.iterations))
            timings["report"].append(per_call_us(with_report, args.iterations))
            timings["save"].append(per_call_us(bare_save, args.saves))
            timings["sdk_save"].append(per_call_us(sdk_save, args.saves))
        size_mb = bare_path.stat().st_size / 1e6
        lines = len((directory / "channel.jsonl").read_text().splitlines())

    median = {k: statistics.median(v) for k, v in timings.items()}
    print(f"{args.rounds} rounds, median per call (one torch thread; channel lines {lines})")
    print(f"{'loop':<34}{'µs/iteration':>14}")
    print(f"{'bare (64x64 matmul)':<34}{median['bare']:>14.1f}")
    print(f"{'+ t.report(epoch, 2 metrics)':<34}{median['report']:>14.1f}")
    save_label = f"bare torch.save ({size_mb:.1f} MB)"
    print(f"{save_label:<34}{median['save']:>14.1f}")
    print(f"{'t.save_checkpoint (same state)':<34}{median['sdk_save']:>14.1f}")
    print(f"report overhead: {median['report'] - median['bare']:.1f} µs per call")
    print(
        f"save_checkpoint overhead: {median['sdk_save'] - median['save']:.1f} µs per call "
        f"({median['sdk_save'] / median['save']:.2f}x a bare torch.save)"
    )


if __name__ == "__main__":
    main()
