"""`vitcube export` against a live server: a trial completed with weights PUT as a worker puts
them comes back as ONNX / TorchScript / a state dict that computes what the uploaded network
computes, with its description beside it; every failure is one line and exit code 1."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime
import pytest
import torch
from typer.testing import CliRunner

from tests.factories import (
    ADMIN,
    VIEWER_TOKEN,
    WORKER,
    WORKER_TOKEN,
    create_search,
    lease_one,
    make_settings,
    report_body,
    wait_for,
)
from tests.service.conftest import LiveServer, free_port
from vitcube.cli import app
from vitcube.contract import preprocessing
from vitcube.models import Arch, build_model
from vitcube.models.export import load_torchscript, read_onnx_metadata
from vitcube.service import db as service_db

TINY_RESOLUTION = 64
TINY_BASE = {"family": "mobilevit_v2", "width": 0.5, "resolution": TINY_RESOLUTION}


@dataclass
class Found:
    """A finished search on a live server: `with_weights` completed with uploaded weights,
    `without_weights` completed without any; `model` is the network that was uploaded."""

    url: str
    search_id: int
    with_weights: int
    without_weights: int
    model: torch.nn.Module


@pytest.fixture(autouse=True)
def _single_threaded_torch() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def found(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Found]:
    url = f"sqlite:///{tmp_path_factory.mktemp('export-server') / 'vitcube.db'}"
    service_db.upgrade(url)
    with (
        LiveServer(make_settings(url)) as server,
        httpx.Client(base_url=server.url, timeout=60) as client,
    ):
        search = create_search(
            client, base=TINY_BASE, max_trials=2, parallelism=2, budget={"c": 0.5}
        )
        first, second = lease_one(client), lease_one(client)
        model = _trained_looking(Arch.from_dict(first["arch"]))
        _put_weights(client, first, model, search["id"], top1=0.9)
        for lease, top1 in ((first, 0.9), (second, 0.5)):
            response = client.post(
                f"/api/trials/{lease['id']}/complete",
                json=report_body(lease, top1=top1),
                headers=WORKER,
            )
            assert response.status_code == 200, response.text
        wait_for(lambda: client.get(f"/api/searches/{search['id']}", headers=ADMIN).json()["best"])
        yield Found(server.url, search["id"], first["id"], second["id"], model)


def _trained_looking(arch: Arch) -> torch.nn.Module:
    """A network whose weights differ from a fresh `build_model` (a reloaded fresh init would
    not show that the uploaded weights made the round trip)."""
    torch.manual_seed(123)
    model = build_model(arch).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    return model


def _put_weights(
    client: httpx.Client, lease: dict[str, Any], model: torch.nn.Module, search_id: int, top1: float
) -> None:
    buffer = io.BytesIO()
    torch.save(
        {
            "format": "vitcube-weights/1",
            "arch": lease["arch"],
            "state_dict": model.state_dict(),
            "preprocessing": preprocessing("digits", lease["arch"]["resolution"]),
            "top1": top1,
            "trial_id": lease["id"],
            "search_id": search_id,
        },
        buffer,
    )
    response = client.put(
        f"/api/trials/{lease['id']}/weights",
        params={"lease_id": lease["lease_id"]},
        content=buffer.getvalue(),
        headers={**WORKER, "Content-Type": "application/octet-stream"},
    )
    assert response.status_code == 200, response.text


def _export(found: Found, out: Path, *args: str, token: str = VIEWER_TOKEN) -> Any:
    argv = ["export", "--server", found.url, "--token", token, "--search", str(found.search_id)]
    return CliRunner().invoke(app, [*argv, "--out", str(out), *args])


def _inputs(resolution: int) -> torch.Tensor:
    return torch.rand(3, 3, resolution, resolution, generator=torch.Generator().manual_seed(5))


@pytest.mark.slow  # the dynamo exporter takes ~10 s on two cores
def test_the_best_trial_exports_to_onnx_that_computes_the_uploaded_network(
    found: Found, tmp_path: Path
) -> None:
    out = tmp_path / "best.onnx"
    result = _export(found, out)  # defaults: --trial best --format onnx --exporter dynamo
    assert result.exit_code == 0, result.output
    assert f"trial {found.with_weights} of search {found.search_id}" in result.output
    assert "ONNX Runtime parity: max |logit difference|" in result.output
    assert "ONNX Runtime latency:" in result.output and "ms at batch 1" in result.output

    resolution = TINY_RESOLUTION
    x = _inputs(resolution)
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (logits,) = session.run(["logits"], {"image": x.numpy()})
    with torch.no_grad():
        expected = found.model(x).numpy()
    assert np.max(np.abs(logits - expected)) <= 1e-4

    metadata = read_onnx_metadata(out)  # the file describes itself without its .json
    assert Arch.from_dict(json.loads(metadata["arch"])) == found.model.arch
    assert json.loads(metadata["preprocessing"]) == preprocessing("digits", resolution)

    description = json.loads(out.with_name("best.onnx.json").read_text())
    assert description["source"]["trial_id"] == found.with_weights
    assert description["source"]["search_id"] == found.search_id
    assert description["top1"] == pytest.approx(0.9)
    assert description["preprocessing"] == preprocessing("digits", resolution)
    assert set(description["factors"]) == {"r", "d_i", "d_m", "w"}
    assert description["macs"] > 0 and description["params"] > 0
    assert description["onnx"]["parity_max_abs_diff"] <= 1e-4
    assert description["onnx"]["latency_ms"] > 0
    assert Arch.from_dict(description["arch"]) == found.model.arch  # rebuildable from the JSON


def test_a_named_trial_exports_to_torchscript(found: Found, tmp_path: Path) -> None:
    out = tmp_path / "net.pt"
    result = _export(found, out, "--trial", str(found.with_weights), "--format", "torchscript")
    assert result.exit_code == 0, result.output
    module, metadata = load_torchscript(out)
    x = _inputs(TINY_RESOLUTION)
    with torch.no_grad():
        torch.testing.assert_close(module(x), found.model(x), rtol=0, atol=1e-5)
    assert json.loads(metadata["preprocessing"]) == preprocessing("digits", 64)
    assert out.with_name("net.pt.json").exists()


def test_a_state_dict_export_rebuilds_with_build_model(found: Found, tmp_path: Path) -> None:
    out = tmp_path / "sub" / "net-state.pt"  # the folder is created
    result = _export(found, out, "--format", "state_dict")
    assert result.exit_code == 0, result.output
    bundle = torch.load(out, weights_only=True)
    rebuilt = build_model(Arch.from_dict(bundle["arch"])).eval()
    rebuilt.load_state_dict(bundle["state_dict"])
    x = _inputs(TINY_RESOLUTION)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), found.model(x))
    assert bundle["preprocessing"] == preprocessing("digits", 64)


def test_fast_onnx_exporter_option(found: Found, tmp_path: Path) -> None:
    result = _export(found, tmp_path / "fast.onnx", "--exporter", "torchscript")
    assert result.exit_code == 0, result.output
    assert "ONNX Runtime parity" in result.output


def _assert_one_line_error(result: Any, *fragments: str) -> None:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_a_trial_without_weights_is_one_clear_line(found: Found, tmp_path: Path) -> None:
    out = tmp_path / "none.onnx"
    result = _export(found, out, "--trial", str(found.without_weights))
    _assert_one_line_error(result, f"trial {found.without_weights} has no weights", "retention")
    assert not out.exists() and not out.with_name("none.onnx.json").exists()


def test_an_unknown_trial_is_one_clear_line(found: Found, tmp_path: Path) -> None:
    result = _export(found, tmp_path / "x.onnx", "--trial", "99999")
    _assert_one_line_error(result, "99999")


def test_a_trial_of_another_search_is_refused(found: Found, tmp_path: Path) -> None:
    argv = ["export", "--server", found.url, "--token", VIEWER_TOKEN, "--search", "424242"]
    result = CliRunner().invoke(
        app, [*argv, "--trial", str(found.with_weights), "--out", str(tmp_path / "x.onnx")]
    )
    _assert_one_line_error(result, f"belongs to search {found.search_id}")


def test_a_refused_token_is_one_clear_line(found: Found, tmp_path: Path) -> None:
    result = _export(found, tmp_path / "x.onnx", token="not-a-token-of-this-server-0000")
    _assert_one_line_error(result, "refused the token", "401")


def test_a_token_of_another_role_is_told_which_to_use(found: Found, tmp_path: Path) -> None:
    result = _export(found, tmp_path / "w.pt", "--format", "state_dict", token=WORKER_TOKEN)
    _assert_one_line_error(result, "403", "use a viewer or admin token")


def test_an_unreachable_server_is_one_line_from_the_real_command(tmp_path: Path) -> None:
    server = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    command = ["export", "--server", server, "--token", "t", "--search", "1"]
    done = subprocess.run(
        [sys.executable, "-m", "vitcube", *command, "--out", str(tmp_path / "x.onnx")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().splitlines() == [
        line for line in done.stderr.strip().splitlines() if line.startswith("error: ")
    ]
    assert f"cannot reach the vitcube server at {server}" in done.stderr


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--format", "tflite"], "--format"),
        (["--trial", "latest"], "--trial"),
        (["--exporter", "tf"], "--exporter"),
    ],
)
def test_usage_errors_exit_2(args: list[str], complaint: str, tmp_path: Path) -> None:
    argv = ["export", "--server", "http://127.0.0.1:1", "--token", "t", "--search", "1"]
    result = CliRunner().invoke(app, [*argv, "--out", str(tmp_path / "x"), *args])
    assert result.exit_code == 2, result.output
    assert complaint in result.output


def test_export_is_a_command_with_its_options_listed() -> None:
    result = CliRunner().invoke(app, ["export", "--help"])
    assert result.exit_code == 0
    assert "--format" in result.output and "--trial" in result.output
