"""`vitcube trial …`: the SDK (`vitcube.trial`) for scripts that are not Python.

A shell script that a worker runs (`vitcube worker --command LABEL='bash train.sh'`) reports
and saves through these commands, which write the same channel lines as the SDK:

    vitcube trial show --field to_epoch          # one field of the trial file, as JSON
    vitcube trial report --epoch 3 --metric val_map=0.41 --metric train_loss=1.2
    vitcube trial checkpoint --epoch 3 state.bin # copied into place, then announced
    vitcube trial should-stop && exit 0          # exit 0: stop now; 1: go on
    vitcube trial weights final.pt

Every refusal (outside a worker, a missing or non-finite metric, an epoch outside the segment)
exits 2 with one sentence on stderr. `should-stop` sees the stop file only: a shell script that
wants SIGTERM too traps it (`trap 'stop=1' TERM`). Imports no torch.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from vitcube.channel import TRIAL_FILE_ENV, TrialFile

trial_app = typer.Typer(
    name="trial",
    help="Report to the worker from a training script it runs (the SDK for non-Python scripts).",
    no_args_is_help=True,
    add_completion=False,
)


def _trial() -> Any:
    from vitcube import trial

    try:
        return trial.current()
    except trial.TrialError as error:
        _refuse(str(error))


def _refuse(message: str) -> NoReturn:
    typer.echo(message, err=True)
    raise typer.Exit(2)


def _parse_metric(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        _refuse(f"--metric takes NAME=VALUE (e.g. val_map=0.41), got {text!r}")
    try:
        number = float(value)
    except ValueError:
        _refuse(f"metric {name.strip()} must be a number, got {value!r}")
    return name.strip(), number


@trial_app.command("report")
def report(
    epoch: Annotated[int, typer.Option(help="The epoch that ended (1-based).")],
    metric: Annotated[
        list[str],
        typer.Option(help="NAME=VALUE; repeat it. The search's metric is required."),
    ],
) -> None:
    """Report an epoch's metrics (the search's metric required, every value finite)."""
    t = _trial()
    metrics = dict(_parse_metric(item) for item in metric)
    try:
        t.report(epoch, **metrics)
    except ValueError as error:
        _refuse(str(error))


@trial_app.command("checkpoint")
def checkpoint(
    file: Annotated[Path, typer.Argument(help="A complete checkpoint file (it is copied).")],
    epoch: Annotated[int, typer.Option(help="The epoch this state is after.")],
) -> None:
    """Copy FILE into the trial's checkpoint directory and announce it to the worker."""
    t = _trial()
    if not file.is_file():
        _refuse(f"{file} is not a file")
    try:
        t.save_checkpoint_file(file, epoch=epoch)
    except ValueError as error:
        _refuse(str(error))


@trial_app.command("weights")
def weights(
    file: Annotated[Path, typer.Argument(help="The final weights (a state dict file).")],
) -> None:
    """Copy FILE (the final weights) next to the checkpoints and announce it to the worker."""
    t = _trial()
    if not file.is_file():
        _refuse(f"{file} is not a file")
    t.save_weights_file(file)


@trial_app.command("show")
def show(
    field: Annotated[
        str | None, typer.Option(help="Print only this field of the trial file, as JSON.")
    ] = None,
) -> None:
    """Print the trial file (or one field of it) as JSON, for jq and shell scripts."""
    _trial()  # the same refusal outside a worker
    body = asdict(TrialFile.read(os.environ[TRIAL_FILE_ENV]))
    if field is None:
        typer.echo(json.dumps(body, indent=1))
        return
    if field not in body:
        _refuse(f"the trial file has no field {field!r}; it has {', '.join(sorted(body))}")
    typer.echo(json.dumps(body[field]))


@trial_app.command("should-stop")
def should_stop() -> None:
    """Exit 0 when the script should stop (save and exit), 1 when it should go on."""
    t = _trial()
    raise typer.Exit(0 if t.should_stop else 1)
