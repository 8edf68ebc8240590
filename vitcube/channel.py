"""The channel between a worker and the training script it runs: files and JSON lines.

A worker that runs a command trainer (`vitcube worker --command LABEL='python train.py …'`)
writes the trial's description to a JSON file and tells the script where it is through the
environment; the script appends one JSON object per line to the channel file for every event.
The worker tails that file. It never parses the script's stdout, which goes to the worker's log
untouched. The Python SDK (`vitcube.trial`), the integrations and `vitcube trial report` all
write through `append`; a script in any other language appends the same lines itself (the
README, "Bring your own training script", documents them).

The environment of the script:
- `VITCUBE_TRIAL_FILE`: the trial file (`TrialFile`, JSON): the lease's fields, the segment, the
  metric, and the paths below;
- `VITCUBE_CHANNEL`: the channel file (also the trial file's `channel`);
- `VITCUBE_STOP_FILE`: a path that exists once the worker wants the script to stop (the server
  said stop, or the worker got SIGTERM/SIGINT); the script also gets SIGTERM.

Lines the script appends (each a whole line written with one `write`, flushed):
- `{"type": "report", "epoch": E, "metrics": {"val_top1": 0.71, "train_loss": 1.9}}`: epoch E
  (1-based, as curves are) has ended; `metrics` must carry the search's metric, finite;
- `{"type": "checkpoint", "epoch": E, "path": P}`: P, a complete file (written, then renamed
  into place), is the state after epoch E; the worker uploads it, and a later segment or an
  heir on another box gets it back as the trial file's `checkpoint`;
- `{"type": "weights", "path": P}`: P holds the final weights (a state dict), for export.

Imports the standard library only: a script imports it without torch, and the worker's side
needs nothing else.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROTOCOL = 1
TRIAL_FILE_ENV = "VITCUBE_TRIAL_FILE"
CHANNEL_ENV = "VITCUBE_CHANNEL"
STOP_FILE_ENV = "VITCUBE_STOP_FILE"
MESSAGE_TYPES = ("report", "checkpoint", "weights")
MAX_LINE_BYTES = 64 * 1024  # a longer line is refused, not buffered forever


class ChannelError(ValueError):
    """A line on the channel that is not a message the protocol defines; says what is wrong."""


@dataclass(frozen=True)
class Message:
    """One line of the channel, parsed and checked."""

    type: str
    epoch: int | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)
    path: str | None = None

    def to_json(self) -> str:
        body: dict[str, Any] = {"type": self.type}
        if self.epoch is not None:
            body["epoch"] = self.epoch
        if self.type == "report":
            body["metrics"] = dict(self.metrics)
        if self.path is not None:
            body["path"] = self.path
        return json.dumps(body, separators=(",", ":"), allow_nan=False)


def parse_line(line: str) -> Message:
    """A channel line as a Message, or ChannelError saying what is wrong with it."""
    if len(line.encode()) > MAX_LINE_BYTES:
        raise ChannelError(f"a channel line is over {MAX_LINE_BYTES} bytes")
    try:
        body = json.loads(line)
    except json.JSONDecodeError as error:
        raise ChannelError(f"a channel line is not JSON ({error}): {line[:200]!r}") from None
    if not isinstance(body, dict):
        raise ChannelError(f"a channel line must be a JSON object, got {line[:200]!r}")
    kind = body.get("type")
    if kind not in MESSAGE_TYPES:
        raise ChannelError(
            f"a channel line's type must be one of {', '.join(MESSAGE_TYPES)}, got {kind!r}"
        )
    epoch = body.get("epoch")
    if epoch is not None and (not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0):
        raise ChannelError(f"a {kind} line's epoch must be a whole number >= 0, got {epoch!r}")
    if kind == "report":
        if epoch is None or epoch < 1:
            raise ChannelError(f"a report line needs its epoch (1-based), got {epoch!r}")
        metrics = body.get("metrics")
        if not isinstance(metrics, dict) or not metrics:
            raise ChannelError('a report line needs metrics: {"name": value, …}')
        checked: dict[str, float] = {}
        for name, value in metrics.items():
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise ChannelError(f"metric {name} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise ChannelError(f"metric {name} must be finite, got {value!r}")
            checked[str(name)] = float(value)
        return Message("report", epoch=epoch, metrics=checked)
    path = body.get("path")
    if not isinstance(path, str) or not path:
        raise ChannelError(f"a {kind} line needs the path of its file")
    if kind == "checkpoint" and epoch is None:
        raise ChannelError("a checkpoint line needs the epoch it was saved after")
    return Message(kind, epoch=epoch, path=path)


def append(channel: str | os.PathLike[str], message: Message) -> None:
    """Append one message as one line (a single `write` on an O_APPEND descriptor, so lines of
    several writers never interleave) and flush it to the file."""
    data = (message.to_json() + "\n").encode()
    fd = os.open(channel, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


class ChannelReader:
    """Tails a channel file: `poll()` returns the whole lines appended since the last call
    (a partial last line waits for its newline)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._offset = 0
        self._partial = b""

    def poll(self) -> list[str]:
        try:
            with self.path.open("rb") as handle:
                handle.seek(self._offset)
                data = handle.read()
        except FileNotFoundError:
            return []
        self._offset += len(data)
        data = self._partial + data
        *lines, self._partial = data.split(b"\n")
        if len(self._partial) > MAX_LINE_BYTES:
            # A writer that never ends its line: hand it over so parse_line refuses it.
            lines.append(self._partial)
            self._partial = b""
        return [line.decode(errors="replace") for line in lines if line.strip()]


@dataclass(frozen=True)
class TrialFile:
    """What the worker writes to VITCUBE_TRIAL_FILE for one segment of one trial.

    `from_epoch`/`to_epoch`: the segment trains epochs from_epoch + 1 … to_epoch (1-based);
    `epochs`: the whole run's (the LR schedule spans them). `checkpoint`: the file saved last
    (None on a fresh start). `checkpoint_dir`: where the script may write checkpoint files
    before announcing them. `metric`: {"name", "goal"}.
    """

    trial_id: int
    search_id: int
    arch: Mapping[str, Any]
    factors: Mapping[str, float]
    effective_factors: Mapping[str, float]
    macs: int
    params: int
    seed: int
    training: Mapping[str, Any]
    dataset: Mapping[str, Any]
    from_epoch: int
    to_epoch: int
    epochs: int
    metric: Mapping[str, str]
    channel: str
    stop_file: str
    checkpoint_dir: str
    checkpoint: str | None = None
    protocol: int = PROTOCOL

    def write(self, path: str | os.PathLike[str]) -> None:
        target = Path(path)
        scratch = target.with_suffix(".tmp")
        scratch.write_text(json.dumps(self.__dict__, indent=1, default=_jsonable))
        scratch.replace(target)

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> TrialFile:
        body = json.loads(Path(path).read_text())
        if body.get("protocol") != PROTOCOL:
            raise ChannelError(
                f"{path}: protocol {body.get('protocol')!r}, this vitcube speaks {PROTOCOL}; "
                "install the same vitcube version on the worker and in the script's environment"
            )
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in body.items() if k in known})


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"not JSON: {type(value).__name__}")
