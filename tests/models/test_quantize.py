"""Static int8 quantization (`models.quantize`): a network trained on digits keeps its answers
under every calibration method, the file holds int8 weights, and the ops Q-HyViT calls fragile
are found in each family's graph and left in float only when asked."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from vitcube.models import Arch, ArchConfig, build_model
from vitcube.models.export import onnx_bytes, onnxruntime_session
from vitcube.models.quantize import (
    CALIBRATION_METHODS,
    ImageCalibrationReader,
    QuantizationError,
    fragile_nodes,
    quantize_onnx,
    run_logits,
    top1_accuracy,
)

# MobileViT-XXS without its last two stages at 32 px (2.8 M MACs): one MobileViT block with two
# transformer layers, so Q·Kᵀ, softmax and attn·V are all in the graph; 4 epochs reach ~95 %.
TINY_V1 = {
    "family": "mobilevit_v1",
    "size": "xxs",
    "resolution": 32,
    "num_classes": 10,
    "dropped_stages": [4, 5],
}


@dataclass(frozen=True)
class Trained:
    arch: Arch
    fp32: bytes  # the ONNX file
    calibration: np.ndarray  # [128, 3, R, R] training images, evaluation preprocessing
    val_images: np.ndarray  # [359, 3, R, R]
    val_labels: np.ndarray  # [359]
    fp32_logits: np.ndarray  # [359, 10]


@pytest.fixture(scope="module")
def trained() -> Trained:
    """The tiny MobileViT trained on digits by the worker's trainer, exported to ONNX."""
    from vitcube.workers.augment import center_resize
    from vitcube.workers.datasets import load_digits
    from vitcube.workers.recipe import TrainingConfig
    from vitcube.workers.runner import run_trial

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        data = load_digits()
        arch = ArchConfig.from_dict(TINY_V1).scale()
        outcome = run_trial(
            arch.to_dict(),
            data,
            config=TrainingConfig.from_dict({"epochs": 4, "batch_size": 32, "lr": 0.002}),
            seed=0,
            device=torch.device("cpu"),
            onnx_latency=False,
        )
        assert outcome.top1 > 0.8 and outcome.weights is not None  # chance is 0.1
        model = build_model(arch).eval()
        model.load_state_dict(outcome.weights)
        resolution = arch.resolution
        fp32 = onnx_bytes(model, resolution, exporter="torchscript")
        val = center_resize(data.val.images, resolution).numpy()
        return Trained(
            arch=arch,
            fp32=fp32,
            calibration=center_resize(data.train.images[:128], resolution).numpy(),
            val_images=val,
            val_labels=data.val.labels.numpy(),
            fp32_logits=run_logits(onnxruntime_session(fp32), val),
        )
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
@pytest.mark.parametrize("method", CALIBRATION_METHODS)
@pytest.mark.parametrize("keep_fragile_float", [False, True])
def test_int8_logits_stay_close_to_fp32_under_every_calibration(
    trained: Trained, method: str, keep_fragile_float: bool, tmp_path: Path
) -> None:
    report = quantize_onnx(
        trained.fp32,
        tmp_path / "int8.onnx",
        trained.calibration,
        calibration=method,  # type: ignore[arg-type]
        keep_fragile_float=keep_fragile_float,
    )
    session = onnxruntime_session(report.path)
    logits = run_logits(session, trained.val_images)
    reference = trained.fp32_logits
    fp32_top1 = float(np.mean(reference.argmax(1) == trained.val_labels))
    int8_top1 = top1_accuracy(session, trained.val_images, trained.val_labels)
    agreement = float(np.mean(logits.argmax(1) == reference.argmax(1)))
    spread = float(reference.max() - reference.min())
    error = np.abs(logits - reference)
    # Tolerances: uint8 activations quantize each tensor to 1/255 of its calibrated range, and
    # some 20 quantized layers each add such an error, so logits move by a few percent of their
    # range (measured: mean 0.7 %, worst 8 %) and only images near a decision boundary change
    # class (measured agreement 98-99.5 %). The bounds leave about 2x headroom; a broken
    # quantization (wrong scales, a lost zero point) moves logits by tens of percent of their
    # range and agrees on far fewer images.
    assert agreement >= 0.95, (method, agreement)
    assert abs(int8_top1 - fp32_top1) <= 0.03, (method, int8_top1, fp32_top1)
    assert float(error.mean()) <= 0.02 * spread, (method, float(error.mean()), spread)
    assert float(error.max()) <= 0.15 * spread, (method, float(error.max()), spread)
    assert report.calibration == method and report.calibration_images == 128
    assert report.size_bytes == report.path.stat().st_size < 0.75 * len(trained.fp32)
    assert bool(report.kept_float) is keep_fragile_float


@pytest.mark.slow
def test_the_int8_file_holds_int8_weights_and_keeps_the_metadata(
    trained: Trained, tmp_path: Path
) -> None:
    report = quantize_onnx(trained.fp32, tmp_path / "int8.onnx", trained.calibration)
    model = onnx.load(report.path)
    ops = Counter(node.op_type for node in model.graph.node)
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > ops["QuantizeLinear"]
    weights = {init.name: init for init in model.graph.initializer}
    conv_weights = [
        weights[_producer(model, node.input[1]).input[0]]
        for node in model.graph.node
        if node.op_type == "Conv"
    ]
    assert conv_weights, "no convolution left in the graph"
    # Every convolution reads int8 weights through a DequantizeLinear, one scale per channel.
    assert {w.data_type for w in conv_weights} == {onnx.TensorProto.INT8}
    fp32_props = {p.key: p.value for p in onnx.load_model_from_string(trained.fp32).metadata_props}
    assert {p.key: p.value for p in model.metadata_props} == fp32_props
    assert "arch" in fp32_props


def _producer(model: onnx.ModelProto, tensor: str) -> onnx.NodeProto:
    (node,) = [node for node in model.graph.node if tensor in node.output]
    assert node.op_type == "DequantizeLinear", node.op_type
    return node


@pytest.mark.slow
def test_fragile_ops_run_in_float_only_when_asked(trained: Trained, tmp_path: Path) -> None:
    plain = onnx.load(
        quantize_onnx(trained.fp32, tmp_path / "plain.onnx", trained.calibration).path
    )
    kept_report = quantize_onnx(
        trained.fp32, tmp_path / "kept.onnx", trained.calibration, keep_fragile_float=True
    )
    kept = onnx.load(kept_report.path)
    assert dict(kept_report.kept_float_ops) == {"LayerNormalization": 5, "MatMul": 4, "Softmax": 2}
    # Plain: every one of them sits between DequantizeLinear and QuantizeLinear, its parameters
    # too (ONNX Runtime runs it on int8); kept: none does.
    assert all(_runs_int8(plain, name) for name in kept_report.kept_float)
    assert [name for name in kept_report.kept_float if _runs_int8(kept, name)] == []
    # The layers with weights stay int8 either way.
    weighted = [
        n.name for n in kept.graph.node if n.op_type in ("Conv", "Gemm") or _weight_matmul(kept, n)
    ]
    assert weighted and all(_runs_int8(kept, name) for name in weighted)


def _runs_int8(model: onnx.ModelProto, name: str) -> bool:
    """Whether node `name` reads only dequantized tensors (its parameters too) and writes only
    quantized ones: the DQ -> op -> Q pattern ONNX Runtime runs as an integer kernel. A node kept
    in float reads a float tensor or float parameters, or writes a float tensor."""
    (node,) = [n for n in model.graph.node if n.name == name]
    producers = {out: n for n in model.graph.node for out in n.output}
    consumers = [n for n in model.graph.node if set(n.input) & set(node.output)]
    inputs = [producers.get(i) for i in node.input if i]  # None: an initializer (float)
    return (
        all(n is not None and n.op_type == "DequantizeLinear" for n in inputs)
        and bool(consumers)
        and all(n.op_type == "QuantizeLinear" for n in consumers)
    )


def _weight_matmul(model: onnx.ModelProto, node: onnx.NodeProto) -> bool:
    if node.op_type != "MatMul":
        return False
    producers = {out: n for n in model.graph.node for out in n.output}
    source = producers.get(node.input[1])
    return (
        source is not None
        and source.op_type == "DequantizeLinear"
        and not any(source.input[0] in n.output for n in model.graph.node)
    )


# -- which nodes are fragile, per family (untrained networks: the graph is what matters) --------


def _graph(
    base: dict[str, object], resolution: int = 64
) -> tuple[onnx.ModelProto, torch.nn.Module]:
    arch = ArchConfig.from_dict({**base, "num_classes": 10, "resolution": resolution}).scale()
    model = build_model(arch).eval()
    return onnx.load_model_from_string(onnx_bytes(model, resolution, exporter="torchscript")), model


def _depth(model: torch.nn.Module) -> int:
    arch = model.arch  # type: ignore[attr-defined]
    return sum(s.transformer.depth for s in arch.stages if s.transformer is not None)


def _constant(model: onnx.ModelProto) -> set[str]:
    names = {init.name for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" or (node.input and all(i in names for i in node.input)):
            names.update(node.output)
    return names


def test_mobilevit_v1_fragile_ops_are_its_norms_softmaxes_and_attention_matmuls() -> None:
    graph, model = _graph({"family": "mobilevit_v1", "size": "xxs"})
    depth = _depth(model)  # 2 + 4 + 3 transformer layers
    ops = {node.name: node for node in graph.graph.node}
    found = Counter(ops[name].op_type for name in fragile_nodes(graph))
    layer_norms = sum(isinstance(m, torch.nn.LayerNorm) for m in model.modules())
    assert found == {"MatMul": 2 * depth, "Softmax": depth, "LayerNormalization": layer_norms}
    constant = _constant(graph)
    for name in fragile_nodes(graph):
        if ops[name].op_type == "MatMul":  # Q·Kᵀ and attn·V, never a linear layer's weights
            assert not any(i in constant for i in ops[name].input), name
    linear = [n for n in graph.graph.node if n.op_type == "MatMul" and n.input[1] in constant]
    assert len(linear) == 4 * depth  # qkv, out, 2 FFN: none of them kept
    assert not {n.name for n in linear} & set(fragile_nodes(graph))


def test_mobilevit_v2_separable_attention_and_group_norms_are_found() -> None:
    graph, model = _graph({"family": "mobilevit_v2", "width": 0.5})
    depth = _depth(model)
    ops = {node.name: node for node in graph.graph.node}
    fragile = fragile_nodes(graph)
    found = Counter(ops[name].op_type for name in fragile)
    group_norms = sum(isinstance(m, torch.nn.GroupNorm) for m in model.modules())
    # Per GroupNorm: InstanceNormalization + its scale (Mul) and shift (Add); per attention
    # layer: softmax, keys x scores and ReLU(values) x context (no MatMul in v2's attention).
    assert found == {
        "InstanceNormalization": group_norms,
        "Mul": group_norms + 2 * depth,
        "Add": group_norms,
        "Softmax": depth,
    }
    # SiLU's x * sigmoid(x) is a product of two activations too, but not attention: kept int8.
    producers = {out: n for n in graph.graph.node for out in n.output}
    silu = [
        n.name
        for n in graph.graph.node
        if n.op_type == "Mul" and any(producers.get(i, n).op_type == "Sigmoid" for i in n.input)
    ]
    assert silu and not set(silu) & set(fragile)


def test_a_pure_cnn_has_no_fragile_ops() -> None:
    graph, _ = _graph({"family": "mobilenet_v2"})
    assert fragile_nodes(graph) == ()  # its BatchNorms are folded into the convolutions


def test_an_unknown_calibration_method_is_refused(tmp_path: Path) -> None:
    graph, _ = _graph({"family": "mobilenet_v2"}, resolution=32)
    images = np.zeros((2, 3, 32, 32), dtype=np.float32)
    with pytest.raises(QuantizationError, match="minmax, entropy, percentile"):
        quantize_onnx(graph.SerializeToString(), tmp_path / "x.onnx", images, calibration="kl")  # type: ignore[arg-type]
    assert not (tmp_path / "x.onnx").exists()


def test_the_calibration_reader_serves_every_image_once_in_batches() -> None:
    images = np.arange(70 * 3 * 2 * 2, dtype=np.float32).reshape(70, 3, 2, 2)
    reader = ImageCalibrationReader(images, batch_size=32)
    assert len(reader) == 3

    def drain() -> list[np.ndarray]:
        batches = []
        while (batch := reader.get_next()) is not None:
            batches.append(batch["image"])
        return batches

    assert [b.shape[0] for b in drain()] == [32, 32, 6]
    reader.rewind()
    np.testing.assert_array_equal(np.concatenate(drain()), images)
    reader.set_range(1, 2)  # what quantize_static's one-batch-at-a-time loop asks for
    (only,) = drain()
    np.testing.assert_array_equal(only, images[32:64])
    with pytest.raises(ValueError, match="N x C x H x W"):
        ImageCalibrationReader(np.zeros((3, 4), dtype=np.float32))
