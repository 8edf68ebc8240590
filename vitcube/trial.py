"""The training-script SDK: what a script that a vitcube worker runs asks of its trial.

A worker started with `vitcube worker --command LABEL='python train.py …'` runs the script for
one segment of one trial (epochs `from_epoch + 1 … to_epoch`, 1-based) and describes the trial
in the file `VITCUBE_TRIAL_FILE` names. The script reads it and talks back through the channel
of `vitcube.channel` (its docstring is the protocol):

    from vitcube import trial
    t = trial.current()                   # a clear TrialError outside a worker
    model = t.build_model(num_classes=100)
    state = t.load_checkpoint()           # None on a fresh start
    for epoch in range(t.from_epoch + 1, t.to_epoch + 1):
        ...                               # train, evaluate
        t.report(epoch, val_top1=0.71, train_loss=1.9)
        t.save_checkpoint({"model": model.state_dict(), "epoch": epoch})
        if t.should_stop:
            break                         # saved: exit 0, the worker does the rest
    t.save_weights(model)

Signals: `current()` installs a SIGTERM handler (in the main thread, and only while SIGTERM has
its default action) that sets a flag and does nothing else: the process does not die, so the
script sees `should_stop`, saves a checkpoint and exits by itself. A script that never looks
at `should_stop` keeps running until the worker's grace period ends and it is killed.

Under torchrun (or any launcher that sets `RANK`, else `LOCAL_RANK`) only rank 0 reports and
saves: on other ranks `report`, `save_checkpoint` and `save_weights` do nothing, while
`should_stop` and `load_checkpoint` work on every rank.

Imports the standard library, `vitcube.channel` and `vitcube.contract` only, never torch: torch
and `vitcube.models` load lazily inside `build_model`, `load_checkpoint`, `save_checkpoint` and
`save_weights` (a test holds this, since import-linter counts lazy imports too).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import numbers
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType, MappingProxyType
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from vitcube.channel import TRIAL_FILE_ENV, ChannelError, Message, TrialFile, append
from vitcube.contract import CurvePoint, MetricSpec

if TYPE_CHECKING:
    from vitcube.models.network import Network

__all__ = ["Trial", "TrialError", "current"]

OUTSIDE_A_WORKER = (
    "vitcube.trial.current() works only inside a trial a vitcube worker runs ({reason}); "
    "start the script with vitcube worker --command LABEL='python train.py …'"
)


class TrialError(RuntimeError):
    """The script is not running inside a worker's trial, or its trial file is unreadable."""


class Trial:
    """This process's leased trial: the trial file's fields, and the calls that report to the
    worker. Get it with `current()`.

    Fields: `trial_id`, `search_id`; `arch` the network (`vitcube.models.Arch.to_dict()`),
    `factors` / `effective_factors` (r, d_i, d_m, w), `macs` / `params` of `arch` as the search
    counted them; `seed`; `training` and `dataset` the search's blocks, untouched (the script
    owns its data and recipe); `from_epoch`, `to_epoch` (train epochs from_epoch + 1 …
    to_epoch) and `epochs` (the whole run's: the LR schedule spans them); `metric` what the
    search optimises (`.name`, `.goal`); `checkpoint_path` the file to resume from, or None.
    """

    def __init__(self, spec: TrialFile) -> None:
        self._spec = spec
        self.trial_id = spec.trial_id
        self.search_id = spec.search_id
        self.arch: Mapping[str, Any] = MappingProxyType(dict(spec.arch))
        self.factors: Mapping[str, float] = MappingProxyType(dict(spec.factors))
        self.effective_factors: Mapping[str, float] = MappingProxyType(dict(spec.effective_factors))
        self.macs = spec.macs
        self.params = spec.params
        self.seed = spec.seed
        self.training: Mapping[str, Any] = MappingProxyType(dict(spec.training))
        self.dataset: Mapping[str, Any] = MappingProxyType(dict(spec.dataset))
        self.from_epoch = spec.from_epoch
        self.to_epoch = spec.to_epoch
        self.epochs = spec.epochs
        self.metric = MetricSpec.model_validate(dict(spec.metric))
        self.checkpoint_path: str | None = spec.checkpoint
        self.checkpoint_dir = Path(spec.checkpoint_dir)
        self.channel = Path(spec.channel)
        self.stop_file = Path(spec.stop_file)
        self.last_reported_epoch: int | None = None
        self._names = itertools.count(1)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Trial:
        """The trial a trial file describes (`current()` reads VITCUBE_TRIAL_FILE's)."""
        return cls(TrialFile.read(path))

    def __repr__(self) -> str:
        return (
            f"Trial(trial_id={self.trial_id}, search_id={self.search_id}, "
            f"epochs {self.from_epoch + 1}…{self.to_epoch} of {self.epochs}, "
            f"metric={self.metric.name} ({self.metric.goal}))"
        )

    # -- where this process stands --------------------------------------------------------
    @property
    def rank(self) -> int:
        """This process's rank under torchrun (`RANK`, else `LOCAL_RANK`); 0 otherwise."""
        return _rank()

    @property
    def is_main_rank(self) -> bool:
        """Whether this process reports and saves (rank 0, or not distributed at all)."""
        return self.rank == 0

    @property
    def should_stop(self) -> bool:
        """True once the worker wants the script to stop: its stop file exists (the server said
        stop, or the worker was interrupted) or this process got SIGTERM. Save and exit 0."""
        return _sigterm_received.is_set() or self.stop_file.exists()

    # -- torch helpers (lazy) -----------------------------------------------------------
    def build_model(self, num_classes: int | None = None, **options: Any) -> Network:
        """The trial's network, built by `vitcube.models.build_model` as the builtin trainer
        builds it. `num_classes` replaces the arch's classifier width (the script owns its
        data); the trial's `macs` and `params` were counted with the arch's own. `options` go
        to `build_model` (`transformer_dropout=0.1`)."""
        from vitcube.models import Arch, build_model

        arch = Arch.from_dict(dict(self.arch))
        if num_classes is not None:
            arch = dataclasses.replace(arch, num_classes=int(num_classes))
        return build_model(arch, **options)

    def load_checkpoint(self) -> Any:
        """None on a fresh start, else the object `save_checkpoint` saved last in this trial
        (on this box or another). The file is the trial's own: the worker downloaded it from the
        server and checked its sha256 before starting the script, so it is unpickled in full
        (`torch.load(weights_only=False, map_location="cpu")`); move tensors where you need them.
        """
        if self.checkpoint_path is None:
            return None
        import torch

        return torch.load(self.checkpoint_path, weights_only=False, map_location="cpu")

    # -- reports and files --------------------------------------------------------------
    def report(self, epoch: int, /, **metrics: Any) -> None:
        """Epoch `epoch` (1-based, from_epoch + 1 … to_epoch) has ended with these metrics.

        The search's metric (`metric.name`) is required; every metric must be a finite number
        (a Python or NumPy number, or a one-element tensor). Anything else raises ValueError on
        the spot, naming the metric. A no-op on ranks other than 0 (after the same checks).
        """
        checked = self._check_report(epoch, metrics)
        if not self.is_main_rank:
            return
        append(self.channel, Message("report", epoch=epoch, metrics=checked))
        self.last_reported_epoch = epoch

    def save_checkpoint(self, obj: Any) -> Path | None:
        """Save `obj` (anything `torch.save` takes) as the trial's checkpoint after the epoch last
        reported (from_epoch before any report); the worker uploads it, and a later segment, or
        another box after a crash, gets it back from `load_checkpoint()`. Written under a
        temporary name and renamed into place, so the worker never sees half a file. Returns
        the file (None on ranks other than 0, where it does nothing)."""
        if not self.is_main_rank:
            return None
        import torch

        epoch = self._checkpoint_epoch()
        target = self._fresh_name("checkpoint", epoch)
        _write_atomically(target, lambda handle: torch.save(obj, handle))
        append(self.channel, Message("checkpoint", epoch=epoch, path=str(target)))
        return target

    def save_checkpoint_file(
        self, source: str | os.PathLike[str], *, epoch: int | None = None, move: bool = False
    ) -> Path | None:
        """Announce a complete file written by other means (Lightning's `save_checkpoint`, a
        shell script) as the checkpoint after `epoch` (default: the epoch last reported). It is
        copied (or moved, `move=True`) into `checkpoint_dir` under a temporary name, then renamed
        into place. Returns the announced file (None on ranks other than 0)."""
        if epoch is not None:
            self._check_epoch(epoch, lowest=self.from_epoch, what="a checkpoint")
        if not self.is_main_rank:
            return None
        epoch = self._checkpoint_epoch() if epoch is None else epoch
        target = self._fresh_name("checkpoint", epoch)
        _place_file(Path(source), target, move=move)
        append(self.channel, Message("checkpoint", epoch=epoch, path=str(target)))
        return target

    def save_weights(self, model_or_state_dict: Any) -> Path | None:
        """Save the final weights for export: a module's `state_dict()` (or a state dict), as CPU
        tensors. Returns the file (None on ranks other than 0, where it does nothing)."""
        if not self.is_main_rank:
            return None
        import torch

        state = (
            model_or_state_dict.state_dict()
            if hasattr(model_or_state_dict, "state_dict")
            else model_or_state_dict
        )
        if not isinstance(state, Mapping):
            raise TypeError(
                "save_weights takes a module or its state dict, got "
                f"{type(model_or_state_dict).__name__}"
            )
        cpu = {
            key: value.detach().cpu() if isinstance(value, torch.Tensor) else value
            for key, value in state.items()
        }
        target = self._fresh_name("weights", None)
        _write_atomically(target, lambda handle: torch.save(cpu, handle))
        append(self.channel, Message("weights", path=str(target)))
        return target

    def save_weights_file(
        self, source: str | os.PathLike[str], *, move: bool = False
    ) -> Path | None:
        """Announce a file that already holds the final weights (a state dict), copied (or
        moved) into `checkpoint_dir` first. None on ranks other than 0."""
        if not self.is_main_rank:
            return None
        target = self._fresh_name("weights", None)
        _place_file(Path(source), target, move=move)
        append(self.channel, Message("weights", path=str(target)))
        return target

    # -- helpers --------------------------------------------------------------------------
    def _check_report(self, epoch: Any, metrics: Mapping[str, Any]) -> dict[str, float]:
        self._check_epoch(epoch, lowest=self.from_epoch + 1, what="a report")
        where = f"the report of epoch {epoch}"
        numbers_only = {name: _as_number(value) for name, value in metrics.items()}
        given = numbers_only.get(self.metric.name)
        self.metric.check_value(
            metrics.get(self.metric.name) if given is None else given, where=where
        )
        for name, value in numbers_only.items():
            if name == "epoch":
                raise ValueError(f"{where}: 'epoch' is the report's own field, not a metric")
            if value is None or not math.isfinite(value):
                raise ValueError(
                    f"{where}: metric {name} must be a finite number, got {metrics[name]!r} "
                    f"(the search optimises {self.metric.name}, {self.metric.goal})"
                )
        checked = {name: float(value) for name, value in numbers_only.items() if value is not None}
        try:  # what the server would refuse in the curve (val_top1 above 1, 65 metrics, …)
            CurvePoint(epoch=epoch, **checked)
        except ValidationError as error:
            first = error.errors()[0]
            name = ".".join(str(part) for part in first["loc"]) or "the metrics"
            reason = str(first["msg"]).removeprefix("Value error, ")
            raise ValueError(
                f"{where}: {name}: {reason} (the server would refuse this learning curve)"
            ) from None
        return checked

    def _check_epoch(self, epoch: Any, *, lowest: int, what: str) -> None:
        if not isinstance(epoch, int) or isinstance(epoch, bool):
            raise ValueError(f"{what}'s epoch must be a whole number, got {epoch!r}")
        if not lowest <= epoch <= self.to_epoch:
            raise ValueError(
                f"{what} for epoch {epoch} is outside this segment: it trains epochs "
                f"{self.from_epoch + 1}…{self.to_epoch} (1-based; train "
                f"range(t.from_epoch + 1, t.to_epoch + 1))"
            )

    def _checkpoint_epoch(self) -> int:
        return self.from_epoch if self.last_reported_epoch is None else self.last_reported_epoch

    def _fresh_name(self, kind: str, epoch: int | None) -> Path:
        # A new name for every file: the worker may still be uploading the previous one (it
        # deletes the files it sent or that a newer one superseded).
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        at = "" if epoch is None else f"-epoch{epoch}"
        return self.checkpoint_dir / f"{kind}{at}-{os.getpid()}-{next(self._names)}.pt"


# -- this process's trial ---------------------------------------------------------------------

_current: Trial | None = None
_current_lock = threading.Lock()
_sigterm_received = threading.Event()


def current() -> Trial:
    """This process's leased trial, read once from VITCUBE_TRIAL_FILE (then cached). Installs
    the SIGTERM flag (module docstring). Raises TrialError with one sentence outside a worker."""
    global _current
    with _current_lock:
        if _current is None:
            _current = _read_current()
            _install_sigterm_flag()
        return _current


def _read_current() -> Trial:
    path = os.environ.get(TRIAL_FILE_ENV)
    if not path:
        raise TrialError(OUTSIDE_A_WORKER.format(reason=f"{TRIAL_FILE_ENV} is not set"))
    try:
        return Trial.from_file(path)
    except FileNotFoundError:
        raise TrialError(
            OUTSIDE_A_WORKER.format(reason=f"{TRIAL_FILE_ENV}={path} does not exist")
        ) from None
    except (ChannelError, ValueError, TypeError, KeyError) as error:
        raise TrialError(f"the trial file {path} cannot be read: {error}") from None


def _install_sigterm_flag() -> None:
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers can be set from the main thread only
    try:
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return  # the script (or its framework) handles SIGTERM itself: leave it alone
        signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError):
        return


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    _sigterm_received.set()


def _rank() -> int:
    for name in ("RANK", "LOCAL_RANK"):
        value = os.environ.get(name)
        if value is not None and value.strip():
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


def _as_number(value: Any) -> float | None:
    """A metric as a float (tensors and NumPy scalars too), or None when it is no number."""
    if isinstance(value, bool):
        return None
    if hasattr(value, "item") and callable(value.item) and not isinstance(value, numbers.Real):
        try:
            value = value.item()  # a one-element tensor or array
        except (ValueError, RuntimeError, TypeError):
            return None
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    return None


def _write_atomically(target: Path, write: Callable[[Any], None]) -> None:
    fd, scratch = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.replace(scratch, target)
    except BaseException:
        Path(scratch).unlink(missing_ok=True)
        raise


def _place_file(source: Path, target: Path, *, move: bool) -> None:
    if not source.is_file():
        raise FileNotFoundError(f"{source} is not a file")
    fd, scratch = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        if move:
            shutil.move(str(source), scratch)
        else:
            shutil.copyfile(source, scratch)
        os.replace(scratch, target)
    except BaseException:
        Path(scratch).unlink(missing_ok=True)
        raise
