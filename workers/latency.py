"""Latency of a trained network at batch 1: as deployed on the worker's device, and under ONNX
Runtime on its CPU (what a trial reports beside its accuracy).

On CUDA a bf16 copy (fp32 when the trial trained without AMP) is timed with CUDA events,
replayed from a CUDA graph where capture works; on the CPU, the wall-clock time of eager passes.
The ONNX Runtime figure is time-boxed and never fails a trial.

Imports torch and (lazily) vitcube.models.export.
"""

from __future__ import annotations

import copy
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@torch.inference_mode()
def measure_latency_ms(
    model: nn.Module,
    resolution: int,
    device: torch.device,
    *,
    amp: bool = False,
    channels_last: bool = False,
    warmup: int = 5,
    runs: int = 30,
    max_seconds: float = 10.0,
) -> float:
    """Median wall time (ms) of one batch-1 forward pass after `warmup` untimed passes."""
    model.eval()
    x = torch.rand(1, 3, resolution, resolution, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    cuda = device.type == "cuda"
    timings: list[float] = []
    deadline = time.perf_counter() + max_seconds
    for i in range(warmup + runs):
        if cuda:
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            model(x)
        if cuda:
            torch.cuda.synchronize(device)
        if i >= warmup:
            timings.append((time.perf_counter() - start) * 1000.0)
            if time.perf_counter() > deadline and len(timings) >= 3:
                break
    return statistics.median(timings)


@dataclass(frozen=True)
class Latency:
    """A batch-1 forward latency and what measured it, e.g. `NVIDIA H200, bf16, CUDA graph`."""

    ms: float
    device: str


def measure_latency(
    model: nn.Module,
    resolution: int,
    device: torch.device,
    *,
    amp: bool = False,
    channels_last: bool = False,
) -> Latency:
    """Batch-1 latency of `model` as deployed on `device`, and the device's name with it.

    On CUDA a bf16 copy (fp32 when the trial trained without AMP) is timed with CUDA events,
    replayed from a CUDA graph where capture works: a batch-1 pass of a small network is
    otherwise mostly the host launching kernels. On the CPU: wall-clock time of eager passes.
    """
    if device.type == "cuda":
        return _cuda_latency(
            model,
            resolution,
            device,
            dtype=torch.bfloat16 if amp else torch.float32,
            channels_last=channels_last,
        )
    ms = measure_latency_ms(model, resolution, device, amp=amp, channels_last=channels_last)
    precision = "bf16 autocast" if amp else "fp32"
    threads = torch.get_num_threads()
    return Latency(ms, f"CPU {platform.machine()} ({threads} threads), {precision}, wall clock")


@torch.no_grad()
def _cuda_latency(
    model: nn.Module,
    resolution: int,
    device: torch.device,
    *,
    dtype: torch.dtype,
    channels_last: bool,
    warmup: int = 10,
    runs: int = 50,
) -> Latency:
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    deployed = copy.deepcopy(model).to(device=device, dtype=dtype).eval()
    deployed = deployed.to(memory_format=memory_format)  # type: ignore[call-overload]
    x = torch.rand(1, 3, resolution, resolution, device=device, dtype=dtype)
    x = x.contiguous(memory_format=memory_format)
    # Warm up on a side stream, as graph capture requires (cuDNN picks its kernels here too).
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(warmup):
            deployed(x)
    torch.cuda.current_stream(device).wait_stream(side)
    torch.cuda.synchronize(device)

    def run_eager() -> object:
        return deployed(x)

    run: Callable[[], object] = run_eager
    method = "eager"
    try:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            deployed(x)
        graph.replay()
        torch.cuda.synchronize(device)
        run, method = graph.replay, "CUDA graph"
    except RuntimeError:  # an op that cannot be captured: time eager passes instead
        torch.cuda.synchronize(device)
    timings: list[float] = []
    for _ in range(runs):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        end.synchronize()
        timings.append(start.elapsed_time(end))
    precision = "bf16" if dtype == torch.bfloat16 else "fp32"
    name = torch.cuda.get_device_name(device)
    return Latency(statistics.median(timings), f"{name}, {precision}, {method}, CUDA events")


ONNX_LATENCY_MAX_S = 3.0


def onnx_cpu_latency(
    model: nn.Module,
    resolution: int,
    *,
    log: Callable[[str], None] | None = None,
    max_seconds: float = ONNX_LATENCY_MAX_S,
) -> Latency | None:
    """Batch-1 latency of the network exported to ONNX, under ONNX Runtime on this CPU
    (`vitcube.models.export.onnxruntime_latency`), on an fp32 CPU copy; None, and a log line,
    when anything about the export or the runtime fails."""
    import inspect

    try:
        from vitcube.models.export import onnxruntime_latency

        cpu_model = copy.deepcopy(model).to("cpu", torch.float32)
        cpu_model = cpu_model.to(memory_format=torch.contiguous_format).eval()  # type: ignore[call-overload]
        options: dict[str, Any] = {}
        accepted = inspect.signature(onnxruntime_latency).parameters
        for name in ("max_seconds", "max_s", "time_budget_s"):
            if name in accepted:
                options[name] = max_seconds  # time-boxed: at most a few seconds per trial
                break
        measured = onnxruntime_latency(cpu_model, resolution, **options)
        return Latency(float(measured.ms), str(measured.device))
    except Exception as error:  # an op the exporter lacks, a missing runtime: no ONNX figure
        if log is not None:
            first = (str(error).splitlines() or [""])[0][:300]
            log(f"ONNX Runtime latency not measured ({type(error).__name__}: {first})")
        return None
