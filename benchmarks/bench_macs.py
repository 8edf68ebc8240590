"""How much faster the analytic `count_macs` is than profiling the built network with thop.

The search evaluates MACs thousands of times per proposal, so the analytic count must be at
least 1000× faster than the profiler a user would otherwise reach for. For a few
architectures this times, in one run, `count_macs(arch)` (and `scale()` + `count_macs`,
what the search pays per candidate) against `thop.profile` of the already-built network on
one image (model building excluded, which flatters thop), and prints ratios of medians.

Run: .venv/bin/python benchmarks/bench_macs.py
"""

from __future__ import annotations

import statistics
import time

import thop
import torch

from vitcube.models import ArchConfig, build_model, count_macs

CASES = [
    ("mobilevit_xxs", {"r": 1.0, "d_i": 1.0, "d_m": 1.0, "w": 1.0}),
    ("mobilevit_s", {"r": 0.875, "d_i": 1.5, "d_m": 1.2, "w": 0.75}),
    ("mobilevitv2_100", {"r": 1.25, "d_i": 2.0, "d_m": 1.4, "w": 0.6}),
    ("mobilenet_v3_large", {"r": 1.0, "d_i": 1.0, "d_m": 1.0, "w": 1.0}),
]


def _median_seconds(fn, repeats: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _time_case(name: str, factors: dict[str, float]) -> tuple[int, float, float, float]:
    """(MACs, count_macs seconds, scale + count_macs seconds, thop seconds) for one arch."""
    base = ArchConfig.preset(name)
    arch = base.scale(**factors)
    model = build_model(arch).eval()
    image = torch.zeros(1, 3, arch.resolution, arch.resolution)

    def analytic() -> None:
        for _ in range(100):
            count_macs(arch)

    def scaled_and_counted() -> None:
        for _ in range(100):  # a fresh Arch every call: nothing is served from a cache
            count_macs(base.scale(**factors))

    def profiled() -> None:
        thop.profile(model, inputs=(image,), verbose=False)

    return (
        count_macs(arch),
        _median_seconds(analytic, 7) / 100,
        _median_seconds(scaled_and_counted, 7) / 100,
        _median_seconds(profiled, 5),
    )


def main() -> None:
    torch.set_num_threads(1)
    print(f"{'architecture':<18} {'MACs':>14} {'count_macs':>11} {'+scale':>9} {'thop':>9} "
          f"{'ratio':>8} {'ratio incl. scale':>18}")  # fmt: skip
    ratios, scaled_ratios = [], []
    for name, factors in CASES:
        macs, analytic_s, scaled_s, profiled_s = _time_case(name, factors)
        ratios.append(profiled_s / analytic_s)
        scaled_ratios.append(profiled_s / scaled_s)
        print(
            f"{name:<18} {macs:>14,} {analytic_s * 1e6:>9.1f}µs {scaled_s * 1e6:>7.1f}µs "
            f"{profiled_s * 1e3:>7.1f}ms {ratios[-1]:>7.0f}× {scaled_ratios[-1]:>17.0f}×"
        )
    print(
        f"count_macs vs thop (geometric mean): {statistics.geometric_mean(ratios):.0f}× "
        f"(goal ≥ 1000×); with scale() included: {statistics.geometric_mean(scaled_ratios):.0f}×"
    )


if __name__ == "__main__":
    main()
