"""What a person watching a worker sees: a rich progress bar on a terminal, log lines otherwise.

`make_progress("auto")` picks `RichProgress` when stdout is a TTY and `PlainProgress` when it
is not (CI logs, `docker logs`, Slurm output files). Both show the trial, epoch, loss,
accuracy (or the search's metric), images/s and time left, and receive a segment's events
(`workers.executors.SegmentEvents`: whatever metrics an executor reports each epoch).

Imports rich only; never torch.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class WorkerProgress:
    """Progress of one worker: trial boundaries, steps, epochs and free-form messages."""

    def on_start(self, *, epochs: int, steps_per_epoch: int, train_images: int) -> None:
        """A segment is about to train."""

    def on_step(
        self, *, epoch: int, step: int, loss: float, images_per_s: float, lr: float
    ) -> None:
        """Called every few steps with the running mean loss of the epoch."""

    def on_epoch(self, epoch: int, metrics: Mapping[str, float]) -> None:
        """An epoch ended with these metrics."""

    def start_trial(self, trial_id: int, title: str) -> None:
        """A trial was leased and is about to train."""

    def end_trial(self, summary: str) -> None:
        """The trial finished (completed, failed, stopped or abandoned)."""

    def log(self, message: str) -> None:
        """A line for the person watching."""

    def close(self) -> None:
        """Release the terminal."""


class PlainProgress(WorkerProgress):
    """Timestamped lines: one per epoch, and a step line at most every `step_every_s` seconds."""

    def __init__(self, stream: TextIO | None = None, *, step_every_s: float = 30.0) -> None:
        self.stream = stream or sys.stdout
        self.step_every_s = step_every_s
        self._trial = "-"
        self._epochs = 0
        self._started = 0.0
        self._last_step_line = 0.0

    def _line(self, text: str) -> None:
        stamp = datetime.now().strftime("%H:%M:%S")
        print(f"{stamp} {text}", file=self.stream, flush=True)

    def log(self, message: str) -> None:
        self._line(message)

    def start_trial(self, trial_id: int, title: str) -> None:
        self._trial = f"trial {trial_id}"
        self._line(f"{self._trial}: {title}")

    def on_start(self, *, epochs: int, steps_per_epoch: int, train_images: int) -> None:
        self._epochs = epochs
        self._started = time.monotonic()
        self._last_step_line = self._started
        if steps_per_epoch:
            size = f"{epochs} epochs × {steps_per_epoch} steps, {train_images} images"
        else:  # a command trainer: its script alone knows its steps and data
            size = f"{epochs} epochs"
        self._line(f"{self._trial}: {size}")

    def on_step(
        self, *, epoch: int, step: int, loss: float, images_per_s: float, lr: float
    ) -> None:
        now = time.monotonic()
        if now - self._last_step_line >= self.step_every_s:
            self._last_step_line = now
            self._line(
                f"{self._trial} epoch {epoch}/{self._epochs} step {step}: loss {loss:.4f}, "
                f"{images_per_s:.0f} img/s"
            )

    def on_epoch(self, epoch: int, metrics: Mapping[str, float]) -> None:
        elapsed = time.monotonic() - self._started
        left = elapsed / epoch * (self._epochs - epoch) if epoch else 0.0
        self._line(
            f"{self._trial} epoch {epoch}/{self._epochs}: {_metrics_text(metrics)}, "
            f"ETA {_duration(left)}"
        )

    def end_trial(self, summary: str) -> None:
        self._line(f"{self._trial}: {summary}")


class RichProgress(WorkerProgress):
    """A live bar per trial: epoch, loss, top-1, images/s, elapsed and remaining time."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console()
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("epoch {task.fields[epoch]}"),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("top-1 {task.fields[top1]}"),
            TextColumn("{task.fields[speed]} img/s"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self._progress.start()
        self._task: TaskID | None = None
        self._steps_per_epoch = 1
        self._epochs = 0
        self._trial = "-"

    def log(self, message: str) -> None:
        self._progress.console.log(message)

    def start_trial(self, trial_id: int, title: str) -> None:
        self._trial = f"trial {trial_id}"
        self.log(f"{self._trial}: {title}")

    def on_start(self, *, epochs: int, steps_per_epoch: int, train_images: int) -> None:
        self._epochs = epochs
        self._steps_per_epoch = max(1, steps_per_epoch)
        fields: dict[str, Any] = {"epoch": f"0/{epochs}", "loss": "-", "top1": "-", "speed": "-"}
        self._task = self._progress.add_task(
            self._trial, total=epochs * self._steps_per_epoch, **fields
        )

    def on_step(
        self, *, epoch: int, step: int, loss: float, images_per_s: float, lr: float
    ) -> None:
        if self._task is None:
            return
        done = (epoch - 1) * self._steps_per_epoch + min(step, self._steps_per_epoch)
        self._progress.update(
            self._task,
            completed=done,
            epoch=f"{epoch}/{self._epochs}",
            loss=f"{loss:.3f}",
            speed=f"{images_per_s:.0f}",
        )

    def on_epoch(self, epoch: int, metrics: Mapping[str, float]) -> None:
        if self._task is None:
            return
        formats = {
            "loss": ("train_loss", "{:.3f}"),
            "top1": ("val_top1", "{:.1%}"),
            "speed": ("images_per_s", "{:.0f}"),
        }
        shown: dict[str, Any] = {
            key: form.format(metrics[name])
            for key, (name, form) in formats.items()
            if name in metrics
        }
        self._progress.update(
            self._task,
            completed=epoch * self._steps_per_epoch,
            epoch=f"{epoch}/{self._epochs}",
            **shown,
        )

    def end_trial(self, summary: str) -> None:
        if self._task is not None:
            self._progress.remove_task(self._task)
            self._task = None
        self.log(f"{self._trial}: {summary}")

    def close(self) -> None:
        self._progress.stop()


def make_progress(mode: str = "auto") -> WorkerProgress:
    """`rich`, `plain`, or `auto` (rich on a terminal, plain lines otherwise)."""
    if mode not in ("auto", "rich", "plain"):
        raise ValueError(f"progress must be auto, rich or plain, got {mode!r}")
    if mode == "rich" or (mode == "auto" and sys.stdout.isatty()):
        return RichProgress()
    return PlainProgress()


# How the usual metrics are shown (the order of a line), and any other metric after them.
_SHOWN = {
    "train_loss": "loss",
    "val_top1": "top-1",
    "val_top5": "top-5",
    "images_per_s": "img/s",
}


def _number(name: str, value: float) -> str:
    if name in ("val_top1", "val_top5"):
        return f"{value:.2%}"
    if name == "images_per_s":
        return f"{value:.0f}"
    return f"{value:.4f}" if abs(value) < 1e4 else f"{value:.4g}"


def _metrics_text(metrics: Mapping[str, float]) -> str:
    """`loss 1.2345, top-1 50.00%, top-5 90.00%, 300 img/s, val_map 0.4100`: the usual
    metrics first, then any other an executor reported (the LR and epoch time are left out)."""
    parts = []
    for name, label in _SHOWN.items():
        if name in metrics:
            value = _number(name, metrics[name])
            parts.append(f"{value} {label}" if name == "images_per_s" else f"{label} {value}")
    parts += [
        f"{name} {_number(name, value)}"
        for name, value in metrics.items()
        if name not in _SHOWN and name not in ("lr", "epoch_time_s", "epoch")
    ]
    return ", ".join(parts) or "no metrics"


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
