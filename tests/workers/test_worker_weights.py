"""End to end with the real worker CLI and a real server: a completed digits trial's weights
are stored, downloadable, rebuild the network with `build_model` and give the reported top-1;
the trial reports the ONNX Runtime latency and the epochs it trained."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import torch

from vitcube.contract import preprocessing
from vitcube.models import Arch, build_model
from vitcube.workers.batches import BatchLoader
from vitcube.workers.datasets import load_digits
from vitcube.workers.evaluate import evaluate

pytestmark = pytest.mark.slow


def test_a_completed_trials_weights_rebuild_the_network_with_its_top1(
    live_server: Any, start_worker: Any, tmp_path: Path
) -> None:
    search_id = live_server.create_search(
        training={"epochs": 3, "batch_size": 64, "max_steps_per_epoch": 6, "lr": 0.004}
    )
    worker = start_worker(live_server, "--max-trials", "1", "--checkpoint-every-s", "0")
    assert worker.wait(timeout_s=240) == 0, worker.log()
    trial = live_server.trial(search_id)
    assert trial["state"] == "completed", (trial, worker.log())
    assert trial["resumed_from_epoch"] is None and trial["epochs_trained"] == 3
    assert trial["latency_onnx_ms"] is not None and trial["latency_onnx_ms"] > 0
    assert trial["weights_bytes"] and trial["checkpoint"] is None  # completing deleted it
    assert "checkpoint at epoch 1" in worker.log()  # every epoch but the last was saved

    response = live_server.http.get(f"/api/trials/{trial['id']}/weights")
    assert response.status_code == 200, response.text
    assert f"vitcube-trial-{trial['id']}-weights.pt" in response.headers["content-disposition"]
    saved = torch.load(io.BytesIO(response.content), weights_only=True)
    assert saved["format"] == "vitcube-weights/1" and saved["trial_id"] == trial["id"]
    assert saved["preprocessing"] == preprocessing("digits", saved["arch"]["resolution"])
    model = build_model(Arch.from_dict(saved["arch"]))
    model.load_state_dict(saved["state_dict"])

    data = load_digits()
    resolution = saved["arch"]["resolution"]
    loader = BatchLoader(data.val, torch.device("cpu"), resolutions=[resolution], resident=True)
    top1, _ = evaluate(model, loader, resolution=resolution, batch_size=128)
    loader.close()
    assert top1 == pytest.approx(trial["top1"], abs=1.5 / len(data.val))
    assert saved["top1"] == trial["top1"] and top1 > 0.1  # better than chance

    architecture = live_server.http.get(f"/api/trials/{trial['id']}/architecture").json()
    assert architecture["arch"] == saved["arch"]
    assert not list((tmp_path / "checkpoints").glob("*.pt"))  # local checkpoints cleaned up
