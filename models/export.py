"""A built network as a deployable file — ONNX, TorchScript, a state-dict bundle — and its
batch-1 latency under ONNX Runtime on this CPU.

Every file carries string metadata (by convention "arch": the `Arch.to_dict()` JSON, so
`build_model(Arch.from_dict(...))` rebuilds the network, and "preprocessing": the JSON of the
input it expects): ONNX in `metadata_props`, TorchScript as `_extra_files`, the state-dict
bundle as plain dict entries. Each export works on an fp32, eval-mode CPU copy of the model;
the caller's module (on a GPU, in train mode, channels_last) is left as it was.

ONNX exporters (torch 2.13 has both; both export every MobileViT v1/v2 and MobileNet preset
with logits equal to eager within 1e-5): "dynamo" (`torch.export` + onnxscript) is torch's
supported path and the default for files a user keeps; "torchscript" (the tracer) is
deprecated in torch but 5-10x faster (≈1 s against 8-14 s for MobileViT-XXS on two cores), so
`onnxruntime_latency`, which the worker runs after every trial, uses it while torch still has
it and falls back to "dynamo". Both give the same graph to ONNX Runtime up to its own
optimisations (benchmarks/bench_export.py times both).

Imports torch, onnx, onnxruntime and `models` only — nothing else of ours (the wire contract's
`preprocessing()` reaches here as a metadata string).
"""

from __future__ import annotations

import copy
import io
import json
import logging
import os
import platform
import statistics
import time
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
import onnxruntime
import torch
from torch import nn

ONNX_OPSET = 18
INPUT_NAME = "image"
OUTPUT_NAME = "logits"
MAX_BATCH = 4096
"""Upper bound of the dynamic batch dimension (torch.export wants a finite range)."""
STATE_DICT_FORMAT = "vitcube-state-dict/1"
TORCHSCRIPT_METADATA_INDEX = "vitcube-metadata-keys.json"

Exporter = Literal["dynamo", "torchscript"]
EXPORTERS: tuple[Exporter, ...] = ("dynamo", "torchscript")


class ExportError(RuntimeError):
    """A network could not be written, read back, or run in the deployed format."""


class ParityError(ExportError):
    """The exported network's logits differ from eager PyTorch's by more than allowed."""

    def __init__(self, message: str, max_abs_diff: float) -> None:
        super().__init__(message)
        self.max_abs_diff = max_abs_diff


class LatencyError(ExportError):
    """ONNX Runtime could not time the network within its budget."""


@dataclass(frozen=True)
class OnnxLatency:
    """Median batch-1 latency under ONNX Runtime and what measured it, e.g.
    `CPU x86_64 (1 thread), onnxruntime 1.32.0, fp32`."""

    ms: float
    device: str


# -- ONNX ------------------------------------------------------------------------------------


def export_onnx(
    model: nn.Module,
    resolution: int,
    path: str | os.PathLike[str],
    *,
    metadata: Mapping[str, str],
    exporter: Exporter = "dynamo",
) -> Path:
    """Write `model` to `path` as ONNX (opset `ONNX_OPSET`): input "image" [N, 3, R, R] float32
    with a dynamic batch N, output "logits" [N, classes]; `metadata` (plus "arch" from
    `model.arch` when absent) in the model's `metadata_props`. Returns the path."""
    target = Path(path)
    target.write_bytes(onnx_bytes(model, resolution, metadata=metadata, exporter=exporter))
    return target


def onnx_bytes(
    model: nn.Module,
    resolution: int,
    *,
    metadata: Mapping[str, str] | None = None,
    exporter: Exporter = "dynamo",
) -> bytes:
    """The ONNX file `export_onnx` writes, as bytes (no temporary file)."""
    if exporter not in EXPORTERS:
        raise ValueError(f"unknown ONNX exporter {exporter!r}; use one of {', '.join(EXPORTERS)}")
    deployed = _deployable(model)
    # Batch 2, not 1: torch.export specialises a size-1 dimension to the constant 1.
    example = torch.rand(2, 3, resolution, resolution)
    try:
        proto = (
            _export_dynamo(deployed, example)
            if exporter == "dynamo"
            else _export_torchscript_onnx(deployed, example)
        )
    except Exception as error:  # the exporters raise anything; say which one and what failed
        raise ExportError(
            f"the {exporter} ONNX exporter failed on this network: {_first_line(error)}"
        ) from error
    props = _with_arch(model, metadata or {})
    onnx.helper.set_model_props(proto, props)
    onnx.checker.check_model(proto)
    return bytes(proto.SerializeToString())


def _export_dynamo(model: nn.Module, example: torch.Tensor) -> onnx.ModelProto:
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    # "torchvision is not installed. Skipping torchvision::nms": true, and not our concern
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation notes from torch's own internals
        program = torch.onnx.export(
            model,
            (example,),
            None,
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=ONNX_OPSET,
            dynamic_shapes=({0: batch},),
            verbose=False,
        )
    if program is None:
        raise ExportError("torch.onnx.export(dynamo=True) returned no program")
    return program.model_proto


def _export_torchscript_onnx(model: nn.Module, example: torch.Tensor) -> onnx.ModelProto:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # "legacy exporter" notes, and tracer notes on shapes read as Python numbers: the
        # resolution is fixed per file, and the batch stays symbolic (dynamic_axes).
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            buffer,  # type: ignore[arg-type]  # the tracer exporter writes file objects too
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=ONNX_OPSET,
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        )
    return onnx.load_model_from_string(buffer.getvalue())


def read_onnx_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The `metadata_props` of an ONNX file (without loading its weights)."""
    proto = onnx.load(os.fspath(path), load_external_data=False)
    return {prop.key: prop.value for prop in proto.metadata_props}


def check_onnx_parity(
    model: nn.Module,
    path: str | os.PathLike[str] | bytes,
    resolution: int,
    *,
    batches: int = 3,
    atol: float = 1e-4,
    seed: int = 0,
) -> float:
    """Max |logit difference| between ONNX Runtime (CPU) on the file at `path` and eager
    PyTorch on `model`, over `batches` random batches of sizes 1, 2, …, `batches` with pixels
    uniform in [0, 1] (the deployed input range). Raises ParityError when it exceeds `atol`."""
    deployed = _deployable(model)
    session = onnxruntime_session(path, threads=1)
    generator = torch.Generator().manual_seed(seed)
    worst = 0.0
    for size in range(1, batches + 1):
        x = torch.rand(size, 3, resolution, resolution, generator=generator)  # [B, 3, R, R]
        with torch.no_grad():
            expected = deployed(x).numpy()  # [B, classes]
        (got,) = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})
        if got.shape != expected.shape:
            raise ParityError(
                f"ONNX Runtime returned logits of shape {list(got.shape)} for a batch of {size}, "
                f"PyTorch {list(expected.shape)}",
                float("inf"),
            )
        worst = max(worst, float(np.max(np.abs(got - expected))))
    if not worst <= atol:  # NaN fails too
        raise ParityError(
            f"ONNX Runtime's logits differ from PyTorch's by up to {worst:.3g} (allowed {atol:g})",
            worst,
        )
    return worst


def onnxruntime_latency(
    model_or_path: nn.Module | str | os.PathLike[str] | bytes,
    resolution: int,
    *,
    warmup: int = 5,
    runs: int = 30,
    max_seconds: float = 5.0,
    threads: int | None = None,
) -> OnnxLatency:
    """Median wall time (ms) of batch-1 runs under ONNX Runtime's CPUExecutionProvider, after
    `warmup` untimed runs. A module is exported first (the fast exporter, in memory).

    `threads`: intra-op threads (None: 1, a figure that does not depend on how many cores the
    box has or what else runs on them). `max_seconds` bounds warm-up plus timed runs: warm-up
    ends once half of it is spent, the timed runs once all of it is (after at least 3), and one
    run slower than the whole budget raises LatencyError instead of going on. The export of a
    module comes on top (about a second for a small MobileViT).
    """
    if runs < 1 or warmup < 0 or not max_seconds > 0:
        raise ValueError(
            f"need runs ≥ 1, warmup ≥ 0, max_seconds > 0; got {runs}, {warmup}, {max_seconds}"
        )
    n_threads = 1 if threads is None else threads
    if n_threads < 1:
        raise ValueError(f"threads must be ≥ 1 (or None for 1), got {threads}")
    if isinstance(model_or_path, nn.Module):
        source: str | os.PathLike[str] | bytes = _fast_onnx_bytes(model_or_path, resolution)
    else:
        source = model_or_path
    session = onnxruntime_session(source, threads=n_threads)
    x = np.random.default_rng(0).random((1, 3, resolution, resolution), dtype=np.float32)
    feed = {INPUT_NAME: x}

    def run_ms() -> float:
        start = time.perf_counter()
        session.run([OUTPUT_NAME], feed)
        elapsed = time.perf_counter() - start
        if elapsed > max_seconds:
            raise LatencyError(
                f"one batch-1 ONNX Runtime run took {elapsed:.1f} s, over the {max_seconds:g} s "
                "budget for the whole measurement; give a larger max_seconds"
            )
        return elapsed * 1000.0

    started = time.perf_counter()
    for _ in range(warmup):
        run_ms()
        if time.perf_counter() - started > max_seconds / 2:  # keep half for the timed runs
            break
    timings: list[float] = []
    for _ in range(runs):
        timings.append(run_ms())
        if time.perf_counter() - started > max_seconds and len(timings) >= 3:
            break
    plural = "" if n_threads == 1 else "s"
    device = (
        f"CPU {platform.machine()} ({n_threads} thread{plural}), "
        f"onnxruntime {onnxruntime.__version__}, fp32"
    )
    return OnnxLatency(statistics.median(timings), device)


def _fast_onnx_bytes(model: nn.Module, resolution: int) -> bytes:
    try:
        return onnx_bytes(model, resolution, exporter="torchscript")
    except ExportError as torchscript_error:  # a torch without the tracer exporter
        try:
            return onnx_bytes(model, resolution, exporter="dynamo")
        except ExportError as dynamo_error:
            raise ExportError(f"{torchscript_error}; and {dynamo_error}") from dynamo_error


def onnxruntime_session(
    source: str | os.PathLike[str] | bytes, *, threads: int = 1
) -> onnxruntime.InferenceSession:
    """An ONNX Runtime CPU session as the latency is measured: `threads` intra-op threads, one
    inter-op thread, sequential execution, every graph optimisation."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: no per-session warnings in worker logs
    model = source if isinstance(source, bytes) else os.fspath(source)
    try:
        return onnxruntime.InferenceSession(
            model, sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as error:  # onnxruntime raises its own untyped errors
        raise ExportError(f"ONNX Runtime cannot load the model: {_first_line(error)}") from error


# -- TorchScript and the state-dict bundle ------------------------------------------------------


def export_torchscript(
    model: nn.Module,
    resolution: int,
    path: str | os.PathLike[str],
    *,
    metadata: Mapping[str, str],
) -> Path:
    """Write a traced TorchScript module (any batch size at `resolution`) with `metadata`
    (plus "arch" from `model.arch` when absent) as `_extra_files`; `load_torchscript` reads
    both back. Returns the path."""
    deployed = _deployable(model)
    example = torch.rand(2, 3, resolution, resolution)
    try:
        with warnings.catch_warnings():
            # tracer notes on shapes read as Python numbers, and torch.jit's deprecation note
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(deployed, (example,), check_trace=False)
            props = _with_arch(model, metadata)
            extra = dict(props)
            extra[TORCHSCRIPT_METADATA_INDEX] = json.dumps(sorted(props))
            target = Path(path)
            torch.jit.save(traced, os.fspath(target), _extra_files=extra)
    except Exception as error:
        raise ExportError(f"TorchScript export failed: {_first_line(error)}") from error
    return target


def load_torchscript(
    path: str | os.PathLike[str],
) -> tuple[torch.jit.ScriptModule, dict[str, str]]:
    """A TorchScript file written by `export_torchscript` (on the CPU) and its metadata."""
    with zipfile.ZipFile(path) as archive:
        index = [name for name in archive.namelist() if name.endswith(TORCHSCRIPT_METADATA_INDEX)]
        if not index:
            raise ExportError(f"{path} is not a TorchScript file written by vitcube export")
        keys: list[str] = json.loads(archive.read(index[0]))
    extra = dict.fromkeys(keys, "")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit's deprecation note
        module = torch.jit.load(os.fspath(path), map_location="cpu", _extra_files=extra)
    values = {
        key: value.decode() if isinstance(value, bytes) else value for key, value in extra.items()
    }
    return module, values


def export_state_dict(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    metadata: Mapping[str, str],
) -> Path:
    """`torch.save` of {"format", "state_dict" (CPU, fp32), "arch" (dict), "preprocessing"
    (dict or None), "metadata"}, loadable with `torch.load(weights_only=True)`; rebuild with
    `build_model(Arch.from_dict(bundle["arch"])).load_state_dict(bundle["state_dict"])`."""
    props = _with_arch(model, metadata)
    if "arch" not in props:
        raise ValueError("export_state_dict needs the architecture: metadata['arch'] (JSON)")
    state = {key: value.detach().cpu().clone() for key, value in model.state_dict().items()}
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    preprocessing = props.get("preprocessing")
    bundle: dict[str, Any] = {
        "format": STATE_DICT_FORMAT,
        "state_dict": state,
        "arch": json.loads(props["arch"]),
        "preprocessing": None if preprocessing is None else json.loads(preprocessing),
        "metadata": props,
    }
    target = Path(path)
    torch.save(bundle, target)
    return target


# -- helpers -------------------------------------------------------------------------------------


def _deployable(model: nn.Module) -> nn.Module:
    """An fp32 eval-mode CPU copy in the default memory format (the caller's stays as it is)."""
    model = getattr(model, "_orig_mod", model)  # torch.compile's wrapper: export what it wraps
    deployed = copy.deepcopy(model).to(device="cpu", dtype=torch.float32)
    deployed = deployed.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    return deployed.eval()


def _with_arch(model: nn.Module, metadata: Mapping[str, str]) -> dict[str, str]:
    props = {str(key): str(value) for key, value in metadata.items()}
    arch = getattr(model, "arch", None)
    if "arch" not in props and hasattr(arch, "to_dict"):
        props["arch"] = json.dumps(arch.to_dict(), sort_keys=True)  # type: ignore[union-attr]
    return props


def _first_line(error: BaseException) -> str:
    lines = [line for line in str(error).splitlines() if line.strip()]
    return (lines[0] if lines else type(error).__name__)[:500]
