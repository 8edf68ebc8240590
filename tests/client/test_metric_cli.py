"""`vitcube search …` names the search's metric, on SQLite and PostgreSQL: a command trainer's
minimised `val_loss` is labelled by its name (not "top-1") in `search list`, `search show`
(the front and the best) and `search trials` (table and CSV), and the best is the lowest loss."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.backends import LiveServer
from tests.factories import ADMIN_TOKEN, wait_for
from vitcube.client import Client

VITCUBE = Path(sys.executable).parent / "vitcube"
pytestmark = pytest.mark.slow

SEARCH = {
    "name": "loss search",
    "base": {"family": "mobilevit_v2", "width": 0.5, "resolution": 32, "dropped_stages": [4, 5]},
    "dataset": {"name": "digits"},
    "budget": {"c": 0.5},
    "strategy": "random",
    "max_trials": 4,
    "parallelism": 4,
    "training": {"epochs": 2, "batch_size": 64},
    "trainer": {"kind": "command", "name": "x"},
    "metric": {"name": "val_loss", "goal": "minimize"},
}


def test_the_command_line_names_a_minimised_metric(
    server: LiveServer, vc: Client, worker_client: Client, tmp_path: Path
) -> None:
    search = vc.create_search(SEARCH)
    losses: dict[int, float] = {}
    for loss in (0.9, 0.35, 1.4, 0.6):
        lease = wait_for(lambda: worker_client.lease(trainers=["command:x"]))
        curve = [{"epoch": 1, "val_loss": loss + 0.2}, {"epoch": 2, "val_loss": loss}]
        worker_client.complete(
            lease.id, {"lease_id": lease.lease_id, "value": loss, "curve": curve}
        )
        losses[lease.id] = loss
    best_id = min(losses, key=lambda i: losses[i])
    env = {
        **os.environ,
        "VITCUBE_SERVER": server.url,
        "VITCUBE_TOKEN": ADMIN_TOKEN,
        "VITCUBE_CONFIG": str(tmp_path / "config.toml"),
        "NO_COLOR": "1",
        "COLUMNS": "200",
    }

    def vitcube(*args: str) -> str:
        done = subprocess.run(
            [str(VITCUBE), *args], env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    listing = vitcube("search", "list")
    assert "best val_loss" in listing and "0.35 val_loss" in listing
    shown = vitcube("search", "show", str(search.id))
    assert f"best: trial {best_id} " in shown and "val_loss 0.35 at" in shown
    assert "top-1" not in shown
    table = vitcube("search", "trials", str(search.id))
    assert "val_loss" in table.splitlines()[1] and "top-1" not in table
    rows = list(
        csv.DictReader(io.StringIO(vitcube("search", "trials", str(search.id), "--format", "csv")))
    )
    assert "val_loss" in rows[0] and "top1" not in rows[0]
    assert {int(r["id"]): float(r["val_loss"]) for r in rows} == losses
