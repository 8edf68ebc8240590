"""The training-throughput benchmark keeps working (at a toy scale; the numbers are not judged)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_train_throughput.py"


@pytest.mark.slow
def test_benchmark_runs_every_mode_at_toy_scale(capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("bench_train_throughput", SCRIPT)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--tiny", "--device", "cpu", "--steps", "2"]) == 0
    out = capsys.readouterr().out
    rows = {tuple(line.split()[:2]): line.split()[2:] for line in out.splitlines()[2:]}
    models = ("mobilevitv2_100", "mobilevit_s")
    assert set(rows) == {
        *((mode, model) for mode in ("synthetic", "end-to-end", "latency") for model in models),
        ("loader", "cached/decoded"),
    }
    peer = importlib.util.find_spec("transformers") is not None
    for (mode, _), values in rows.items():
        assert float(values[1]) > 0  # ours (or the cached loader), images/s
        if peer or mode == "loader":
            assert float(values[2]) > 0 and values[3].endswith("×")
    if peer:  # the same architecture size on both sides
        assert all(len(set(rows[("synthetic", m)][0].split("/"))) == 1 for m in models)
