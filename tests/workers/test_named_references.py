"""A search that names reference networks: a real worker trains each preset (its own family, at
its own resolution) with the search's recipe, and the search marks them (kind, name)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

# EfficientViT-M0 (cascaded group attention) at 64 px: a CPU trains it in seconds on digits.
NAMED = {"name": "efficientvit_m0", "resolution": 64}


def test_a_named_reference_is_trained_and_marked(
    live_server: Any, start_worker: Any, tmp_path: Path
) -> None:
    # The two shrink references and the named one fill max_trials: the worker trains all three.
    search_id = live_server.create_search(references=[NAMED], max_trials=3, parallelism=3)
    worker = start_worker(live_server, "--max-trials", "3", name="box-1:cpu")
    assert worker.wait(300) == 0, worker.log()

    trials = live_server.trials(search_id)
    assert {t["kind"] for t in trials} == {
        "reference:width_only", "reference:compound", "reference:named"
    }  # fmt: skip
    assert all(t["state"] == "completed" for t in trials), trials
    (named,) = [t for t in trials if t["kind"] == "reference:named"]
    assert named["reference"] == "efficientvit_m0" and named["resolution"] == 64
    assert named["arch"]["base"]["family"] == "efficientvit"
    assert 0.0 <= named["top1"] <= 1.0 and named["surrogate"] is False
    assert [p["epoch"] for p in named["curve"]] == [1, 2]  # the search's recipe: 2 epochs
    search = live_server.client.get_search(search_id)
    assert search.state == "completed"
    assert search.references == [NAMED]
