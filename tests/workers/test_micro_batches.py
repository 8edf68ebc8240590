"""A CUDA out-of-memory restarts the trial with the batch split into micro-batches.

Gradient accumulation keeps the recipe: the same effective batch, LR and steps, each piece's
loss scaled by its share of the batch. The nets here have no BatchNorm (GroupNorm normalises
each image on its own), so splitting a batch changes nothing but float rounding and 1 vs 2
micro-batches must train the same weights; with BatchNorm each piece would be normalised with
its own statistics, a real (small) difference this comparison could not separate from a bug.
The OOM is simulated (no GPU here): a net that raises torch.OutOfMemoryError, as PyTorch does
on CUDA, whenever one forward pass sees more images than its "card" holds.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.factories import trial_lease
from vitcube.workers.datasets import ImageDataset, load_digits
from vitcube.workers.faults import describe_failure
from vitcube.workers.recipe import TrainingConfig
from vitcube.workers.runner import train_splitting_on_oom
from vitcube.workers.training import TrainResult, accumulate_gradients, train

RESOLUTION = 16
CPU = torch.device("cpu")


class SmallNet(nn.Module):
    """A conv net without BatchNorm: `B x 3 x 16 x 16` images -> `B x 10` logits."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1),  # [B, 3, 16, 16] -> [B, 8, 8, 8]
            nn.GroupNorm(2, 8),
            nn.GELU(),
            nn.AdaptiveAvgPool2d(1),  # -> [B, 8, 1, 1]
            nn.Flatten(),
        )
        self.head = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class CardHolds(nn.Module):
    """SmallNet on a card that holds `max_images` images per forward pass: more raise CUDA's
    out-of-memory error. `ooms` counts them (shared by the EMA's deep copy)."""

    def __init__(self, max_images: int, ooms: list[int]) -> None:
        super().__init__()
        self.net = SmallNet()
        self.max_images = max_images
        self.ooms = ooms

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > self.max_images:
            self.ooms.append(x.shape[0])
            raise torch.OutOfMemoryError(
                f"CUDA out of memory. Tried to allocate {x.shape[0] * 12} MiB (simulated)"
            )
        return self.net(x)

    def __deepcopy__(self, memo: dict[int, object]) -> CardHolds:
        copy = CardHolds(self.max_images, self.ooms)  # the counter is shared, not copied
        copy.load_state_dict(self.state_dict())
        return copy


@pytest.fixture(scope="module")
def digits() -> ImageDataset:
    return load_digits()


def config(**overrides: object) -> TrainingConfig:
    # The optimiser's numbers spelled out: this is about splitting batches, not the defaults.
    block = {
        "epochs": 2,
        "batch_size": 64,
        "max_steps_per_epoch": 4,
        "eval_batch_size": 32,
        "lr": 0.002,
        "warmup_init_lr": 0.0002,
        "min_lr": 0.0002,
        "weight_decay": 0.05,
    }
    return TrainingConfig.from_dict({**block, **overrides})


def train_small(data: ImageDataset, micro_batches: int, seed: int = 0) -> TrainResult:
    torch.manual_seed(seed)
    return train(
        SmallNet(),
        data,
        resolution=RESOLUTION,
        config=config(),
        seed=seed,
        device=CPU,
        micro_batches=micro_batches,
    )


def weights(result: TrainResult) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in result.model.state_dict().items()}


def test_split_gradients_are_the_whole_batchs_mean_loss_gradient() -> None:
    torch.manual_seed(0)
    net = SmallNet()
    images, labels = torch.rand(10, 3, RESOLUTION, RESOLUTION), torch.randint(0, 10, (10,))
    grads = {}
    losses = {}
    for pieces in (1, 3):  # 3 pieces of 4, 4 and 2 images: the shares must weigh them
        net.zero_grad()
        losses[pieces] = accumulate_gradients(
            net, images, labels, nn.functional.cross_entropy, micro_batches=pieces
        )
        grads[pieces] = [p.grad.clone() for p in net.parameters() if p.grad is not None]
    assert torch.allclose(losses[1], losses[3], atol=1e-6)
    assert torch.allclose(losses[1], nn.functional.cross_entropy(net(images), labels))
    for whole, split in zip(grads[1], grads[3], strict=True):
        assert torch.allclose(whole, split, atol=1e-6)


def test_one_or_two_micro_batches_train_the_same_network(digits: ImageDataset) -> None:
    whole = train_small(digits, micro_batches=1)
    split = train_small(digits, micro_batches=2)
    torch.manual_seed(0)
    initial = SmallNet()
    for name, value in weights(whole).items():
        # AdamW normalises each step, so float-rounding differences stay ~1e-6 after 8 steps.
        assert torch.allclose(value, weights(split)[name], atol=1e-5, rtol=1e-4), name
    moved = max((weights(whole)[k] - v).abs().max().item() for k, v in initial.state_dict().items())
    assert moved > 1e-3  # it trained: equal weights are not just the untouched initial ones
    assert [p["train_loss"] for p in whole.curve] == pytest.approx(
        [p["train_loss"] for p in split.curve], rel=1e-5
    )
    assert (whole.top1, whole.top5) == (split.top1, split.top5)


def test_an_oom_restarts_the_trial_with_two_micro_batches(digits: ImageDataset) -> None:
    ooms: list[int] = []
    logged: list[str] = []
    result = train_splitting_on_oom(
        lambda: CardHolds(32, ooms),  # batch 64 does not fit, 32 does
        digits,
        resolution=RESOLUTION,
        config=config(),
        seed=0,
        device=CPU,
        log=logged.append,
    )
    assert ooms == [64]  # the first attempt's first step, once
    assert result.micro_batches == 2 and not result.stopped
    assert [p["epoch"] for p in result.curve] == [1, 2]
    assert any("restarting the trial with 2 micro-batches of ~32" in line for line in logged)
    # a restart from scratch with the same seed: the run is the recipe's, only split
    reference = train_small(digits, micro_batches=2)
    for name, value in weights(reference).items():
        assert torch.allclose(value, weights(result)[f"net.{name}"], atol=1e-6), name


def test_an_oom_even_at_the_finest_split_is_final(digits: ImageDataset) -> None:
    ooms: list[int] = []
    with pytest.raises(torch.OutOfMemoryError) as raised:
        train_splitting_on_oom(
            lambda: CardHolds(4, ooms),  # not even 64 / 8 images fit
            digits,
            resolution=RESOLUTION,
            config=config(),
            seed=0,
            device=CPU,
            max_micro_batches=8,
        )
    assert ooms == [64, 32, 16, 8]  # 1, 2, 4 and 8 micro-batches tried
    lease = trial_lease(training={"batch_size": 64})
    message, retry, fault = describe_failure(raised.value, lease, None)
    assert not retry and fault is None and "even with the batch split" in message
