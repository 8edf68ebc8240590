"""`vitcube demo` end to end: a real server, real workers that really train, a printed front."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from vitcube.service.demo import standing

pytestmark = pytest.mark.slow


HOSTILE = ("models", "search", "service", "workers", "migrations")


def test_demo_runs_a_search_to_completion_and_prints_the_front(
    tmp_path: Path, test_output_dir: Path
) -> None:
    # Run from a directory that holds its own top-level packages under vitcube's folder names, as
    # most ML repositories do: neither the demo nor its worker subprocesses may import them.
    for name in HOSTILE:
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(
            f"raise ImportError('the user\\'s own {name} package was imported')\n"
        )
    env = {k: v for k, v in os.environ.items() if not k.startswith("VITCUBE_")}
    command = [
        sys.executable,
        "-m",
        "vitcube",
        "demo",
        "--trials",
        "2",
        "--epochs",
        "1",
        "--exit-when-done",
        "--port",
        "0",
    ]
    result = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=540
    )
    (test_output_dir / "demo.log").write_text(result.stdout + result.stderr)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "Pareto front" in out
    # at least one front row: a trial id, its kind, four factors, pixels, MACs, params, top-1
    rows = re.findall(
        r"^│\s*\d+\s*│\s*(?:search|width_only|compound|baseline)\s*│", out, flags=re.MULTILINE
    )
    assert rows, out
    assert re.search(r"best under budget: trial \d+", out)
    assert "dashboard: http://127.0.0.1:" in out
    # everything the demo started stopped with it: the embedded database is where it said
    assert (tmp_path / "vitcube-demo.db").exists()
    # the workers really trained: their logs show per-epoch training lines
    logs = "".join(p.read_text() for p in (tmp_path / ".vitcube-demo").glob("worker-*.log"))
    assert re.search(r"epoch 1/1: loss \d", logs), logs[-2000:]
    assert "package was imported" not in out + logs


def _trial(trial_id: int, kind: str, top1: float) -> dict[str, object]:
    return {"id": trial_id, "kind": kind, "state": "completed", "top1": top1, "macs": 1000}


def test_the_summary_tells_a_win_from_noise() -> None:
    references = [_trial(1, "reference:width_only", 0.80), _trial(2, "reference:compound", 0.82)]
    # σ = 1 point: a difference must exceed 2·√2 ≈ 2.8 points to count.
    win = standing([*references, _trial(3, "search", 0.87)], noise_points=1.0)
    assert win and "trial 3 at 0.870" in win and "beats every reference beyond noise" in win
    assert "width_only 0.800 (+7.0 points)" in win and "compound 0.820 (+5.0 points)" in win
    tie = standing([*references, _trial(3, "search", 0.84)], noise_points=1.0)
    assert tie and "not beyond noise" in tie and "needs > 2.8 points" in tie
    loss = standing([*references, _trial(3, "search", 0.75)], noise_points=1.0)
    assert loss and "a reference beats it beyond noise" in loss
    unknown = standing([*references, _trial(3, "search", 0.9)], noise_points=None)
    assert unknown and "no noise level is known" in unknown
    assert standing(references, noise_points=1.0) is None  # no search trial completed yet


def test_the_demo_searches_shapes_by_default_and_digits_on_request() -> None:
    from vitcube.service.demo import DEMO_RECIPES, DemoOptions, search_body
    from vitcube.service.schemas import SearchCreate

    body = search_body(DemoOptions())
    assert body["dataset"] == {"name": "shapes"} and body["training"] == DEMO_RECIPES["shapes"]
    assert "on shapes" in body["name"] and body["seed"] == 0
    assert body["base"]["resolution"] == 48  # the stripes need shapes' native size
    digits = search_body(DemoOptions(dataset="digits", epochs=2, seed=7))
    assert digits["dataset"] == {"name": "digits"} and digits["seed"] == 7
    assert digits["base"]["resolution"] == 64
    assert digits["training"] == {**DEMO_RECIPES["digits"], "epochs": 2}
    for submitted in (body, digits):
        SearchCreate(**submitted)  # what the server's POST validates
    with pytest.raises(ValueError, match="shapes or digits"):
        search_body(DemoOptions(dataset="cifar10"))


def test_the_demo_runs_asha_on_request_and_says_what_it_spent() -> None:
    from vitcube.service.demo import DemoOptions, compute_summary, search_body
    from vitcube.service.schemas import SearchCreate

    body = search_body(DemoOptions(schedule="asha", epochs=3))
    assert body["schedule"] == {"kind": "asha", "min_epochs": 1, "eta": 3}
    SearchCreate(**body)
    assert "schedule" not in search_body(DemoOptions())  # auto: the server decides
    with pytest.raises(ValueError, match="add --epochs 3"):
        search_body(DemoOptions(schedule="asha"))  # shapes' recipe trains one epoch
    summary = compute_summary(
        {
            "epochs_trained": 14.0,
            "train_macs": 3.2e12,
            "schedule": {"kind": "asha", "min_epochs": 1, "eta": 3},
            "rungs": [
                {"epoch": 1, "reached": 10, "paused": 7, "promoted": 3},
                {"epoch": 3, "reached": 5, "paused": 0, "promoted": 0},
            ],
        }
    )
    assert summary == (
        "trained 14 epochs, 3.2e+12 MACs (ASHA, eta 3: epoch 1: 10 reached, 3 promoted · "
        "epoch 3: 5 reached, 0 promoted)"
    )
