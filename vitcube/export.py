"""`vitcube export`: a found network from a vitcube server as a deployable file.

Reads the trial (`GET /api/searches/{id}`'s best, or `GET /api/trials/{id}`), its
architecture (`GET /api/trials/{id}/architecture`) and final EMA weights
(`GET /api/trials/{id}/weights`), rebuilds the network with `vitcube.models.build_model`, and
writes it as ONNX, TorchScript or a state-dict bundle (`vitcube.models.export`) with a JSON
description beside it (`FILE.json`: architecture, preprocessing, factors, MACs, params,
top-1, where it came from). An ONNX file is checked against ONNX Runtime (max |Δlogit| on
random inputs) and timed under it (batch 1, CPU).

A client of the server's viewer API through `vitcube.client.Client` (the server and token
from the flags, the environment or `vitcube login`'s profile): imports typer at module level,
the client, torch and the models only inside the command (vitcube/cli.py registers it, and
`vitcube --help` stays light), and never the server or the workers.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import typer

if TYPE_CHECKING:
    from torch import nn

    from vitcube.client import Client

Answer = TypeVar("Answer")

FORMATS = ("onnx", "torchscript", "state_dict")
ONNX_EXPORTERS = ("dynamo", "torchscript")
WEIGHTS_FORMAT = "vitcube-weights/1"
DESCRIPTION_FORMAT = "vitcube-export/1"
PARITY_ATOL = 1e-4
RETRY_FOR_S = 5.0  # an unreachable server is said within seconds, not after minutes


class ExportFailed(Exception):
    """What went wrong, in one line a user can act on (the command exits 1 with it)."""


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
        "onnx", help="onnx, torchscript or state_dict."
    ),
    out: Path = typer.Option(
        ..., help="The file to write; its description goes to FILE.json beside it."
    ),
    exporter: str = typer.Option(
        "dynamo",
        help="ONNX only: dynamo (torch.export, torch's supported exporter) or torchscript "
        "(the older tracer: faster, deprecated by torch).",
    ),
) -> None:
    """Write a found network (weights and architecture) as ONNX, TorchScript or a state dict."""
    if format not in FORMATS:
        raise typer.BadParameter(f"must be one of {', '.join(FORMATS)}", param_hint="--format")
    if exporter not in ONNX_EXPORTERS:
        raise typer.BadParameter(
            f"must be one of {', '.join(ONNX_EXPORTERS)}", param_hint="--exporter"
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
        )
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
) -> dict[str, Any]:
    """Download, rebuild and write one trial's network (trial_id None: the search's best);
    returns the description written to `out`.json. Raises ExportFailed saying what to fix."""
    with _Server(server, token) as api:
        if trial_id is None:
            search = api.call(f"search {search_id}", lambda c: c.get_search(search_id))
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
        _write(model, architecture, description, file_format, exporter, out)
    except Exception:
        out.unlink(missing_ok=True)  # nothing half-written: no file without its check
        raise
    sidecar = out.with_name(out.name + ".json")
    try:
        sidecar.write_text(json.dumps(description, indent=2, sort_keys=True) + "\n")
    except OSError as error:
        raise ExportFailed(f"cannot write {sidecar}: {error.strerror or error}") from error
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB) and {sidecar}")
    return description


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
    metadata = {
        "arch": json.dumps(architecture["arch"], sort_keys=True),
        "preprocessing": json.dumps(architecture["preprocessing"], sort_keys=True),
        "vitcube": json.dumps(
            {k: description[k] for k in ("source", "top1", "macs", "params", "dataset")},
            sort_keys=True,
        ),
    }
    try:
        if file_format == "state_dict":
            export.export_state_dict(model, out, metadata=metadata)
            return
        if file_format == "torchscript":
            export.export_torchscript(model, resolution, out, metadata=metadata)
            return
        if exporter == "dynamo":
            print("exporting to ONNX with torch.export (the dynamo exporter: 10-30 s) …")
        export.export_onnx(model, resolution, out, metadata=metadata, exporter=exporter)  # type: ignore[arg-type]
        diff = export.check_onnx_parity(model, out, resolution, atol=PARITY_ATOL)
        print(
            f"ONNX Runtime parity: max |logit difference| {diff:.2e} against PyTorch on random "
            f"batches of 1-3 (allowed {PARITY_ATOL:g})"
        )
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
