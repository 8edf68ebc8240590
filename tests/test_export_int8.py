"""`vitcube export --format onnx-int8` against a live server: a network the worker's trainer
trained on digits, uploaded as a worker uploads it, comes back as an int8 ONNX file that runs
in ONNX Runtime with answers close to fp32's, and its description says what int8 costs (top-1
both ways on the validation split, size, both latencies). Bad flags are exit 2, failures one
line and exit 1, and neither leaves a file behind."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from typer.testing import CliRunner

from tests.factories import (
    ADMIN,
    VIEWER_TOKEN,
    WORKER,
    create_search,
    lease_one,
    make_settings,
    report_body,
    wait_for,
)
from tests.service.conftest import LiveServer
from vitcube.cli import app
from vitcube.contract import preprocessing
from vitcube.models import Arch, build_model
from vitcube.models.export import read_onnx_metadata
from vitcube.service import db as service_db

# MobileViT-XXS without its last two stages at 32 px: one MobileViT block (two transformer
# layers), trained by the worker's trainer to ~95 % on digits in ~20 s on one thread.
TINY_V1 = {
    "family": "mobilevit_v1",
    "size": "xxs",
    "resolution": 32,
    "dropped_stages": [4, 5],
}
RECIPE = {"epochs": 4, "batch_size": 32, "lr": 0.002}


@dataclass
class Trained:
    """A digits search on a live server whose one trial was really trained and uploaded, and a
    cifar10 search (for the --data-root checks)."""

    url: str
    search_id: int
    trial_id: int
    top1: float  # what the trainer measured on the validation split
    model: torch.nn.Module
    cifar_search_id: int


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trained]:
    from vitcube.workers.checkpoint import save_weights
    from vitcube.workers.datasets import load_digits
    from vitcube.workers.recipe import TrainingConfig
    from vitcube.workers.runner import run_trial

    scratch = tmp_path_factory.mktemp("int8-server")
    url = f"sqlite:///{scratch / 'vitcube.db'}"
    service_db.upgrade(url)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with (
            LiveServer(make_settings(url, lease_seconds=600.0)) as server,
            httpx.Client(base_url=server.url, timeout=60) as client,
        ):
            search = create_search(
                client,
                base=TINY_V1,
                budget={"c": 1.0},
                max_trials=1,
                parallelism=1,
                training=RECIPE,
            )
            lease = lease_one(client)
            outcome = run_trial(
                lease["arch"],
                load_digits(),
                config=TrainingConfig.from_dict(RECIPE),
                seed=0,
                device=torch.device("cpu"),
                onnx_latency=False,
            )
            assert outcome.top1 > 0.8 and outcome.weights is not None  # chance is 0.1
            weights = scratch / "weights.pt"
            save_weights(
                weights,
                arch=lease["arch"],
                state_dict=outcome.weights,
                preprocessing=preprocessing("digits", lease["arch"]["resolution"]),
                top1=outcome.top1,
                trial_id=lease["id"],
                search_id=search["id"],
            )
            response = client.put(
                f"/api/trials/{lease['id']}/weights",
                params={"lease_id": lease["lease_id"]},
                content=weights.read_bytes(),
                headers={**WORKER, "Content-Type": "application/octet-stream"},
            )
            assert response.status_code == 200, response.text
            response = client.post(
                f"/api/trials/{lease['id']}/complete",
                json=report_body(lease, top1=outcome.top1, surrogate=False),
                headers=WORKER,
            )
            assert response.status_code == 200, response.text
            wait_for(
                lambda: client.get(f"/api/searches/{search['id']}", headers=ADMIN).json()["best"]
            )
            model = build_model(Arch.from_dict(lease["arch"])).eval()
            model.load_state_dict(outcome.weights)
            cifar = create_search(client, dataset={"name": "cifar10"}, max_trials=1)
            yield Trained(server.url, search["id"], lease["id"], outcome.top1, model, cifar["id"])
    finally:
        torch.set_num_threads(threads)


def _export(trained: Trained, out: Path, *args: str, search: int | None = None) -> Any:
    search_id = trained.search_id if search is None else search
    argv = ["export", "--server", trained.url, "--token", VIEWER_TOKEN, "--search", str(search_id)]
    return CliRunner().invoke(app, [*argv, "--out", str(out), "--format", "onnx-int8", *args])


def _digits_val(resolution: int) -> tuple[np.ndarray, np.ndarray]:
    from vitcube.workers.augment import center_resize
    from vitcube.workers.datasets import load_digits

    val = load_digits().val
    return center_resize(val.images, resolution).numpy(), val.labels.numpy()


@pytest.mark.slow  # trains a network (~20 s) and runs the dynamo exporter (~10 s)
def test_int8_export_of_a_trained_network_runs_close_to_fp32(
    trained: Trained, tmp_path: Path
) -> None:
    out = tmp_path / "best-int8.onnx"
    result = _export(trained, out)  # defaults: minmax, 256 images, fragile ops int8, dynamo
    assert result.exit_code == 0, result.output
    assert "calibrating int8 ranges (minmax) on 256 images of digits's training split" in (
        result.output
    )
    assert "int8 (minmax calibration, every quantizable op int8): top-1" in result.output
    assert "ms vs fp32" in result.output

    description = json.loads(out.with_name("best-int8.onnx.json").read_text())
    assert description["file_format"] == "onnx-int8"
    assert description["source"]["trial_id"] == trained.trial_id
    int8 = description["int8"]
    assert int8["calibration"] == "minmax" and int8["calibration_split"] == "train"
    assert int8["calibration_images"] == 256 and int8["keep_fragile_float"] is False
    assert int8["eval_split"] == "val" and int8["eval_images"] == 359  # the whole split
    # The fp32 file, measured with the worker's evaluation preprocessing, scores what the
    # trainer reported for the same weights (one image of slack for float rounding at a tie).
    assert int8["fp32_top1"] == pytest.approx(trained.top1, abs=1.5 / 359)
    # int8 within 3 points of fp32 and agreeing on ≥ 95 % of images: the tiny net's quantization
    # error measured 0-1 points and 98-99.5 % agreement under each calibration method
    # (tests/models/test_quantize.py justifies the bounds); a broken scale or zero point costs
    # tens of points.
    assert abs(int8["int8_top1"] - int8["fp32_top1"]) <= 0.03
    assert int8["delta_top1_points"] == pytest.approx(100 * (int8["int8_top1"] - int8["fp32_top1"]))
    assert int8["top1_agreement"] >= 0.95
    assert out.stat().st_size == int8["int8_bytes"] < 0.75 * int8["fp32_bytes"]
    assert int8["fp32_latency_ms"] > 0 and int8["int8_latency_ms"] > 0
    assert "onnxruntime" in int8["latency_device"]
    assert description["onnx"]["latency_ms"] == int8["int8_latency_ms"]

    # The file itself: int8 weights behind DequantizeLinear, its own metadata, and logits close
    # to the uploaded network's on the validation images.
    proto = onnx.load(out)
    ops = Counter(node.op_type for node in proto.graph.node)
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > 0
    metadata = read_onnx_metadata(out)
    assert Arch.from_dict(json.loads(metadata["arch"])) == trained.model.arch
    assert json.loads(metadata["quantization"])["calibration"] == "minmax"
    resolution = description["resolution"]
    images, labels = _digits_val(resolution)
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (logits,) = session.run(["logits"], {"image": images})
    with torch.no_grad():
        reference = trained.model(torch.from_numpy(images)).numpy()
    spread = float(reference.max() - reference.min())
    assert float(np.abs(logits - reference).mean()) <= 0.02 * spread
    assert float(np.mean(logits.argmax(1) == labels)) == pytest.approx(int8["int8_top1"])


@pytest.mark.slow
def test_fragile_ops_kept_in_float_with_entropy_calibration(
    trained: Trained, tmp_path: Path
) -> None:
    out = tmp_path / "kept.onnx"
    result = _export(
        trained,
        out,
        "--calibration",
        "entropy",
        "--calibration-images",
        "64",
        "--keep-fragile-float",
        "--eval-images",
        "100",
        "--exporter",
        "torchscript",
    )
    assert result.exit_code == 0, result.output
    assert "kept in float: 5 LayerNormalization, 4 MatMul, 2 Softmax" in result.output
    int8 = json.loads(out.with_name("kept.onnx.json").read_text())["int8"]
    assert int8["calibration"] == "entropy" and int8["calibration_images"] == 64
    assert int8["keep_fragile_float"] is True and int8["eval_images"] == 100
    assert int8["kept_float_ops"] == {"LayerNormalization": 5, "MatMul": 4, "Softmax": 2}
    assert abs(int8["int8_top1"] - int8["fp32_top1"]) <= 0.03


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--calibration", "kl"], "--calibration"),
        (["--calibration-images", "0"], "--calibration-images"),
        (["--eval-images", "0"], "--eval-images"),
    ],
)
def test_bad_int8_flags_exit_2_before_any_request(
    args: list[str], complaint: str, tmp_path: Path
) -> None:
    argv = ["export", "--server", "http://127.0.0.1:1", "--token", "t", "--search", "1"]
    out = tmp_path / "x.onnx"
    result = CliRunner().invoke(app, [*argv, "--out", str(out), "--format", "onnx-int8", *args])
    assert result.exit_code == 2, result.output
    assert complaint in result.output
    assert not out.exists()


def test_a_dataset_on_disk_without_data_root_is_a_usage_error(
    trained: Trained, tmp_path: Path
) -> None:
    out = tmp_path / "cifar.onnx"
    result = _export(trained, out, search=trained.cifar_search_id)
    assert result.exit_code == 2, result.output
    assert "--data-root" in result.output and "cifar10" in result.output
    assert not out.exists() and not out.with_name("cifar.onnx.json").exists()


def test_a_data_root_without_the_dataset_is_one_line_and_exit_1(
    trained: Trained, tmp_path: Path
) -> None:
    out = tmp_path / "cifar.onnx"
    result = _export(trained, out, "--data-root", str(tmp_path), search=trained.cifar_search_id)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, result.output
    assert "cannot read the search's dataset" in lines[0] and "cifar-10-batches-py" in lines[0]
    assert not out.exists() and not out.with_name("cifar.onnx.json").exists()


def test_the_int8_options_are_listed() -> None:
    result = CliRunner().invoke(app, ["export", "--help"], env={"COLUMNS": "240"})
    assert result.exit_code == 0
    for option in ("onnx-int8", "--calibration", "--keep-fragile-float", "--data-root"):
        assert option in result.output
