"""The training step's kernels (AdamW's implementation per device, what the EMA averages) and
the batch-1 latency a trial reports with the device that measured it."""

from __future__ import annotations

import torch
from torch import nn

from vitcube.contract import MetricSpec, TrialReport
from vitcube.workers.executors import TrialOutcome
from vitcube.workers.latency import measure_latency
from vitcube.workers.recipe import ModelEma, adamw_implementation


def test_adamw_is_fused_on_cuda_and_multi_tensor_elsewhere() -> None:
    assert adamw_implementation(torch.device("cuda:1")) == {"fused": True}
    options = adamw_implementation(torch.device("cpu"))
    assert options == {"foreach": True}
    model = nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, **options)
    model(torch.ones(1, 3)).sum().backward()
    before = model.weight.detach().clone()
    optimizer.step()
    assert not torch.equal(before, model.weight)


def test_ema_averages_weights_and_copies_integer_buffers() -> None:
    torch.manual_seed(0)
    live = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
    ema = ModelEma(live, decay=0.5)
    start = ema.module[0].weight.detach().clone()
    live.train()
    for _ in range(3):
        live(torch.randn(2, 3, 4, 4))  # BatchNorm: running stats move, num_batches_tracked = 3
    with torch.no_grad():
        live[0].weight.add_(1.0)
    ema.update()
    tracked = ema.module[1].num_batches_tracked
    assert tracked.dtype == torch.long and int(tracked) == 3  # copied exactly, not averaged
    decay = min(0.5, 2 / 11)  # the warm-up of the decay after one update
    expected = decay * start + (1 - decay) * live[0].weight.detach()
    assert torch.allclose(ema.module[0].weight, expected)
    mean = ema.module[1].running_mean
    assert not torch.equal(mean, live[1].running_mean) and mean.abs().sum() > 0  # averaged


def test_latency_is_reported_with_what_measured_it() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    latency = measure_latency(model, 32, torch.device("cpu"))
    assert latency.ms > 0
    assert latency.device.startswith("CPU ") and latency.device.endswith("fp32, wall clock")
    outcome = TrialOutcome(
        value=0.5,
        metric=MetricSpec(),
        top5=0.9,
        params=1,
        macs=1,
        latency_ms=latency.ms,
        latency_device=latency.device,
        images_per_s=1.0,
        curve=[],
        stopped=False,
        best_epoch=1,
    )
    # The server's schema takes the complete body the worker sends.
    report = TrialReport.model_validate({"lease_id": "a" * 32, **outcome.report()})
    assert report.latency_device == latency.device
    assert (report.value, report.top1) == (0.5, 0.5)  # top1 too, for a val_top1 search
