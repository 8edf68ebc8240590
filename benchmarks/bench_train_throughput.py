"""Training throughput (images/s) of our MobileViTs against transformers', side by side in one run.

Models: MobileViT v2-1.0 (`mobilevitv2_100`) and MobileViT-S (`mobilevit_s`), 1000 classes: ours
from models/ and Hugging Face transformers' `MobileViTV2ForImageClassification`
(width_multiplier 1.0) and `MobileViTForImageClassification` (its default config is MobileViT-S),
the same size (parameter counts are printed), batch and precision (bf16 autocast + channels_last
on CUDA, fp32 on the CPU), timed one after the other on the same device. Three modes:

- `synthetic`: the training step alone (forward, label-smoothed cross-entropy, backward,
  gradient clipping, AdamW) on one random batch already on the device;
- `loader`: the data path alone on an image folder (a generated one of JPEGs, or
  `--data-root`): uint8 batches on the device, read from the host's decode cache (decoded once;
  its one-off build time is printed) against decoding every file with Pillow every epoch (what
  the worker did before the cache);
- `end-to-end`: the worker's own training loop (`workers.training.train`: decode cache → batches
  on the device → random resized crop → step → EMA update) over the same image folder, with
  each side's network, so a first GPU run shows whether the loader or the step is the limit;
- `latency`: the worker's batch-1 latency measurement (`workers.latency.measure_latency`: on
  CUDA a bf16 copy timed with CUDA events from a CUDA graph where capture works; wall clock on
  the CPU), printed as batch-1 images/s (1000 / ms) with how it was measured.

Each row prints images/s for both sides and their ratio (ours / theirs; for `loader`, cached /
decoded every epoch). transformers is optional (`pip install transformers`; it needs no
torchvision); without it the peer columns say n/a.

  python benchmarks/bench_train_throughput.py --device cuda             # 256 px, batch 128
  python benchmarks/bench_train_throughput.py --tiny --device cpu       # CI-sized, seconds
  python benchmarks/bench_train_throughput.py --device cuda --data-root /data/imagenet100
  python benchmarks/bench_train_throughput.py --mode synthetic --compile

Imports models, workers and torch (and transformers if present); never service/ or search/.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vitcube.models import ArchConfig, build_model
from vitcube.workers.batches import BatchLoader, fixed_plan, host_loader_workers
from vitcube.workers.datasets import FolderSplit, ImageDataset, load_dataset
from vitcube.workers.decode_cache import CACHE_DIR_ENV, decode_cache_dir
from vitcube.workers.latency import measure_latency
from vitcube.workers.recipe import TrainingConfig, adamw_implementation
from vitcube.workers.training import train

MODELS = ("mobilevitv2_100", "mobilevit_s")
MODES = ("synthetic", "loader", "end-to-end", "latency")


class _Logits(nn.Module):
    """A transformers image classifier as a plain `images -> logits` module."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=images).logits


def peer_factory(resolution: int) -> tuple[Callable[[str, int], nn.Module] | None, str]:
    """transformers' model of the same name and size, or None and why not."""
    try:
        import transformers
        from transformers import (
            MobileViTConfig,
            MobileViTForImageClassification,
            MobileViTV2Config,
            MobileViTV2ForImageClassification,
        )
    except Exception as error:  # ImportError, or a broken install
        return None, f"transformers not importable ({type(error).__name__}: {error})"

    def make(name: str, num_classes: int) -> nn.Module:
        if name == "mobilevitv2_100":
            v2 = MobileViTV2Config(width_multiplier=1.0, image_size=resolution)
            v2.num_labels = num_classes
            return _Logits(MobileViTV2ForImageClassification(v2))
        v1 = MobileViTConfig(image_size=resolution)  # its defaults are MobileViT-S (144, 192, 240)
        v1.num_labels = num_classes
        return _Logits(MobileViTForImageClassification(v1))

    return make, f"transformers {transformers.__version__}"


def images_per_s(
    model: nn.Module,
    *,
    device: torch.device,
    resolution: int,
    batch: int,
    steps: int,
    warmup: int,
    compile_model: bool,
) -> float:
    """Synthetic mode: median over timed steps of batch / step time, after `warmup` steps."""
    cuda = device.type == "cuda"
    torch.backends.cudnn.benchmark = cuda  # as the worker's trainer does, for both sides
    model = model.to(device).train()
    if cuda:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    step_model = torch.compile(model) if compile_model else model
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=1e-3,
        betas=(0.9, 0.999),
        weight_decay=0.05,
        **adamw_implementation(device),
    )
    generator = torch.Generator(device=device).manual_seed(0)
    inputs = torch.rand(batch, 3, resolution, resolution, device=device, generator=generator)
    if cuda:
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 1000, (batch,), device=device, generator=generator)
    timings: list[float] = []
    for i in range(warmup + steps):
        if cuda:
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            logits = step_model(inputs)
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=0.1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optimizer.step()
        if cuda:
            torch.cuda.synchronize(device)
        if i >= warmup:
            timings.append(time.perf_counter() - start)
    return batch / statistics.median(timings)


def write_imagefolder(root: Path, *, images: int, size: tuple[int, int]) -> Path:
    """`images` random JPEGs (`size` = width, height) in root/train/<10 classes>, 16 in val."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", images), ("val", 16)):
        for i in range(count):
            folder = root / split / f"class{i % 10}"
            folder.mkdir(parents=True, exist_ok=True)
            # Smooth noise: JPEG-compressible like a photograph, not white noise.
            small = rng.integers(0, 256, size=(size[1] // 8 + 1, size[0] // 8 + 1, 3))
            pixels = np.kron(small, np.ones((8, 8, 1)))[: size[1], : size[0]].astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i:06d}.jpg", quality=90)
    return root


def loader_images_per_s(
    split: FolderSplit,
    *,
    device: torch.device,
    resolution: int,
    batch: int,
    steps: int,
    cache_dir: Path | None,
) -> tuple[float, float]:
    """Loader mode: (images/s of the second epoch, seconds to build the loader incl. any cache).

    The first epoch starts the persistent DataLoader processes; the second is timed.
    """
    start = time.perf_counter()
    loader = BatchLoader(
        split,
        device,
        resolutions=[resolution],
        fit="whole",  # as a trial's training loader: the same cache files
        num_workers=host_loader_workers(device),
        cache_dir=cache_dir,
    )
    build_s = time.perf_counter() - start
    generator = torch.Generator().manual_seed(0)
    seconds = 0.0
    images = 0
    for _ in range(2):
        plan = fixed_plan(len(split), batch, resolution, generator=generator, drop_last=True)
        plan = plan[:steps]
        start = time.perf_counter()
        images = 0
        for pixels, _labels in loader.iterate(plan):
            images += pixels.shape[0]
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
    loader.close()
    return images / max(seconds, 1e-9), build_s


def end_to_end_recipe(
    arch: ArchConfig, data: ImageDataset, *, batch: int, steps: int, compile_model: bool
) -> TrainingConfig:
    """Two epochs of `steps` steps of the recipe a trial of `arch`'s family gets (resolved here,
    so both sides train with the same augmentations and optimiser)."""
    config = TrainingConfig.from_dict(
        {
            "epochs": 2,
            "batch_size": batch,
            "max_steps_per_epoch": steps,
            "eval_batch_size": batch,
            "compile": compile_model,
        }
    )
    return config.resolved(family=arch.family, size=arch.size, dataset=data.name)


def end_to_end_images_per_s(
    model: nn.Module,
    data: ImageDataset,
    *,
    config: TrainingConfig,
    device: torch.device,
    resolution: int,
) -> float:
    """End-to-end mode: the worker's `train()` for two epochs; the second is timed."""
    result = train(
        model.to(device), data, resolution=resolution, config=config, seed=0, device=device
    )
    steps = config.max_steps_per_epoch or 1
    return steps * config.batch_size / max(float(result.curve[-1]["epoch_time_s"]), 1e-9)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="cuda:0, cpu or auto")
    parser.add_argument("--mode", choices=(*MODES, "all"), default="all")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per model and mode")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps (synthetic mode)")
    parser.add_argument("--compile", action="store_true", help="torch.compile both sides")
    parser.add_argument(
        "--data-root", type=Path, default=None, help="an imagefolder (train/, val/) to load"
    )
    parser.add_argument(
        "--images", type=int, default=0, help="generated training images (default: enough)"
    )
    parser.add_argument("--tiny", action="store_true", help="64 px, batch 8, 3 steps (CI)")
    args = parser.parse_args(argv)
    if args.tiny:
        args.resolution, args.batch, args.steps, args.warmup = 64, 8, 3, 1
    device = torch.device(
        ("cuda:0" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    if device.type == "cuda":
        torch.cuda.set_device(device)
    modes = MODES if args.mode == "all" else (args.mode,)
    make_peer, peer_note = peer_factory(args.resolution)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    amp = "bf16 autocast + channels_last" if device.type == "cuda" else "fp32"
    print(
        f"training throughput on {device} ({name}), torch {torch.__version__}, {amp}, "
        f"{args.resolution} px, batch {args.batch}, {args.steps} timed steps, "
        f"{host_loader_workers(device)} loader workers; {peer_note}"
    )
    print(
        f"{'mode':<11}{'model':<17}{'params':>14}{'ours img/s':>12}{'peer img/s':>12}{'ratio':>8}"
    )

    with (
        tempfile.TemporaryDirectory(prefix="vitcube-bench-") as scratch,
        _scratch_cache(Path(scratch) / "decode-cache", use=args.data_root is None),
    ):
        data = None
        if "loader" in modes or "end-to-end" in modes:
            root = args.data_root or write_imagefolder(
                Path(scratch) / "images",
                images=args.images or max(64, 2 * args.batch * args.steps),
                size=(500, 375) if not args.tiny else (96, 72),
            )
            data = load_dataset({"name": "imagefolder"}, root)
        # The host's cache for a real folder (later runs and trials reuse it), else the scratch one.
        cache_dir = decode_cache_dir(args.data_root)
        for mode in modes:
            if mode == "loader":
                assert data is not None and isinstance(data.train, FolderSplit)
                assert cache_dir is not None, f"the decode cache is off ({CACHE_DIR_ENV})"
                steps = min(args.steps, len(data.train) // args.batch)
                options = {"device": device, "resolution": args.resolution, "batch": args.batch}
                cached, build_s = loader_images_per_s(
                    data.train, **options, steps=steps, cache_dir=cache_dir
                )
                decoded, _ = loader_images_per_s(data.train, **options, steps=steps, cache_dir=None)
                print(
                    f"{mode:<11}{'cached/decoded':<17}{len(data.train):>14}{cached:>12.1f}"
                    f"{decoded:>12.1f}{cached / decoded:>7.2f}×   "
                    f"(decode cache built once in {build_s:.1f} s)"
                )
                continue
            for model_name in MODELS:
                run_row(mode, model_name, make_peer, args=args, device=device, data=data)
    return 0


@contextlib.contextmanager
def _scratch_cache(directory: Path, *, use: bool) -> Iterator[None]:
    """Decode a generated folder into `directory` (deleted with it), not the host's cache."""
    if not use:
        yield
        return
    previous = os.environ.get(CACHE_DIR_ENV)
    os.environ[CACHE_DIR_ENV] = str(directory)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(CACHE_DIR_ENV, None)
        else:
            os.environ[CACHE_DIR_ENV] = previous


def run_row(
    mode: str,
    model_name: str,
    make_peer: Callable[[str, int], nn.Module] | None,
    *,
    args: argparse.Namespace,
    device: torch.device,
    data: ImageDataset | None,
) -> None:
    latency_note = ""

    def measure(model: nn.Module) -> float:
        nonlocal latency_note
        if mode == "latency":
            cuda = device.type == "cuda"
            latency = measure_latency(
                model.to(device), args.resolution, device, amp=cuda, channels_last=cuda
            )
            latency_note = f"   ({latency.device})"
            return 1000.0 / latency.ms  # batch-1 images/s
        if mode == "synthetic":
            return images_per_s(
                model,
                device=device,
                resolution=args.resolution,
                batch=args.batch,
                steps=args.steps,
                warmup=args.warmup,
                compile_model=args.compile,
            )
        assert data is not None and recipe is not None
        return end_to_end_images_per_s(
            model, data, config=recipe, device=device, resolution=args.resolution
        )

    # End to end, both networks have the dataset's classes (the soft targets of Mixup/CutMix
    # have one column per class) and train with the recipe of our network's family.
    num_classes = data.num_classes if mode == "end-to-end" and data is not None else 1000
    arch = ArchConfig.preset(model_name, num_classes=num_classes, resolution=args.resolution)
    recipe = None
    dropout = 0.0
    if mode == "end-to-end" and data is not None:
        steps = min(args.steps, len(data.train) // args.batch)
        recipe = end_to_end_recipe(
            arch, data, batch=args.batch, steps=steps, compile_model=args.compile
        )
        dropout = recipe.transformer_dropout or 0.0
    torch.manual_seed(0)
    ours = build_model(arch, transformer_dropout=dropout)
    params = f"{sum(p.numel() for p in ours.parameters()) / 1e6:.2f}M"
    ours_ips = measure(ours)
    del ours
    if make_peer is None:
        print(f"{mode:<11}{model_name:<17}{params:>14}{ours_ips:>12.1f}{'n/a':>12}{'n/a':>8}")
        return
    torch.manual_seed(0)
    peer = make_peer(model_name, num_classes)
    params += f"/{sum(p.numel() for p in peer.parameters()) / 1e6:.2f}M"
    peer_ips = measure(peer)
    print(
        f"{mode:<11}{model_name:<17}{params:>14}{ours_ips:>12.1f}{peer_ips:>12.1f}"
        f"{ours_ips / peer_ips:>7.2f}×{latency_note}"
    )


if __name__ == "__main__":
    raise SystemExit(main())
