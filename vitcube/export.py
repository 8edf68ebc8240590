"""`vitcube export`: a found network from a vitcube server as a deployable file.

Reads the trial (`GET /api/searches/{id}`'s best, or `GET /api/trials/{id}`), its
architecture (`GET /api/trials/{id}/architecture`) and final EMA weights
(`GET /api/trials/{id}/weights`), rebuilds the network with `vitcube.models.build_model`, and
writes it as ONNX, TorchScript or a state-dict bundle (`vitcube.models.export`) with a JSON
description beside it (`FILE.json`: architecture, preprocessing, factors, MACs, params,
top-1, where it came from). An ONNX file is checked against ONNX Runtime (max |Δlogit| on
random inputs) and timed under it (batch 1, CPU).

`--format onnx-int8` exports the fp32 ONNX file the same way, then quantizes it statically
(`vitcube.models.quantize`: QDQ, per-channel int8 weights, uint8 activations) with ranges
calibrated on images of the search's dataset — its training split, prepared exactly as the
worker prepares evaluation images (`workers.datasets`, `workers.batches`,
`workers.augment.center_resize`) — and measures what that costs: fp32 and int8 top-1 on the
validation split under ONNX Runtime, their top-1 agreement, both files' sizes and both batch-1
CPU latencies, printed and written into FILE.json's "int8" block.

A client of the server's viewer API through `vitcube.client.Client` (the server and token
from the flags, the environment or `vitcube login`'s profile): imports typer at module level,
the client, torch, the models and (for onnx-int8) the workers' dataset loading only inside the
command (vitcube/cli.py registers it, and `vitcube --help` stays light), and never the server.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import typer

if TYPE_CHECKING:
    import numpy as np
    from torch import nn

    from vitcube.client import Client
    from vitcube.workers.datasets import ImageDataset, Split

Answer = TypeVar("Answer")

FORMATS = ("onnx", "onnx-int8", "torchscript", "state_dict")
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")  # vitcube.models.quantize's, unimported
DATASETS_WITH_ROOT = ("cifar10", "cifar100", "imagefolder")  # the ones read from --data-root
ONNX_EXPORTERS = ("dynamo", "torchscript")
WEIGHTS_FORMAT = "vitcube-weights/1"
DESCRIPTION_FORMAT = "vitcube-export/1"
PARITY_ATOL = 1e-4
RETRY_FOR_S = 5.0  # an unreachable server is said within seconds, not after minutes


class ExportFailed(Exception):
    """What went wrong, in one line a user can act on (the command exits 1 with it)."""


class ExportUsageError(ExportFailed):
    """A flag the export needs, found missing once the search is known (exit 2)."""

    def __init__(self, message: str, param_hint: str) -> None:
        super().__init__(message)
        self.param_hint = param_hint


@dataclass(frozen=True)
class Int8Options:
    """How `--format onnx-int8` calibrates and measures (`vitcube export --help`).

    eval_images: validation images top-1 is measured on (None: the whole split).
    """

    calibration: str = "minmax"
    calibration_images: int = 256
    keep_fragile_float: bool = False
    eval_images: int | None = None
    data_root: Path | None = None
    seed: int = 0


def export_command(
    server: str | None = typer.Option(
        None,
        envvar="VITCUBE_SERVER",
        help="vitcube server URL, e.g. http://127.0.0.1:8000 [default: the profile's "
        "(vitcube login)]",
        show_default=False,
    ),
    token: str | None = typer.Option(
        None,
        envvar=["VITCUBE_TOKEN", "VITCUBE_VIEWER_TOKEN"],
        help="A viewer (or admin) token of that server [default: the profile's].",
        show_default=False,
    ),
    profile: str | None = typer.Option(
        None,
        envvar="VITCUBE_PROFILE",
        help="The profile of vitcube login to use.",
        show_default=False,
    ),
    search: int = typer.Option(..., min=1, help="The search the network was found by."),
    trial: str = typer.Option(
        "best", help="A trial id of that search, or best (its best completed trial)."
    ),
    format: str = typer.Option(  # the option is --format
        "onnx",
        help="onnx, onnx-int8 (static int8 post-training quantization, measured on the "
        "search's dataset), torchscript or state_dict.",
    ),
    out: Path = typer.Option(
        ..., help="The file to write; its description goes to FILE.json beside it."
    ),
    exporter: str = typer.Option(
        "dynamo",
        help="ONNX only: dynamo (torch.export, torch's supported exporter) or torchscript "
        "(the older tracer: faster, deprecated by torch).",
    ),
    calibration: str = typer.Option(
        "minmax",
        help="onnx-int8: how activation ranges are calibrated: minmax (observed range), entropy "
        "(KL-divergence threshold) or percentile (99.999th percentile of |x|).",
    ),
    calibration_images: int = typer.Option(
        256, min=1, help="onnx-int8: training-split images the ranges are calibrated on."
    ),
    keep_fragile_float: bool = typer.Option(
        False,
        "--keep-fragile-float/--no-keep-fragile-float",
        help="onnx-int8: keep in float the ops Q-HyViT finds fragile in hybrid ViTs "
        "(normalisations, softmax, attention products); convolutions and linear layers stay int8.",
    ),
    eval_images: int | None = typer.Option(
        None,
        min=1,
        help="onnx-int8: validation images fp32 and int8 top-1 are measured on [default: all].",
        show_default=False,
    ),
    data_root: Path | None = typer.Option(
        None,
        envvar="VITCUBE_DATA_ROOT",
        help="onnx-int8: where cifar10 / cifar100 / imagefolder datasets live (as the worker's "
        "--data-root).",
        show_default=False,
    ),
) -> None:
    """Write a found network (weights and architecture) as ONNX, TorchScript or a state dict."""
    if format not in FORMATS:
        raise typer.BadParameter(f"must be one of {', '.join(FORMATS)}", param_hint="--format")
    if exporter not in ONNX_EXPORTERS:
        raise typer.BadParameter(
            f"must be one of {', '.join(ONNX_EXPORTERS)}", param_hint="--exporter"
        )
    if calibration not in CALIBRATION_METHODS:
        raise typer.BadParameter(
            f"must be one of {', '.join(CALIBRATION_METHODS)}, got {calibration!r}",
            param_hint="--calibration",
        )
    int8 = (
        Int8Options(
            calibration=calibration,
            calibration_images=calibration_images,
            keep_fragile_float=keep_fragile_float,
            eval_images=eval_images,
            data_root=data_root,
        )
        if format == "onnx-int8"
        else None
    )
    trial_id: int | None = None
    if trial != "best":
        if not trial.isdigit() or int(trial) < 1:
            raise typer.BadParameter(
                f"must be a trial id (a positive integer) or best, got {trial!r}",
                param_hint="--trial",
            )
        trial_id = int(trial)
    if out.is_dir():
        raise typer.BadParameter(f"{out} is a directory; give a file name", param_hint="--out")
    from vitcube.client.profiles import ProfileError, resolve

    try:
        connection = resolve(server, token, profile)
    except ProfileError as error:
        raise typer.BadParameter(str(error), param_hint="--profile") from None
    try:
        export_trial(
            server=connection.server,
            token=connection.token,
            search_id=search,
            trial_id=trial_id,
            file_format=format,
            out=out,
            exporter=exporter,
            int8=int8,
        )
    except ExportUsageError as error:
        raise typer.BadParameter(str(error), param_hint=error.param_hint) from None
    except ExportFailed as error:
        _fail(str(error))


def export_trial(
    *,
    server: str,
    token: str | None,
    search_id: int,
    trial_id: int | None,
    file_format: str,
    out: Path,
    exporter: str = "dynamo",
    int8: Int8Options | None = None,
) -> dict[str, Any]:
    """Download, rebuild and write one trial's network (trial_id None: the search's best);
    returns the description written to `out`.json. `int8`: the options of `onnx-int8` (their
    defaults when None; ignored by the other formats). Raises ExportFailed saying what to fix."""
    if file_format != "onnx-int8":
        int8 = None
    elif int8 is None:
        int8 = Int8Options()
    data: ImageDataset | None = None
    with _Server(server, token) as api:
        search = None
        if trial_id is None or int8 is not None:
            search = api.call(f"search {search_id}", lambda c: c.get_search(search_id))
        if int8 is not None:
            assert search is not None
            data = _load_dataset(search.dataset, int8)  # before any download: fail fast
        if trial_id is None:
            assert search is not None
            if search.best is None:
                raise ExportFailed(
                    f"search {search_id} has no completed trial yet; wait for one, or name "
                    "a trial with --trial ID"
                )
            found = search.best
        else:
            found = api.call(f"trial {trial_id}", lambda c: c.trial(trial_id))
            if found.search_id != search_id:
                raise ExportFailed(
                    f"trial {trial_id} belongs to search {found.search_id}, not {search_id}"
                )
        trial = found.model_dump(mode="json")
        tid = found.id
        architecture = api.call(
            f"trial {tid}", lambda c: c.architecture(tid).model_dump(mode="json")
        )
        with tempfile.TemporaryDirectory(prefix="vitcube-export-") as scratch:
            weights_path = Path(scratch) / "weights.pt"
            api.call(f"trial {tid}'s weights", lambda c: c.download_weights(tid, weights_path))
            print(
                f"trial {tid} of search {search_id}: top-1 {_pct(architecture.get('top1'))}, "
                f"{architecture['macs'] / 1e6:.1f} M MACs, {architecture['params'] / 1e6:.2f} M "
                f"params, weights {weights_path.stat().st_size / 1e6:.1f} MB"
            )
            model, weights = _rebuild(weights_path, architecture, tid)
    description = _description(
        server, search_id, tid, trial, architecture, weights, file_format, exporter
    )
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ExportFailed(f"cannot create {out.parent}: {error.strerror or error}") from error
    try:
        if data is not None and int8 is not None:
            _write_int8(model, architecture, description, data, int8, exporter, out)
        else:
            _write(model, architecture, description, file_format, exporter, out)
    except Exception:
        out.unlink(missing_ok=True)  # nothing half-written: no file without its check
        raise
    sidecar = out.with_name(out.name + ".json")
    try:
        sidecar.write_text(json.dumps(description, indent=2, sort_keys=True) + "\n")
    except OSError as error:
        out.unlink(missing_ok=True)  # no file without its description
        raise ExportFailed(f"cannot write {sidecar}: {error.strerror or error}") from error
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB) and {sidecar}")
    return description


def _metadata(architecture: dict[str, Any], description: dict[str, Any]) -> dict[str, str]:
    return {
        "arch": json.dumps(architecture["arch"], sort_keys=True),
        "preprocessing": json.dumps(architecture["preprocessing"], sort_keys=True),
        "vitcube": json.dumps(
            {k: description[k] for k in ("source", "top1", "macs", "params", "dataset")},
            sort_keys=True,
        ),
    }


def _write(
    model: nn.Module,
    architecture: dict[str, Any],
    description: dict[str, Any],
    file_format: str,
    exporter: str,
    out: Path,
) -> None:
    from vitcube.models import export

    resolution = int(architecture["resolution"])
    metadata = _metadata(architecture, description)
    try:
        if file_format == "state_dict":
            export.export_state_dict(model, out, metadata=metadata)
            return
        if file_format == "torchscript":
            export.export_torchscript(model, resolution, out, metadata=metadata)
            return
        diff = _export_onnx_checked(model, resolution, out, metadata, exporter)
        latency = export.onnxruntime_latency(out, resolution)
        print(f"ONNX Runtime latency: {latency.ms:.2f} ms at batch 1 ({latency.device})")
        description["onnx"] = {
            "opset": export.ONNX_OPSET,
            "exporter": exporter,
            "input": export.INPUT_NAME,
            "output": export.OUTPUT_NAME,
            "parity_max_abs_diff": diff,
            "latency_ms": latency.ms,
            "latency_device": latency.device,
        }
    except export.ExportError as error:
        trial_id = description["source"]["trial_id"]
        raise ExportFailed(f"cannot export trial {trial_id}: {error}") from error
    except OSError as error:
        raise ExportFailed(f"cannot write {out}: {error.strerror or error}") from error


def _export_onnx_checked(
    model: nn.Module,
    resolution: int,
    path: Path,
    metadata: dict[str, str],
    exporter: str,
    *,
    label: str = "",
) -> float:
    """Export fp32 ONNX to `path` and check it against PyTorch (ParityError over PARITY_ATOL);
    returns the largest logit difference."""
    from vitcube.models import export

    if exporter == "dynamo":
        print("exporting to ONNX with torch.export (the dynamo exporter: 10-30 s) …")
    export.export_onnx(model, resolution, path, metadata=metadata, exporter=exporter)  # type: ignore[arg-type]
    diff = export.check_onnx_parity(model, path, resolution, atol=PARITY_ATOL)
    print(
        f"ONNX Runtime parity{label}: max |logit difference| {diff:.2e} against PyTorch on "
        f"random batches of 1-3 (allowed {PARITY_ATOL:g})"
    )
    return diff


def _write_int8(
    model: nn.Module,
    architecture: dict[str, Any],
    description: dict[str, Any],
    data: ImageDataset,
    options: Int8Options,
    exporter: str,
    out: Path,
) -> None:
    """Export fp32 ONNX, quantize it, measure both; only the int8 file reaches `out`."""
    from vitcube.models import export, quantize
    from vitcube.workers.datasets import DatasetError

    resolution = int(architecture["resolution"])
    trial_id = description["source"]["trial_id"]
    settings = {
        "format": "QDQ",
        "weights": "int8, per output channel",
        "activations": "uint8",
        "calibration": options.calibration,
        "calibration_split": "train",
        "calibration_images": min(options.calibration_images, len(data.train)),
        "keep_fragile_float": options.keep_fragile_float,
    }
    metadata = _metadata(architecture, description)
    metadata["quantization"] = json.dumps(settings, sort_keys=True)
    crop = data.val_crop_fraction
    with tempfile.TemporaryDirectory(prefix="vitcube-int8-") as scratch:
        fp32_path, int8_path = Path(scratch) / "fp32.onnx", Path(scratch) / "int8.onnx"
        try:
            diff = _export_onnx_checked(
                model, resolution, fp32_path, metadata, exporter, label=" (fp32)"
            )
            chosen = _sample(len(data.train), options.calibration_images, options.seed)
            print(
                f"calibrating int8 ranges ({options.calibration}) on {len(chosen)} images of "
                f"{data.name}'s training split …"
            )
            calibration = _prepared_images(data.train, chosen, resolution, crop)
            report = quantize.quantize_onnx(
                fp32_path,
                int8_path,
                calibration,
                calibration=options.calibration,  # type: ignore[arg-type]
                keep_fragile_float=options.keep_fragile_float,
            )
            measured = _compare_top1(
                fp32_path,
                int8_path,
                data.val,
                _sample(len(data.val), options.eval_images, options.seed),
                resolution,
                crop,
            )
            fp32_latency = export.onnxruntime_latency(fp32_path, resolution)
            int8_latency = export.onnxruntime_latency(int8_path, resolution)
            fp32_bytes = fp32_path.stat().st_size
            shutil.move(int8_path, out)
        except export.ExportError as error:
            raise ExportFailed(f"cannot export trial {trial_id} as int8: {error}") from error
        except DatasetError as error:
            raise ExportFailed(f"cannot read the search's dataset: {error}") from error
        except OSError as error:
            raise ExportFailed(f"cannot write {out}: {error.strerror or error}") from error
    device = int8_latency.device.removesuffix(", fp32")  # what measured both
    int8_block = {
        **settings,
        "kept_float_nodes": len(report.kept_float),
        "kept_float_ops": dict(report.kept_float_ops),
        "eval_split": "val",
        "eval_images": measured["images"],
        "fp32_top1": measured["fp32_top1"],
        "int8_top1": measured["int8_top1"],
        "delta_top1_points": 100.0 * (measured["int8_top1"] - measured["fp32_top1"]),
        "top1_agreement": measured["agreement"],
        "max_abs_logit_diff": measured["max_abs_logit_diff"],
        "fp32_logit_range": measured["logit_range"],
        "int8_bytes": report.size_bytes,
        "fp32_bytes": fp32_bytes,
        "fp32_latency_ms": fp32_latency.ms,
        "int8_latency_ms": int8_latency.ms,
        "latency_device": device,
    }
    description["onnx"] = {
        "opset": export.ONNX_OPSET,
        "exporter": exporter,
        "input": export.INPUT_NAME,
        "output": export.OUTPUT_NAME,
        "parity_max_abs_diff": diff,  # of the fp32 file the int8 one was quantized from
        "latency_ms": int8_latency.ms,
        "latency_device": f"{device}, int8",
    }
    description["int8"] = int8_block
    kept = (
        "kept in float: " + report.kept_float_summary()
        if options.keep_fragile_float
        else ("every quantizable op int8")
    )
    print(
        f"int8 ({options.calibration} calibration, {kept}): top-1 "
        f"{_pct(measured['int8_top1'])} vs fp32 {_pct(measured['fp32_top1'])} "
        f"({int8_block['delta_top1_points']:+.2f} points) on {measured['images']} validation "
        f"images, top-1 agreement {_pct(measured['agreement'])}"
    )
    print(
        f"size {report.size_bytes / 1e6:.2f} MB vs fp32 {fp32_bytes / 1e6:.2f} MB; ONNX Runtime "
        f"latency {int8_latency.ms:.2f} ms vs fp32 {fp32_latency.ms:.2f} ms at batch 1 ({device})"
    )


def _load_dataset(spec: dict[str, Any], options: Int8Options) -> ImageDataset:
    """The search's dataset, as the worker loads it (ExportUsageError: --data-root missing)."""
    name = spec.get("name")
    if name in DATASETS_WITH_ROOT and options.data_root is None:
        raise ExportUsageError(
            f"the search's dataset {name!r} is read from disk: give --data-root DIR (what the "
            "workers' --data-root names) to calibrate and evaluate on it",
            "--data-root",
        )
    from vitcube.workers.datasets import DatasetError, load_dataset

    try:
        return load_dataset(spec, options.data_root)
    except DatasetError as error:
        raise ExportFailed(f"cannot read the search's dataset: {error}") from error


def _sample(total: int, wanted: int | None, seed: int) -> list[int]:
    """`wanted` of `total` indices, sorted (a seeded draw; all of them when None or more)."""
    import torch

    if wanted is None or wanted >= total:
        return list(range(total))
    chosen = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:wanted]
    return sorted(chosen.tolist())


def _image_batches(
    split: Split, indices: list[int], resolution: int, crop_fraction: float, batch_size: int = 64
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """`(images, labels)`: `B x 3 x R x R` float32 in [0, 1] and `B` int64 (numpy), the chosen
    images prepared as the worker evaluates (`BatchLoader` + `center_resize`), in order."""
    import torch

    from vitcube.workers.augment import center_resize
    from vitcube.workers.batches import Batch, BatchLoader
    from vitcube.workers.datasets import FolderSplit, TensorSplit

    subset: Split
    if isinstance(split, TensorSplit):
        chosen = torch.tensor(indices, dtype=torch.long)
        subset = TensorSplit(images=split.images[chosen], labels=split.labels[chosen])
    else:
        subset = FolderSplit(
            files=tuple(split.files[i] for i in indices),
            labels=tuple(split.labels[i] for i in indices),
            root=split.root,
        )
    # No decode cache: a sample of a split is decoded once, here, not kept on the host.
    loader = BatchLoader(
        subset,
        torch.device("cpu"),
        resolutions=[resolution],
        crop_fraction=crop_fraction,
        fit="centre",
        cache_dir=None,
    )
    plan = [
        Batch(tuple(range(start, min(start + batch_size, len(subset)))), resolution)
        for start in range(0, len(subset), batch_size)
    ]
    with torch.inference_mode():
        for images, labels in loader.iterate(plan):
            pixels = center_resize(images, resolution, crop_fraction=crop_fraction)
            yield pixels.numpy().astype("float32", copy=False), labels.numpy()


def _prepared_images(
    split: Split, indices: list[int], resolution: int, crop_fraction: float
) -> np.ndarray:
    """The chosen images as one `N x 3 x R x R` float32 array (calibration)."""
    import numpy as np

    return np.concatenate(
        [images for images, _ in _image_batches(split, indices, resolution, crop_fraction)]
    )


def _compare_top1(
    fp32_path: Path,
    int8_path: Path,
    split: Split,
    indices: list[int],
    resolution: int,
    crop_fraction: float,
) -> dict[str, Any]:
    """fp32 and int8 top-1 (fractions) under ONNX Runtime on the chosen images, their top-1
    agreement, the largest |logit difference| and the fp32 logits' range (max - min)."""
    import os

    import numpy as np

    from vitcube.models.export import onnxruntime_session

    threads = max(1, min(8, os.cpu_count() or 1))
    fp32 = onnxruntime_session(fp32_path, threads=threads)
    int8 = onnxruntime_session(int8_path, threads=threads)
    seen = fp32_correct = int8_correct = agree = 0
    worst, low, high = 0.0, float("inf"), float("-inf")
    for images, labels in _image_batches(split, indices, resolution, crop_fraction):
        (reference,) = fp32.run(None, {"image": images})  # [B, classes]
        (quantized,) = int8.run(None, {"image": images})
        fp32_top, int8_top = reference.argmax(axis=1), quantized.argmax(axis=1)
        fp32_correct += int(np.sum(fp32_top == labels))
        int8_correct += int(np.sum(int8_top == labels))
        agree += int(np.sum(fp32_top == int8_top))
        seen += len(labels)
        worst = max(worst, float(np.max(np.abs(quantized - reference))))
        low, high = min(low, float(reference.min())), max(high, float(reference.max()))
    if seen == 0:
        raise ExportFailed("the search's validation split holds no images to measure top-1 on")
    return {
        "images": seen,
        "fp32_top1": fp32_correct / seen,
        "int8_top1": int8_correct / seen,
        "agreement": agree / seen,
        "max_abs_logit_diff": worst,
        "logit_range": high - low,
    }


def _rebuild(
    weights_path: Path, architecture: dict[str, Any], trial_id: int
) -> tuple[nn.Module, dict[str, Any]]:
    import torch

    from vitcube.models import Arch, build_model

    try:
        weights = torch.load(weights_path, weights_only=True, map_location="cpu")
    except Exception as error:  # truncated, not a torch file, unsafe pickles
        raise ExportFailed(
            f"trial {trial_id}'s weights file cannot be read ({_first_line(error)})"
        ) from error
    if not isinstance(weights, dict) or weights.get("format") != WEIGHTS_FORMAT:
        found = weights.get("format") if isinstance(weights, dict) else type(weights).__name__
        raise ExportFailed(
            f"trial {trial_id}'s weights file is not {WEIGHTS_FORMAT} (found {found!r})"
        )
    try:
        arch = Arch.from_dict(architecture["arch"])
        if Arch.from_dict(weights["arch"]) != arch:
            raise ExportFailed(
                f"trial {trial_id}'s weights describe another architecture than the server's "
                "record of the trial; they cannot be exported as this trial"
            )
        model = build_model(arch)
        model.load_state_dict(weights["state_dict"])
    except (KeyError, ValueError, RuntimeError) as error:
        raise ExportFailed(
            f"trial {trial_id}'s weights do not fit its architecture: {_first_line(error)}"
        ) from error
    return model.eval(), weights


def _description(
    server: str,
    search_id: int,
    trial_id: int,
    trial: dict[str, Any],
    architecture: dict[str, Any],
    weights: dict[str, Any],
    file_format: str,
    exporter: str,
) -> dict[str, Any]:
    return {
        "format": DESCRIPTION_FORMAT,
        "file_format": file_format,
        "arch": architecture["arch"],
        "preprocessing": architecture["preprocessing"],
        "factors": trial.get("factors"),
        "effective_factors": trial.get("effective_factors"),
        "resolution": architecture["resolution"],
        "macs": architecture["macs"],
        "params": architecture["params"],
        "num_classes": architecture.get("num_classes"),
        "dataset": architecture.get("dataset"),
        "top1": architecture.get("top1", weights.get("top1")),
        "source": {
            "server": server.rstrip("/"),
            "search_id": search_id,
            "trial_id": trial_id,
        },
        "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "rebuild": "vitcube.models.build_model(vitcube.models.Arch.from_dict(arch))",
    }


class _Server:
    """The export's calls through `vitcube.client.Client`; every failure becomes one
    ExportFailed line that says what to fix."""

    def __init__(self, url: str, token: str | None) -> None:
        from vitcube.client import Client

        self._url = url.rstrip("/")
        try:
            self._client = Client(self._url, token, timeout_s=60.0, retry_for_s=RETRY_FOR_S)
        except ValueError as error:
            raise ExportFailed(f"--server {url!r} needs http:// or https://") from error

    def __enter__(self) -> _Server:
        return self

    def __exit__(self, *_: object) -> None:
        self._client.close()

    def call(self, what: str, request: Callable[[Client], Answer]) -> Answer:
        from vitcube.client import (
            ArtifactCorrupt,
            AuthError,
            NotFound,
            ServerRefused,
            ServerUnavailable,
        )

        try:
            return request(self._client)
        except AuthError as error:
            if error.status == 403:
                raise ExportFailed(
                    f"the token may not read {what} (403: {error.detail}); use a viewer or admin "
                    "token"
                ) from None
            raise ExportFailed(
                f"the server refused the token (401: {error.detail}); check --token"
            ) from None
        except NotFound as error:  # the server's message names what is missing and why
            raise ExportFailed(error.detail or f"{what} not found (404)") from None
        except ServerRefused as error:
            raise ExportFailed(
                f"the server answered {error.status} for {what}: {error.detail}"
            ) from None
        except ServerUnavailable as error:
            raise ExportFailed(
                f"cannot reach the vitcube server at {self._url}: {_first_line(error)}"
            ) from None
        except ArtifactCorrupt as error:
            raise ExportFailed(
                f"{what} arrived corrupted ({error}); run the export again"
            ) from None


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f} %"


def _first_line(error: BaseException) -> str:
    lines = [line for line in str(error).splitlines() if line.strip()]
    return (lines[0] if lines else type(error).__name__)[:300]


def _fail(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    raise typer.Exit(1)
