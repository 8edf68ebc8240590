"""int8 post-training quantization measured: what static int8 costs a hybrid network in accuracy,
and what it buys in size and CPU latency, against a pure CNN.

For a MobileViT v1 (XXS), a MobileViT v2 (0.5), a MobileNet v2 and an EfficientViT (M0), each
trained on digits on the CPU by the worker's own trainer (`workers.runner.run_trial`, seed 0,
one thread) and exported to ONNX as `vitcube export` does (`models.export`, the dynamo exporter
by default), this quantizes the fp32 file with `models.quantize.quantize_onnx` (QDQ, per-channel
int8 weights, uint8 activations, 256 calibration images of the training split prepared as the
worker evaluates) under each calibration method (minmax, entropy, percentile) with the fragile
ops (Q-HyViT: normalisations, softmax, attention products) int8 and kept in float, and prints
one table: MACs, fp32 top-1, int8 top-1 and its change in points (both on the whole validation
split, 359 images, under ONNX Runtime), top-1 agreement, the int8 file's size against fp32's,
and batch-1 ONNX Runtime CPU latency of both (one thread, median of runs taken alternately so
that a noisy machine slows both alike).

  python benchmarks/bench_int8.py                  # the four networks, 6 epochs: ~11 min
  python benchmarks/bench_int8.py --quick          # 2-3 min: 2 networks, minmax, tracer export
  python benchmarks/bench_int8.py --networks mobilevit_xxs@64 --epochs 8

Imports models, workers (trainer, datasets, augment) and torch/onnx/onnxruntime; never the
service or the search.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vitcube.models import ArchConfig, build_model, count_macs
from vitcube.models.export import (
    INPUT_NAME,
    OUTPUT_NAME,
    export_onnx,
    onnxruntime_session,
)
from vitcube.models.quantize import CALIBRATION_METHODS, quantize_onnx, run_logits
from vitcube.workers.augment import center_resize
from vitcube.workers.datasets import load_digits
from vitcube.workers.recipe import TrainingConfig
from vitcube.workers.runner import run_trial

# preset@resolution. The MobileViTs and MobileNet v2 at 64 px cost 21-29 M MACs; EfficientViT's
# 16x patch embedding leaves a 4x4 token map at 64 px, so it runs at 128 px (26 M MACs).
NETWORKS = ("mobilevit_xxs@64", "mobilevitv2_050@64", "mobilenet_v2@64", "efficientvit_m0@128")
QUICK_NETWORKS = ("mobilevit_xxs@64", "mobilenet_v2@64")
# Batch 32: the EMA weights that are evaluated need enough steps on 1,438 training images.
RECIPE = {"batch_size": 32, "lr": 0.002}


@dataclass(frozen=True)
class Row:
    network: str
    macs: int
    fp32_top1: float
    calibration: str
    keep_fragile_float: bool
    kept: str
    int8_top1: float
    agreement: float
    fp32_bytes: int
    int8_bytes: int
    fp32_ms: float
    int8_ms: float


def paired_latency(
    fp32: Path, int8: Path, resolution: int, *, warmup: int = 5, runs: int = 40
) -> tuple[float, float]:
    """(fp32 ms, int8 ms): medians of batch-1 runs taken alternately, one thread each."""
    sessions = [onnxruntime_session(fp32, threads=1), onnxruntime_session(int8, threads=1)]
    x = np.random.default_rng(0).random((1, 3, resolution, resolution), dtype=np.float32)
    feed = {INPUT_NAME: x}
    times: list[list[float]] = [[], []]
    for i in range(warmup + runs):
        for session, timing in zip(sessions, times, strict=True):
            start = time.perf_counter()
            session.run([OUTPUT_NAME], feed)
            if i >= warmup:
                timing.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times[0]), statistics.median(times[1])


def measure(
    spec: str,
    *,
    epochs: int,
    methods: tuple[str, ...],
    calibration_images: int,
    exporter: str,
    scratch: Path,
) -> list[Row]:
    preset, _, res = spec.partition("@")
    config = ArchConfig.preset(preset)
    resolution = int(res) if res else 64
    arch = ArchConfig.from_dict({**config.to_dict(), "num_classes": 10, "resolution": resolution})
    arch = arch.scale()
    data = load_digits()
    started = time.perf_counter()
    outcome = run_trial(
        arch.to_dict(),
        data,
        config=TrainingConfig.from_dict({**RECIPE, "epochs": epochs}),
        seed=0,
        device=torch.device("cpu"),
        onnx_latency=False,
    )
    assert outcome.weights is not None
    model = build_model(arch).eval()
    model.load_state_dict(outcome.weights)
    print(
        f"{spec}: trained {epochs} epochs in {time.perf_counter() - started:.0f} s, "
        f"top-1 {100 * outcome.top1:.2f} % (EMA, PyTorch)",
        file=sys.stderr,
    )
    fp32_path = scratch / f"{preset}-fp32.onnx"
    export_onnx(model, arch.resolution, fp32_path, metadata={}, exporter=exporter)  # type: ignore[arg-type]
    generator = torch.Generator().manual_seed(0)
    chosen = torch.randperm(len(data.train), generator=generator)[:calibration_images].sort()
    calibration = center_resize(data.train.images[chosen.values], arch.resolution).numpy()
    val = center_resize(data.val.images, arch.resolution).numpy()
    labels = data.val.labels.numpy()
    reference = run_logits(onnxruntime_session(fp32_path), val)
    fp32_top1 = float(np.mean(reference.argmax(1) == labels))
    rows = []
    for method in methods:
        for keep in (False, True):
            int8_path = scratch / f"{preset}-{method}-{int(keep)}.onnx"
            report = quantize_onnx(
                fp32_path,
                int8_path,
                calibration,
                calibration=method,  # type: ignore[arg-type]
                keep_fragile_float=keep,
            )
            logits = run_logits(onnxruntime_session(int8_path), val)
            fp32_ms, int8_ms = paired_latency(fp32_path, int8_path, arch.resolution)
            rows.append(
                Row(
                    network=spec,
                    macs=count_macs(arch),
                    fp32_top1=fp32_top1,
                    calibration=method,
                    keep_fragile_float=keep,
                    kept=report.kept_float_summary() if keep else "",
                    int8_top1=float(np.mean(logits.argmax(1) == labels)),
                    agreement=float(np.mean(logits.argmax(1) == reference.argmax(1))),
                    fp32_bytes=fp32_path.stat().st_size,
                    int8_bytes=report.size_bytes,
                    fp32_ms=fp32_ms,
                    int8_ms=int8_ms,
                )
            )
            print(f"  {method:<10} fragile float {'on ' if keep else 'off'} done", file=sys.stderr)
    return rows


def table(rows: list[Row]) -> str:
    lines = [
        "| network | MACs | fp32 top-1 | calibration | fragile ops | int8 top-1 | Δ points "
        "| agreement | int8 / fp32 size | fp32 ms | int8 ms |",
        "| --- | ---: | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        size = f"{row.int8_bytes / 1e6:.2f} / {row.fp32_bytes / 1e6:.2f} MB"
        lines.append(
            f"| {row.network} | {row.macs / 1e6:.1f} M | {100 * row.fp32_top1:.2f} % "
            f"| {row.calibration} | {'float' if row.keep_fragile_float else 'int8'} "
            f"| {100 * row.int8_top1:.2f} % | {100 * (row.int8_top1 - row.fp32_top1):+.2f} "
            f"| {100 * row.agreement:.1f} % | {size} ({row.int8_bytes / row.fp32_bytes:.2f}x) "
            f"| {row.fp32_ms:.2f} | {row.int8_ms:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 networks, minmax, tracer export")
    parser.add_argument("--networks", nargs="+", help=f"preset@resolution (default {NETWORKS})")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (6; quick 5)")
    parser.add_argument("--calibration-images", type=int, default=256)
    parser.add_argument("--exporter", choices=("dynamo", "torchscript"), default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    networks = tuple(args.networks or (QUICK_NETWORKS if args.quick else NETWORKS))
    methods: tuple[str, ...] = ("minmax",) if args.quick else CALIBRATION_METHODS
    epochs = args.epochs or (5 if args.quick else 6)
    exporter = args.exporter or ("torchscript" if args.quick else "dynamo")
    started = time.perf_counter()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-int8-") as scratch:
        for spec in networks:
            rows.extend(
                measure(
                    spec,
                    epochs=epochs,
                    methods=methods,
                    calibration_images=args.calibration_images,
                    exporter=exporter,
                    scratch=Path(scratch),
                )
            )
    print(
        f"digits, {epochs} epochs (batch {RECIPE['batch_size']}, lr {RECIPE['lr']}, seed 0), "
        f"{args.calibration_images} calibration images, {exporter} exporter; latency: batch 1, "
        f"CPU {platform.machine()} (1 thread), onnxruntime {onnxruntime.__version__}, "
        f"torch {torch.__version__}; {time.perf_counter() - started:.0f} s in all\n"
    )
    print(table(rows))
    kept = {row.network: row.kept for row in rows if row.kept}
    if kept:
        print("\nkept in float with fragile ops float:")
        for network, ops in kept.items():
            print(f"- {network}: {ops}")


if __name__ == "__main__":
    main()
