"""ONNX export and ONNX Runtime against eager PyTorch, batch-1 CPU latency side by side in one run.

For each network (default: MobileViT-XXS, MobileViT v2-0.5 and MobileViT-S at 256 px, 1000
classes, fresh weights) and each ONNX exporter of `vitcube.models.export` ("dynamo": torch.export
+ onnxscript, torch's supported path and `vitcube export`'s default; "torchscript": the older
tracer, which the worker uses for its per-trial latency because it is several times faster):

- export time (wall clock, the whole `onnx_bytes` call: export, metadata, onnx checker) and file
  size;
- parity: max |logit difference| of ONNX Runtime against eager PyTorch on random batches of
  1, 2 and 3 images (`check_onnx_parity`);
- batch-1 latency, median over `--runs` timed runs after `--warmup`: eager PyTorch
  (`torch.inference_mode`, `--threads` intra-op threads) and ONNX Runtime's
  CPUExecutionProvider (the session `onnxruntime_latency` uses, same thread count), the two
  interleaved run by run so that a noisy machine slows both alike; the ratio is eager / ONNX
  Runtime (> 1: ONNX Runtime is faster).

  python benchmarks/bench_export.py                         # the three networks, 256 px
  python benchmarks/bench_export.py --tiny                  # seconds: 64 px, XXS, tracer only
  python benchmarks/bench_export.py --presets mobilevitv2_100 --threads 4

Imports models and torch/onnx/onnxruntime; never service/, search/ or workers/.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vitcube.models import ArchConfig, build_model
from vitcube.models.export import (
    EXPORTERS,
    INPUT_NAME,
    OUTPUT_NAME,
    check_onnx_parity,
    onnx_bytes,
    onnxruntime_session,
)

PRESETS = ("mobilevit_xxs", "mobilevitv2_050", "mobilevit_s")


def side_by_side_latency(
    model: torch.nn.Module,
    onnx_model: bytes,
    resolution: int,
    *,
    threads: int,
    warmup: int,
    runs: int,
) -> tuple[float, float]:
    """(eager ms, ONNX Runtime ms): medians of batch-1 runs taken alternately."""
    session = onnxruntime_session(onnx_model, threads=threads)
    x = torch.rand(1, 3, resolution, resolution)
    feed = {INPUT_NAME: x.numpy()}
    eager: list[float] = []
    ort: list[float] = []
    with torch.inference_mode():
        for i in range(warmup + runs):
            start = time.perf_counter()
            model(x)
            middle = time.perf_counter()
            session.run([OUTPUT_NAME], feed)
            end = time.perf_counter()
            if i >= warmup:
                eager.append((middle - start) * 1000.0)
                ort.append((end - middle) * 1000.0)
    return statistics.median(eager), statistics.median(ort)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=list(PRESETS))
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--exporters", nargs="+", default=list(EXPORTERS), choices=EXPORTERS)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--tiny", action="store_true", help="64 px, XXS, tracer only, 5 runs")
    args = parser.parse_args()
    if args.tiny:
        args.presets, args.resolution, args.exporters = ["mobilevit_xxs"], 64, ["torchscript"]
        args.warmup, args.runs = 2, 5
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    np.random.seed(0)

    plural = "" if args.threads == 1 else "s"
    print(
        f"CPU {platform.machine()} ({args.threads} thread{plural}), torch {torch.__version__}, "
        f"onnxruntime {onnxruntime.__version__}; {args.resolution} px, batch 1, median of "
        f"{args.runs} runs after {args.warmup}, eager and ONNX Runtime interleaved"
    )
    header = (
        "| network | exporter | export s | ONNX MB | max abs diff | eager ms | ORT ms "
        "| eager / ORT |"
    )
    print(header)
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name in args.presets:
        config = ArchConfig.preset(name, num_classes=1000, resolution=args.resolution)
        model = build_model(config).eval()
        for exporter in args.exporters:
            start = time.perf_counter()
            exported = onnx_bytes(model, args.resolution, exporter=exporter)
            export_s = time.perf_counter() - start
            diff = check_onnx_parity(model, exported, args.resolution, atol=1e-4)
            eager_ms, ort_ms = side_by_side_latency(
                model,
                exported,
                args.resolution,
                threads=args.threads,
                warmup=args.warmup,
                runs=args.runs,
            )
            print(
                f"| {name} | {exporter} | {export_s:.1f} | {len(exported) / 1e6:.1f} "
                f"| {diff:.1e} | {eager_ms:.1f} | {ort_ms:.1f} | {eager_ms / ort_ms:.2f}× |",
                flush=True,
            )


if __name__ == "__main__":
    main()
