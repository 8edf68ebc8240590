"""How big a training checkpoint is and how long saving and loading it takes.

For each network (default: mobilevitv2_050 and mobilevit_s at 256 px, 1000 classes, the
presets' baselines as tests/models builds them) this builds the full state a worker
checkpoints (`workers.checkpoint`): the model, its EMA, the AdamW state after one training
step on random data, the RNG states. It then times `workers.checkpoint.save_checkpoint` (a
`torch.save` to a temporary file, fsync, rename) and `load_checkpoint` (`torch.load` with
`weights_only=True`), the median of `--repeats` each, and prints a table. Saving blocks the
training thread (the upload runs in the background), so the save time is what a checkpoint
costs training.

    python benchmarks/bench_checkpoint.py [--presets mobilevitv2_050,mobilevit_s] [--repeats 5]

Imports torch, models and workers (checkpoint, trainer).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from vitcube.models import ArchConfig, build_model
from vitcube.workers.checkpoint import CHECKPOINT_FORMAT, load_checkpoint, save_checkpoint
from vitcube.workers.recipe import ModelEma, parameter_groups


def checkpoint_state(preset: str, resolution: int, classes: int) -> dict[str, Any]:
    """The checkpoint dict of `preset` after one AdamW step on a random batch of two."""
    torch.manual_seed(0)
    arch = ArchConfig.preset(preset, num_classes=classes, resolution=resolution).baseline()
    model = build_model(arch)
    ema = ModelEma(model, 0.9995)
    optimizer = torch.optim.AdamW(parameter_groups(model, 0.05), lr=1e-3, foreach=True)
    images = torch.rand(2, 3, resolution, resolution)
    labels = torch.randint(classes, (2,))
    model.train()
    F.cross_entropy(model(images), labels).backward()
    optimizer.step()
    ema.update()
    generator = torch.Generator().manual_seed(1)
    return {
        "format": CHECKPOINT_FORMAT,
        "arch": arch.to_dict(),
        "epoch": 1,
        "step": 0,
        "model": model.state_dict(),
        "ema": ema.module.state_dict(),
        "ema_updates": ema.updates,
        "optimizer": optimizer.state_dict(),
        "scaler": None,
        "rng": {
            "torch": torch.get_rng_state(),
            "cuda": None,
            "plan": generator.get_state(),
            "plan_epoch_start": generator.get_state(),
            "augment": generator.get_state(),
        },
        "curve": [{"epoch": 1, "val_top1": 0.1, "train_loss": 6.9}],
        "best": None,
        "train_seconds": 1.0,
        "train_images": 2,
        "partial_epoch": {"loss_sum": 0.0, "loss_count": 0, "epoch_images": 0},
        "micro_batches": 1,
        "recipe_digest": "bench",
    }


def measure(preset: str, resolution: int, classes: int, repeats: int) -> dict[str, float]:
    state = checkpoint_state(preset, resolution, classes)
    params = sum(p.numel() for p in state["model"].values() if p.is_floating_point())
    with tempfile.TemporaryDirectory(prefix="vitcube-bench-checkpoint-") as scratch:
        path = Path(scratch) / "checkpoint.pt"
        saves, loads = [], []
        for _ in range(repeats):
            start = time.perf_counter()
            save_checkpoint(state, path)
            saves.append(time.perf_counter() - start)
        for _ in range(repeats):
            start = time.perf_counter()
            load_checkpoint(path)
            loads.append(time.perf_counter() - start)
        size = path.stat().st_size
    return {
        "params_m": params / 1e6,
        "size_mb": size / 1e6,
        "save_s": statistics.median(saves),
        "load_s": statistics.median(loads),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", default="mobilevitv2_050,mobilevit_s")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"save and load: median of {args.repeats}, {args.threads} torch thread(s)")
    print("| network | params (M) | checkpoint (MB) | save (s) | load (s) |")
    print("|---|---|---|---|---|")
    for preset in args.presets.split(","):
        row = measure(preset.strip(), args.resolution, args.classes, args.repeats)
        print(
            f"| {preset} @ {args.resolution} px | {row['params_m']:.2f} | {row['size_mb']:.1f} | "
            f"{row['save_s']:.3f} | {row['load_s']:.3f} |"
        )


if __name__ == "__main__":
    main()
