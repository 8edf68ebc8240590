"""models.export: every family exports to ONNX with onnxruntime's logits equal to eager PyTorch's,
TorchScript and the state-dict bundle rebuild the same network, metadata survives each format,
and onnxruntime_latency gives a batch-1 figure within its time budget."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch

from vitcube.models import Arch, ArchConfig, build_model
from vitcube.models.export import (
    Exporter,
    ExportError,
    ParityError,
    check_onnx_parity,
    export_onnx,
    export_state_dict,
    export_torchscript,
    load_torchscript,
    onnx_bytes,
    onnxruntime_latency,
    read_onnx_metadata,
)

PREPROCESSING = json.dumps({"resolution": 0, "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]})

# Small widths at small inputs keep each export to a second or so (dynamo: several seconds).
# 80 px leaves MobileViT v1 feature maps of 5 and 3 px: the grid-resize path is exported too.
SMALL_ARCHS = {
    "mobilevit_v1": ArchConfig("mobilevit_v1", size="xxs", num_classes=10).scale(
        r=80 / 256, d_i=0.5, d_m=0.5, w=0.5
    ),
    "mobilevit_v2": ArchConfig("mobilevit_v2", width=0.5, num_classes=10).scale(
        r=64 / 256, d_i=0.5, d_m=0.5
    ),
    "exmobilevit": ArchConfig("mobilevit_v1", size="xxs", num_classes=7, head="exshortcut").scale(
        r=64 / 256, d_i=0.5, d_m=0.5, w=0.5
    ),
    "mobilevit_v2_tinyimagenet": ArchConfig(
        "mobilevit_v2", width=0.5, num_classes=5, dropped_stages=(4, 5)
    ).scale(r=64 / 256),
    # 128 px: the 8×8 first-stage map is padded to two 7-pixel windows a side
    "efficientvit": ArchConfig("efficientvit", size="m0", num_classes=10).scale(
        r=128 / 224, d_m=0.5, w=0.5
    ),
}


def _model(name: str) -> torch.nn.Module:
    model = build_model(SMALL_ARCHS[name]).eval()
    # Non-trivial norm statistics, as trained weights have: the default running stats of BN
    # (mean 0, var 1) would hide an exporter that drops them.
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    return model


def _metadata(name: str) -> dict[str, str]:
    return {"preprocessing": PREPROCESSING, "trial_id": "7", "note": f"{name} ünïcode"}


@pytest.mark.parametrize("name", sorted(SMALL_ARCHS))
def test_torchscript_exporter_onnx_logits_match_torch(name: str, tmp_path: Path) -> None:
    _assert_onnx_export(name, tmp_path, "torchscript")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mobilevit_v1", "mobilevit_v2", "efficientvit"])
def test_dynamo_exporter_onnx_logits_match_torch(name: str, tmp_path: Path) -> None:
    _assert_onnx_export(name, tmp_path, "dynamo")


def _assert_onnx_export(name: str, tmp_path: Path, exporter: Exporter) -> None:
    model = _model(name)
    arch = SMALL_ARCHS[name]
    path = export_onnx(
        model, arch.resolution, tmp_path / "net.onnx", metadata=_metadata(name), exporter=exporter
    )
    # batch sizes 1, 2, 3 through the one file: the batch dimension is dynamic
    assert check_onnx_parity(model, path, arch.resolution, batches=3, atol=1e-4) <= 1e-4

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (image,) = session.get_inputs()
    assert image.name == "image"
    assert image.shape[1:] == [3, arch.resolution, arch.resolution]
    assert not isinstance(image.shape[0], int)  # symbolic: any batch
    assert [output.name for output in session.get_outputs()] == ["logits"]
    (logits,) = session.run(
        None, {"image": np.zeros((5, 3, arch.resolution, arch.resolution), np.float32)}
    )
    assert logits.shape == (5, arch.num_classes)

    metadata = read_onnx_metadata(path)
    assert {k: metadata[k] for k in _metadata(name)} == _metadata(name)
    assert Arch.from_dict(json.loads(metadata["arch"])) == arch  # the file says what it is


def test_parity_check_fails_on_a_different_network(tmp_path: Path) -> None:
    model = _model("mobilevit_v2")
    resolution = SMALL_ARCHS["mobilevit_v2"].resolution
    path = export_onnx(model, resolution, tmp_path / "a.onnx", metadata={}, exporter="torchscript")
    with torch.no_grad():
        model.classifier[-1].bias.add_(0.01)  # other weights than the file holds
    with pytest.raises(ParityError) as raised:
        check_onnx_parity(model, path, resolution, atol=1e-4)
    assert raised.value.max_abs_diff == pytest.approx(0.01, rel=1e-3)


def test_export_leaves_the_callers_model_as_it_was(tmp_path: Path) -> None:
    model = _model("mobilevit_v1").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    onnx_bytes(model, SMALL_ARCHS["mobilevit_v1"].resolution, exporter="torchscript")
    assert model.training
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_an_unknown_exporter_is_refused() -> None:
    with pytest.raises(ValueError, match="dynamo, torchscript"):
        onnx_bytes(_model("mobilevit_v2"), 64, exporter="tflite")  # type: ignore[arg-type]


def test_a_network_that_cannot_take_the_input_is_an_export_error() -> None:
    with pytest.raises(ExportError, match="torchscript ONNX exporter failed"):
        onnx_bytes(torch.nn.Conv2d(4, 4, 3), 32, exporter="torchscript")  # wants 4 channels


@pytest.mark.parametrize("name", ["mobilevit_v1", "mobilevit_v2"])
def test_torchscript_output_equals_eager_and_keeps_metadata(name: str, tmp_path: Path) -> None:
    model = _model(name)
    arch = SMALL_ARCHS[name]
    path = export_torchscript(model, arch.resolution, tmp_path / "net.pt", metadata=_metadata(name))
    loaded, metadata = load_torchscript(path)
    for batch in (1, 3):
        x = torch.rand(batch, 3, arch.resolution, arch.resolution)
        with torch.no_grad():
            torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=1e-6)
    assert {k: metadata[k] for k in _metadata(name)} == _metadata(name)
    assert Arch.from_dict(json.loads(metadata["arch"])) == arch


def test_state_dict_bundle_rebuilds_the_network(tmp_path: Path) -> None:
    model = _model("mobilevit_v1")
    path = export_state_dict(model, tmp_path / "net.pt", metadata=_metadata("mobilevit_v1"))
    bundle = torch.load(path, weights_only=True)
    rebuilt = build_model(Arch.from_dict(bundle["arch"])).eval()
    rebuilt.load_state_dict(bundle["state_dict"])  # strict: every key, every shape
    assert bundle["preprocessing"] == json.loads(PREPROCESSING)
    assert bundle["metadata"]["trial_id"] == "7"
    x = torch.rand(2, 3, rebuilt.arch.resolution, rebuilt.arch.resolution)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model(x))


def test_a_state_dict_bundle_needs_the_architecture(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="architecture"):
        export_state_dict(torch.nn.Linear(2, 2), tmp_path / "x.pt", metadata={})


def test_onnxruntime_latency_of_a_module_and_of_a_file(tmp_path: Path) -> None:
    model = _model("mobilevit_v2")
    resolution = SMALL_ARCHS["mobilevit_v2"].resolution
    measured = onnxruntime_latency(model, resolution, warmup=2, runs=5)
    assert measured.ms > 0
    assert "1 thread)" in measured.device and "onnxruntime" in measured.device

    path = export_onnx(
        model, resolution, tmp_path / "net.onnx", metadata={}, exporter="torchscript"
    )
    from_file = onnxruntime_latency(path, resolution, warmup=1, runs=3, threads=2)
    assert from_file.ms > 0 and "(2 threads)" in from_file.device


def test_onnxruntime_latency_stops_at_its_budget() -> None:
    model = _model("mobilevit_v2")
    start = time.perf_counter()
    measured = onnxruntime_latency(
        model, SMALL_ARCHS["mobilevit_v2"].resolution, runs=100_000, max_seconds=0.5
    )
    assert measured.ms > 0
    assert time.perf_counter() - start < 10  # export (≈1 s) + the 0.5 s budget, not 100k runs


def test_a_run_slower_than_the_whole_budget_is_an_error() -> None:
    # a batch-1 pass of this network takes about a millisecond, ten times the budget
    with pytest.raises(ExportError, match="budget"):
        onnxruntime_latency(
            _model("mobilevit_v2"), SMALL_ARCHS["mobilevit_v2"].resolution, max_seconds=1e-4
        )


def test_a_torch_compiled_model_exports_what_it_wraps(tmp_path: Path) -> None:
    model = _model("mobilevit_v2")
    resolution = SMALL_ARCHS["mobilevit_v2"].resolution
    compiled = torch.compile(model)  # never called: nothing is compiled
    path = export_onnx(
        compiled, resolution, tmp_path / "c.onnx", metadata={}, exporter="torchscript"
    )
    assert check_onnx_parity(model, path, resolution) <= 1e-4
    assert Arch.from_dict(json.loads(read_onnx_metadata(path)["arch"])) == model.arch
