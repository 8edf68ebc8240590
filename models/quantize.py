"""Static int8 post-training quantization of an exported fp32 ONNX network, for ONNX Runtime's CPU.

`quantize_onnx(source, out, calibration_images)` runs `onnxruntime.quantization.quantize_static`
on the file `models.export` writes: QDQ format (QuantizeLinear/DequantizeLinear pairs that ONNX
Runtime's CPU kernels fuse into integer ops), int8 weights quantized per output channel, uint8
activations with ranges calibrated on `calibration_images` by one of onnxruntime's methods —
`minmax` (observed range), `entropy` (the KL-divergence threshold of TensorRT's recipe) or
`percentile` (the 99.999th percentile of |x|, symmetric, onnxruntime's defaults). uint8
activations with int8 weights are what onnxruntime recommends for x86 CPUs (with VNNI without
`reduce_range`; pass `reduce_range=True` for older x86, where 8-bit products may saturate).
The graph first goes through `quant_pre_process` (symbolic shape inference and the basic graph
optimisations), as onnxruntime advises.

`keep_fragile_float=True` leaves in float the operators Q-HyViT (Lee et al., 2023) finds
fragile when hybrid conv + attention networks are quantized after training, because their
activation ranges are wide and input dependent: the normalisations (LayerNormalization,
BatchNormalization, GroupNormalization, InstanceNormalization — GroupNorm as torch exports it —
with the per-channel scale and shift applied right after them), Softmax, and the attention
products: MatMul/Einsum of two activations (Q·Kᵀ, attn·V), the elementwise ops between such a
product and its Softmax (scale, bias), and, for MobileViT v2's separable attention, which has no
MatMul, the Mul of two activations that consume the softmax's scores before the output
projection (keys x scores, ReLU(values) x context). `fragile_nodes` finds them by walking the
graph; they go to `nodes_to_exclude`, so each computes in float with float parameters (a norm's
scale and shift stay fp32), where otherwise it would run as an integer kernel between
DequantizeLinear and QuantizeLinear. A tensor that an int8 neighbour reads or writes is still
quantized there (a LayerNorm's output feeding the int8 qkv projection is); a tensor that passes
only between kept nodes (Q·Kᵀ -> softmax -> attn·V) never is. Convolutions, linear layers and
the rest stay int8.

Imports numpy, onnx, onnxruntime and `models.export` only.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from vitcube.models.export import INPUT_NAME, ExportError

Calibration = Literal["minmax", "entropy", "percentile"]
CALIBRATION_METHODS: tuple[Calibration, ...] = ("minmax", "entropy", "percentile")
_ORT_METHOD = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
}
CALIBRATION_BATCH = 32
"""Images per calibration run; onnxruntime's histograms and ranges are merged batch by batch, so
memory does not grow with the number of calibration images."""

NORMALISATIONS = frozenset(
    {"LayerNormalization", "BatchNormalization", "GroupNormalization", "InstanceNormalization"}
)
SOFTMAXES = frozenset({"Softmax", "LogSoftmax"})
_PRODUCTS = frozenset({"MatMul", "Einsum"})
# Ops that carry a tensor along without computing on its values: followed when looking for what
# a norm's affine tail or a softmax's scores feed into.
_LAYOUT = frozenset({"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Expand", "Flatten", "Cast"})
_ELEMENTWISE = frozenset({"Mul", "Div", "Add", "Sub", "Where", "Cast"})
# Ops with weights end an attention block's walk: the output projection.
_WEIGHTED = frozenset({"Conv", "Gemm", "MatMul", "ConvTranspose"})


class QuantizationError(ExportError):
    """The network could not be quantized, or its int8 file not run."""


@dataclass(frozen=True)
class QuantizationReport:
    """What `quantize_onnx` wrote.

    kept_float: the names of the nodes left in float (empty unless `keep_fragile_float`);
    kept_float_ops: their operator types with counts, e.g. `{"Softmax": 9, "MatMul": 18}`.
    """

    path: Path
    size_bytes: int
    calibration: Calibration
    calibration_images: int
    per_channel: bool
    kept_float: tuple[str, ...]
    kept_float_ops: tuple[tuple[str, int], ...]

    def kept_float_summary(self) -> str:
        """`"18 MatMul, 9 Softmax, 21 LayerNormalization"`, or `"none"`."""
        return ", ".join(f"{n} {op}" for op, n in self.kept_float_ops) or "none"


class ImageCalibrationReader(CalibrationDataReader):
    """Feeds preprocessed images to onnxruntime's calibrator in batches.

    images: a `N x 3 x R x R` float32 array, already prepared as the network's input.
    `set_range` (batch indices) lets `quantize_static` collect one batch at a time.
    """

    def __init__(
        self,
        images: np.ndarray,
        *,
        batch_size: int = CALIBRATION_BATCH,
        input_name: str = INPUT_NAME,
    ) -> None:
        if images.ndim != 4 or images.shape[0] < 1:
            raise ValueError(f"calibration images must be N x C x H x W, got {images.shape}")
        self._images = np.ascontiguousarray(images, dtype=np.float32)
        self._batch = max(1, batch_size)
        self._input = input_name
        self._start, self._end = 0, len(self)
        self._batches: Iterator[dict[str, np.ndarray]] = iter(())
        self.rewind()

    def __len__(self) -> int:
        return -(-self._images.shape[0] // self._batch)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)

    def rewind(self) -> None:
        self._batches = (
            {self._input: self._images[i * self._batch : (i + 1) * self._batch]}
            for i in range(self._start, min(self._end, len(self)))
        )

    def set_range(self, start_index: int, end_index: int) -> None:
        self._start, self._end = start_index, end_index
        self.rewind()


def quantize_onnx(
    source: str | os.PathLike[str] | bytes,
    out: str | os.PathLike[str],
    calibration_images: np.ndarray,
    *,
    calibration: Calibration = "minmax",
    keep_fragile_float: bool = False,
    per_channel: bool = True,
    reduce_range: bool = False,
    preprocess: bool = True,
) -> QuantizationReport:
    """Quantize the fp32 ONNX network `source` (a path or the file's bytes) to `out`.

    calibration_images: a `N x 3 x R x R` float32 array of inputs prepared as the deployed
    network's (the training split, evaluation preprocessing). Metadata (`metadata_props`) is
    carried over. Raises QuantizationError (the method is unknown, onnxruntime fails).
    """
    if calibration not in _ORT_METHOD:
        raise QuantizationError(
            f"unknown calibration method {calibration!r}; use one of "
            f"{', '.join(CALIBRATION_METHODS)}"
        )
    model = onnx.load_model_from_string(source) if isinstance(source, bytes) else onnx.load(source)
    metadata = {prop.key: prop.value for prop in model.metadata_props}
    target = Path(out)
    with tempfile.TemporaryDirectory(prefix="vitcube-quantize-") as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        try:
            with _quiet():
                if preprocess:
                    quant_pre_process(model, os.fspath(prepared))
                    model = onnx.load(prepared)
                _name_nodes(model)
                onnx.save(model, prepared)
                excluded = fragile_nodes(model) if keep_fragile_float else ()
                quantize_static(
                    os.fspath(prepared),
                    os.fspath(target),
                    ImageCalibrationReader(calibration_images),
                    quant_format=QuantFormat.QDQ,
                    per_channel=per_channel,
                    reduce_range=reduce_range,
                    activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    nodes_to_exclude=list(excluded),
                    calibrate_method=_ORT_METHOD[calibration],
                    # One batch per collection, so memory holds one batch's activations (the
                    # option is named for minmax; quantize_static's loop serves every method).
                    extra_options={"CalibStridedMinMax": 1},
                )
        except Exception as error:  # onnxruntime's tools raise anything
            target.unlink(missing_ok=True)
            raise QuantizationError(
                f"onnxruntime could not quantize the network ({calibration}): {_first_line(error)}"
            ) from error
    quantized = onnx.load(target)
    onnx.helper.set_model_props(quantized, metadata)
    onnx.save(quantized, target)
    by_op = Counter(_op_types(model)[name] for name in excluded)
    return QuantizationReport(
        path=target,
        size_bytes=target.stat().st_size,
        calibration=calibration,
        calibration_images=int(calibration_images.shape[0]),
        per_channel=per_channel,
        kept_float=tuple(excluded),
        kept_float_ops=tuple(sorted(by_op.items(), key=lambda item: (-item[1], item[0]))),
    )


def fragile_nodes(model: onnx.ModelProto) -> tuple[str, ...]:
    """Names of the nodes Q-HyViT's analysis says to keep in float (module docstring), in graph
    order: normalisations and their affine tails, softmaxes, attention products."""
    graph = model.graph
    constant = _constant_tensors(graph)
    consumers: dict[str, list[onnx.NodeProto]] = {}
    producer: dict[str, onnx.NodeProto] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
        for name in node.output:
            producer[name] = node

    def activations(node: onnx.NodeProto) -> list[str]:
        return [name for name in node.input if name and name not in constant]

    fragile: set[str] = set()
    for node in graph.node:
        if node.op_type in NORMALISATIONS:
            fragile.add(node.name)
            fragile.update(_affine_tail(node, consumers, constant))
        elif node.op_type in SOFTMAXES:
            fragile.add(node.name)
            fragile.update(_scores_producers(node, producer, constant))
            fragile.update(_score_products(node, consumers, constant))
        elif node.op_type in _PRODUCTS and len(activations(node)) >= 2:
            fragile.add(node.name)  # Q·Kᵀ, attn·V: both operands are activations
    return tuple(node.name for node in graph.node if node.name in fragile)


def _affine_tail(
    norm: onnx.NodeProto, consumers: dict[str, list[onnx.NodeProto]], constant: set[str]
) -> list[str]:
    """The per-channel scale and shift a decomposed GroupNorm applies after its normalisation:
    [Reshape] -> Mul(constant) -> Add(constant), each the single consumer of the one before."""
    tail: list[str] = []
    current = norm
    for _ in range(4):
        following = consumers.get(current.output[0], [])
        if len(following) != 1:
            break
        (node,) = following
        if node.op_type in _LAYOUT and not tail:
            current = node
            continue
        others = [name for name in node.input if name != current.output[0]]
        if node.op_type in {"Mul", "Add"} and others and all(n in constant for n in others):
            tail.append(node.name)
            current = node
            continue
        break
    return tail


def _scores_producers(
    softmax: onnx.NodeProto, producer: dict[str, onnx.NodeProto], constant: set[str]
) -> list[str]:
    """The elementwise ops between an attention product and its softmax (scale, bias, mask)."""
    found: list[str] = []
    node = producer.get(softmax.input[0])
    while node is not None and node.op_type in _ELEMENTWISE:
        found.append(node.name)
        moving = [name for name in node.input if name and name not in constant]
        if len(moving) != 1:
            break
        node = producer.get(moving[0])
    return found


def _score_products(
    softmax: onnx.NodeProto, consumers: dict[str, list[onnx.NodeProto]], constant: set[str]
) -> list[str]:
    """Products of two activations fed, directly or through layout ops and reductions, by the
    softmax's scores, up to the block's next weighted op (its output projection)."""
    found: list[str] = []
    frontier = list(softmax.output)
    seen: set[str] = set()
    while frontier:
        tensor = frontier.pop()
        for node in consumers.get(tensor, []):
            if node.name in seen:
                continue
            seen.add(node.name)
            moving = [name for name in node.input if name and name not in constant]
            if node.op_type in _WEIGHTED and len(moving) < 2:
                continue  # the output projection: the attention ends here
            if node.op_type in {"Mul", *_PRODUCTS} and len(moving) >= 2:
                found.append(node.name)
            frontier.extend(node.output)
    return found


def _constant_tensors(graph: onnx.GraphProto) -> set[str]:
    """Initializers, Constant outputs, and what nodes compute from those alone (graph order is
    topological, so one pass propagates)."""
    constant = {init.name for init in graph.initializer}
    constant.update(init.values.name for init in graph.sparse_initializer)
    for node in graph.node:
        inputs = [name for name in node.input if name]
        if node.op_type == "Constant" or (inputs and all(name in constant for name in inputs)):
            constant.update(node.output)
    return constant


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence onnxruntime's quantization tools: they print progress to stdout and log warnings
    on the root logger (per-channel axes that do not apply to rank-1 constants, the advice to
    pre-process, which `quantize_onnx` does)."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


def _name_nodes(model: onnx.ModelProto) -> None:
    """Give every node a unique name (nodes_to_exclude refers to nodes by name)."""
    used: set[str] = set()
    for index, node in enumerate(model.graph.node):
        if not node.name or node.name in used:
            node.name = f"{node.op_type}_vitcube_{index}"
        used.add(node.name)


def _op_types(model: onnx.ModelProto) -> dict[str, str]:
    return {node.name: node.op_type for node in model.graph.node}


def _first_line(error: BaseException) -> str:
    lines = [line for line in str(error).splitlines() if line.strip()]
    return (lines[0] if lines else type(error).__name__)[:500]


def top1_accuracy(
    session: Any, images: np.ndarray, labels: np.ndarray, *, batch_size: int = 64
) -> float:
    """Top-1 (a fraction) of an ONNX Runtime session on prepared images.

    images: `N x 3 x R x R` float32; labels: `N` ints. Works for the fp32 file too.
    """
    logits = run_logits(session, images, batch_size=batch_size)
    return float(np.mean(logits.argmax(axis=1) == labels))


def run_logits(session: Any, images: np.ndarray, *, batch_size: int = 64) -> np.ndarray:
    """`N x classes` logits of `session` over `images` (`N x 3 x R x R`), in batches."""
    input_name = session.get_inputs()[0].name
    parts: Sequence[np.ndarray] = [
        session.run(None, {input_name: np.ascontiguousarray(images[i : i + batch_size])})[0]
        for i in range(0, images.shape[0], batch_size)
    ]
    return np.concatenate(list(parts)) if parts else np.zeros((0, 0), dtype=np.float32)
