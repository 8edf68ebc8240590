"""The training-throughput benchmark keeps working (at a toy scale; the numbers are not judged)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_train_throughput.py"


def test_benchmark_runs_at_toy_scale(capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("bench_train_throughput", SCRIPT)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    args = ["--device", "cpu", "--resolution", "32", "--batch", "2", "--steps", "1"]
    assert bench.main([*args, "--warmup", "0"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[2:]}
    assert set(rows) == {"mobilevitv2_100", "mobilevit_s"}
    assert all(float(values[0]) > 0 for values in rows.values())
