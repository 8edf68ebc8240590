"""The command executor: a segment trained by the operator's own script (`--command LABEL='…'`).

A worker box registers a script under a label (`vitcube worker --command
train-v2='python train.py --config x.yaml'`); a search whose trainer is
`{"kind": "command", "name": "train-v2"}` is leased only to such a worker, and this executor
runs the script for each segment. The script and the worker talk through `vitcube.channel` (the
SDK, `vitcube.trial`, writes it): the worker writes the trial file, the script appends report,
checkpoint and weights lines to the channel, and the worker tails it. The script's stdout and
stderr go to the worker's log, line by line; stdout is never parsed.

What the worker does with what the script does (DESIGN.md, "Trainers"):
- exit 0 after reporting `to_epoch`: the segment is done;
- exit 0 earlier after the worker asked it to stop (the server's stop): the trial is stopped
  with what it reported; exit 0 earlier otherwise: a failure (the script gave up silently);
- exit 75 (EX_TEMPFAIL), or death by a signal the worker did not send (the OOM killer, a
  kill -9): a retryable failure; the trial resumes from its last checkpoint;
- any other exit: a non-retryable failure whose first line is the script's key stderr line
  (a Python traceback's exception line), so fail fast groups identical crashes;
- no report for `report_timeout_s`, a report without the search's metric or with a non-finite
  one, a malformed channel line: the process group is killed and the trial fails for good.
The script runs in a process group of its own, killed whenever the executor returns, so none of
its children (DataLoader workers, torchrun's ranks) outlives the trial; should the worker itself
die (kill -9), the kernel kills the script (PR_SET_PDEATHSIG), which frees its GPU for the next.

Imports the standard library, vitcube.contract, vitcube.channel and workers.executors; torch
only lazily, to convert the script's final weights.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from pydantic import ValidationError

from vitcube.channel import (
    CHANNEL_ENV,
    STOP_FILE_ENV,
    TRIAL_FILE_ENV,
    ChannelError,
    ChannelReader,
    Message,
    TrialFile,
    parse_line,
)
from vitcube.contract import COMMAND_LABEL_PATTERN, CurvePoint, TrialLease
from vitcube.workers.executors import (
    Executor,
    Segment,
    TrainingAborted,
    TrialFailed,
    TrialOutcome,
)
from vitcube.workers.executors.sealed import seal, unseal

DEFAULT_REPORT_TIMEOUT_S = 1800.0
# How long a script told to stop (the stop file and SIGTERM) may take to save and exit.
STOP_GRACE_S = 60.0
POLL_S = 0.2  # how often the channel is read and the process looked at
STDERR_TAIL_LINES = 50
MAX_LOG_LINE_CHARS = 2000
MAX_TAIL_CHARS = 8_000  # of a failure's message; the server takes 20,000 characters
EXIT_TEMPFAIL = 75  # sysexits.h EX_TEMPFAIL: "try again later"
_PR_SET_PDEATHSIG = 1  # linux/prctl.h
# How long the output readers may take to drain once the process group is gone.
_OUTPUT_DRAIN_S = 5.0


class CommandSpecError(ValueError):
    """A `--command` flag that cannot be used; the message says what to write instead."""


@dataclass(frozen=True)
class CommandSpec:
    """One `--command NAME='program args…'` of a worker: what `CommandExecutor` runs.

    `gpus`: the CUDA_VISIBLE_DEVICES the script gets (None: the worker's own environment, which
    `--gpus … --gpus-per-trial N` has already set for the worker process)."""

    name: str
    argv: tuple[str, ...]
    workdir: Path
    report_timeout_s: float = DEFAULT_REPORT_TIMEOUT_S
    gpus: tuple[str, ...] | None = None

    @property
    def label(self) -> str:
        return f"command:{self.name}"

    def executor(self) -> CommandExecutor:
        return CommandExecutor(
            self.label,
            self.argv,
            self.workdir,
            self.report_timeout_s,
            gpus=self.gpus,
        )


_FLAG_EXAMPLE = "--command train='python train.py --config x.yaml'"


def parse_command_flag(
    flag: str, *, workdir: Path, report_timeout_s: float = DEFAULT_REPORT_TIMEOUT_S
) -> CommandSpec:
    """`NAME=COMMAND LINE` → CommandSpec (the command line split with shlex, run without a
    shell); CommandSpecError saying what to write for a flag without `=`, a bad label or an
    empty command line."""
    name, equals, command = flag.partition("=")
    name = name.strip()
    if not equals:
        raise CommandSpecError(
            f"--command {flag!r} has no '=': write LABEL=COMMAND, e.g. {_FLAG_EXAMPLE} (a "
            'search names the label: "trainer": {"kind": "command", "name": "train"})'
        )
    if not re.fullmatch(COMMAND_LABEL_PATTERN, name):
        raise CommandSpecError(
            f"--command label {name!r} is not a valid label: use 1-63 letters, digits, '_', "
            f"'.' or '-', starting with a letter or digit, e.g. {_FLAG_EXAMPLE}"
        )
    try:
        argv = tuple(shlex.split(command))
    except ValueError as error:  # an unclosed quote
        raise CommandSpecError(
            f"--command {name}: cannot split {command!r} into arguments ({error}); quote the "
            f"whole flag for your shell, e.g. {_FLAG_EXAMPLE}"
        ) from None
    if not argv:
        raise CommandSpecError(
            f"--command {name}= has no command line: write the program to run after the '=', "
            f"e.g. {_FLAG_EXAMPLE}"
        )
    if _find_program(argv[0], workdir) is None:
        where = f"in {workdir}" if "/" in argv[0] else "on PATH"
        raise CommandSpecError(
            f"--command {name}: {argv[0]!r} is not a program {where}; give its path, or run "
            "the worker where it is installed (the command runs without a shell, in --workdir)"
        )
    return CommandSpec(name, argv, workdir, report_timeout_s)


def parse_command_flags(
    flags: Sequence[str], *, workdir: Path, report_timeout_s: float = DEFAULT_REPORT_TIMEOUT_S
) -> list[CommandSpec]:
    """Every `--command` flag of a worker; CommandSpecError for a bad one or a label given
    twice."""
    specs: list[CommandSpec] = []
    for flag in flags:
        spec = parse_command_flag(flag, workdir=workdir, report_timeout_s=report_timeout_s)
        if any(other.name == spec.name for other in specs):
            raise CommandSpecError(
                f"--command {spec.name} is given twice: give each label once (a worker runs one "
                "command per label; register another under another label)"
            )
        specs.append(spec)
    return specs


def _find_program(program: str, workdir: Path) -> str | None:
    if "/" in program:
        path = workdir / program  # an absolute program stays absolute
        return str(path) if path.is_file() and os.access(path, os.X_OK) else None
    return shutil.which(program)


@dataclass
class _ScriptOutput:
    """The script's stdout and stderr, logged line by line as they come; stderr's tail kept."""

    prefix: str
    log: Any
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=STDERR_TAIL_LINES))
    first_line: str | None = None
    exception_line: str | None = None  # the last Python traceback's exception line
    _in_traceback: bool = False
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self, process: subprocess.Popen[bytes]) -> None:
        for stream, is_stderr in ((process.stdout, False), (process.stderr, True)):
            assert stream is not None
            thread = threading.Thread(
                target=self._pump, args=(stream, is_stderr), daemon=True, name="command-output"
            )
            thread.start()
            self._threads.append(thread)

    def join(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _pump(self, stream: IO[bytes], is_stderr: bool) -> None:
        with stream:
            for raw in stream:
                line = raw.decode(errors="replace").rstrip()[:MAX_LOG_LINE_CHARS]
                self.log(f"{self.prefix} {line}")
                if is_stderr:
                    self._note_stderr(line)

    def _note_stderr(self, line: str) -> None:
        self.tail.append(line)
        if not line.strip():
            return
        if self.first_line is None:
            self.first_line = line.strip()
        if line.startswith("Traceback (most recent call last):"):
            self._in_traceback = True
        elif self._in_traceback and not line[0].isspace():
            # A traceback's frames are indented; its first unindented line names the exception.
            self.exception_line = line.strip()
            self._in_traceback = False

    def key_line(self) -> str | None:
        """The line that says what went wrong: a traceback's exception line, else the first
        non-empty stderr line."""
        if self.exception_line is not None:
            return self.exception_line
        if self._in_traceback:  # a traceback cut short: its last line is the best there is
            lines = [line.strip() for line in self.tail if line.strip()]
            return lines[-1] if lines else None
        return self.first_line

    def tail_text(self) -> str:
        """The last lines of stderr, at most MAX_TAIL_CHARS (a failure's message has a limit)."""
        text = "\n".join(self.tail).strip("\n")
        return text if len(text) <= MAX_TAIL_CHARS else "…" + text[-MAX_TAIL_CHARS:]


@dataclass
class _Progress:
    """What the script has said through the channel in this run."""

    curve: list[dict[str, float]] = field(default_factory=list)
    # The epochs before this segment, as the checkpoint it resumed from carried them (sealed).
    earlier: list[dict[str, float]] = field(default_factory=list)
    weights: Path | None = None
    last_report_at: float = field(default_factory=time.monotonic)

    @property
    def last_epoch(self) -> int | None:
        return self.curve[-1]["epoch"] if self.curve else None  # type: ignore[return-value]


class CommandExecutor(Executor):
    """Runs `argv` in `workdir` for every segment of a `command:NAME` trial (module docstring).

    `gpus`: CUDA_VISIBLE_DEVICES for the script (None: inherited from the worker).
    `grace_s`: how long a script told to stop may take to save and exit before SIGKILL.
    """

    def __init__(
        self,
        label: str,
        argv: Sequence[str],
        workdir: Path,
        report_timeout_s: float = DEFAULT_REPORT_TIMEOUT_S,
        gpus: Sequence[str] | None = None,
        *,
        grace_s: float = STOP_GRACE_S,
    ) -> None:
        if not label.startswith("command:"):
            raise ValueError(f"a command executor's label is command:NAME, got {label!r}")
        if not argv:
            raise ValueError(f"{label}: the command line is empty")
        if report_timeout_s <= 0:
            raise ValueError(f"{label}: report_timeout_s must be > 0, got {report_timeout_s}")
        self.label = label
        self.name = label.removeprefix("command:")
        self.argv = tuple(argv)
        self.workdir = Path(workdir)
        self.report_timeout_s = float(report_timeout_s)
        self.gpus = tuple(gpus) if gpus is not None else None
        self.grace_s = grace_s

    def describe(self) -> str:
        gpus = f", CUDA_VISIBLE_DEVICES={','.join(self.gpus)}" if self.gpus is not None else ""
        return f"{self.label}: {shlex.join(self.argv)} (in {self.workdir}{gpus})"

    def run(self, segment: Segment) -> TrialOutcome:
        lease = segment.lease
        run_dir = segment.scratch / f"command-{lease.id}-{lease.from_epoch}"
        run_dir.mkdir(parents=True, exist_ok=True)
        trial_file, earlier = self._trial_file(segment, run_dir)
        trial_path = run_dir / "trial.json"
        trial_file.write(trial_path)
        env = {
            **os.environ,
            TRIAL_FILE_ENV: str(trial_path),
            CHANNEL_ENV: trial_file.channel,
            STOP_FILE_ENV: trial_file.stop_file,
            "PYTHONUNBUFFERED": "1",
        }
        if self.gpus is not None:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(self.gpus)
        segment.log(
            f"trial {lease.id}: running {self.describe()}, epochs "
            f"{lease.from_epoch + 1}-{segment.to_epoch} of {segment.epochs}"
        )
        if trial_file.checkpoint:
            segment.log(
                f"trial {lease.id}: resuming from its checkpoint at epoch {lease.from_epoch}"
            )
        segment.events.on_start(epochs=segment.epochs, steps_per_epoch=0, train_images=0)
        try:
            process = subprocess.Popen(
                self.argv,
                cwd=self.workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,  # its own process group, killed as one
                preexec_fn=_die_with_the_worker(),
            )
        except OSError as error:
            raise TrialFailed(
                f"command {self.name} could not start: {error} (the worker runs "
                f"{shlex.join(self.argv)} without a shell, in {self.workdir})",
                retry=False,
            ) from None
        output = _ScriptOutput(prefix=f"[trial {lease.id}]", log=segment.log)
        output.start(process)
        try:
            return self._supervise(segment, process, output, trial_file, earlier)
        finally:
            _kill_group(process, signal.SIGKILL)
            process.wait()
            output.join(_OUTPUT_DRAIN_S)

    def _trial_file(
        self, segment: Segment, run_dir: Path
    ) -> tuple[TrialFile, list[dict[str, float]]]:
        """The segment's trial file, and the curve up to the checkpoint it resumes from (cut off
        the downloaded file, `workers.executors.sealed`, so the script gets its own bytes)."""
        lease = segment.lease
        checkpoint_dir = run_dir / "checkpoints"
        checkpoint_dir.mkdir(exist_ok=True)
        resume = segment.checkpoints.resume_path()
        carried = unseal(resume) if resume is not None else []
        earlier = [p for p in carried if p.get("epoch", 0) <= lease.from_epoch]
        trial_file = TrialFile(
            trial_id=lease.id,
            search_id=lease.search_id,
            arch=lease.arch,
            factors=lease.factors,
            effective_factors=lease.effective_factors,
            macs=lease.macs,
            params=lease.params,
            seed=lease.seed,
            training=lease.training,
            dataset=lease.dataset,
            from_epoch=lease.from_epoch,
            to_epoch=segment.to_epoch,
            epochs=segment.epochs,
            metric={"name": segment.metric.name, "goal": segment.metric.goal},
            channel=str(run_dir / "channel.jsonl"),
            stop_file=str(run_dir / "stop"),
            checkpoint_dir=str(checkpoint_dir),
            checkpoint=str(resume) if resume is not None else None,
        )
        return trial_file, earlier

    def _supervise(
        self,
        segment: Segment,
        process: subprocess.Popen[bytes],
        output: _ScriptOutput,
        trial_file: TrialFile,
        earlier: list[dict[str, float]],
    ) -> TrialOutcome:
        control = segment.control
        reader = ChannelReader(trial_file.channel)
        progress = _Progress(earlier=earlier)
        asked_to_stop_at: float | None = None  # when the stop file and SIGTERM went out
        killed_after_grace = False
        while True:
            self._read_channel(segment, reader, progress, process)
            if control.lease_lost.is_set():
                _kill_group(process, signal.SIGKILL)
                raise TrainingAborted("lease_lost")
            now = time.monotonic()
            wants_stop = control.stop.is_set() or control.interrupted.is_set()
            if wants_stop and asked_to_stop_at is None:
                asked_to_stop_at = now
                why = "interrupted" if control.interrupted.is_set() else "told to stop"
                segment.log(
                    f"trial {segment.lease.id}: {why}: asking {self.label} to save and exit"
                )
                Path(trial_file.stop_file).touch()
                _kill_group(process, signal.SIGTERM)
            if process.poll() is not None:
                break
            if asked_to_stop_at is not None:
                if not killed_after_grace and now - asked_to_stop_at > self.grace_s:
                    segment.log(
                        f"trial {segment.lease.id}: {self.label} did not exit within "
                        f"{self.grace_s:g} s of SIGTERM: killed"
                    )
                    _kill_group(process, signal.SIGKILL)
                    killed_after_grace = True
            elif now - progress.last_report_at > self.report_timeout_s:
                _kill_group(process, signal.SIGKILL)
                last = progress.last_epoch
                raise TrialFailed(
                    f"command {self.name} sent no report for {self.report_timeout_s:g} s "
                    f"(--report-timeout): killed; "
                    + (f"its last report was epoch {last}" if last else "it reported no epoch")
                    + " (a hung script, or an epoch longer than --report-timeout: raise it)"
                    + _tail_block(output),
                    retry=False,
                )
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=POLL_S)
        # The script has exited: read what it wrote last (its final report, a checkpoint).
        self._read_channel(segment, reader, progress, process)
        # Its output is complete once the group is gone (a daemonised child may hold a pipe).
        _kill_group(process, signal.SIGKILL)
        output.join(_OUTPUT_DRAIN_S)
        if control.lease_lost.is_set():
            raise TrainingAborted("lease_lost")
        if control.interrupted.is_set():
            raise TrainingAborted("interrupted")
        return self._outcome(segment, process.returncode, progress, output, asked_to_stop_at)

    def _read_channel(
        self,
        segment: Segment,
        reader: ChannelReader,
        progress: _Progress,
        process: subprocess.Popen[bytes],
    ) -> None:
        for line in reader.poll():
            try:
                message = parse_line(line)
            except ChannelError as error:
                _kill_group(process, signal.SIGKILL)
                raise TrialFailed(f"command {self.name}: {error}", retry=False) from None
            try:
                self._handle(segment, message, progress)
            except _ScriptBug as error:
                _kill_group(process, signal.SIGKILL)
                raise TrialFailed(f"command {self.name}: {error}", retry=False) from None

    def _handle(self, segment: Segment, message: Message, progress: _Progress) -> None:
        lease = segment.lease
        if message.type == "report":
            assert message.epoch is not None
            epoch = message.epoch
            metrics = dict(message.metrics)
            try:
                segment.metric.check_value(
                    metrics.get(segment.metric.name), where=f"epoch {epoch}'s report"
                )
            except ValueError as error:  # the search's metric missing or not finite
                raise _ScriptBug(str(error)) from None
            if "epoch" in metrics:
                raise _ScriptBug(f"epoch {epoch}'s report has a metric named 'epoch'; rename it")
            if not lease.from_epoch < epoch <= segment.to_epoch:
                raise _ScriptBug(
                    f"it reported epoch {epoch}, but this segment trains epochs "
                    f"{lease.from_epoch + 1}-{segment.to_epoch} (the trial file's from_epoch + 1 "
                    "… to_epoch; a resumed run starts after its checkpoint's epoch)"
                )
            point: dict[str, float] = {"epoch": epoch, **metrics}
            _check_point(point, epoch)
            progress.curve = [p for p in progress.curve if p["epoch"] != epoch] + [point]
            progress.curve.sort(key=lambda p: p["epoch"])
            progress.last_report_at = time.monotonic()
            segment.events.on_epoch(epoch, metrics)
        elif message.type == "checkpoint":
            assert message.epoch is not None and message.path is not None
            path = self._script_path(message.path)
            if not path.is_file():
                raise _ScriptBug(
                    f"its checkpoint line for epoch {message.epoch} names {path}, which is not "
                    "a file (write the file completely, then append the line)"
                )
            segment.checkpoints.submit(
                self._sealed(segment, path, progress, message.epoch), epoch=message.epoch
            )
        elif message.type == "weights":
            assert message.path is not None
            progress.weights = self._script_path(message.path)

    def _sealed(self, segment: Segment, path: Path, progress: _Progress, epoch: int) -> Path:
        """The checkpoint file to upload: the script's, with the curve up to `epoch` appended
        (`sealed.seal`). A file in the trial's checkpoint_dir is the SDK's, fresh for this
        announcement, and is sealed in place; any other the script may still use, so it is
        sealed as a copy."""
        if path.parent != segment.scratch and segment.scratch not in path.parents:
            copy = segment.scratch / f"checkpoint-{segment.lease.id}-e{epoch}-{path.name}"
            shutil.copyfile(path, copy)
            path = copy
        seal(path, [p for p in progress.earlier + progress.curve if p["epoch"] <= epoch])
        return path

    def _script_path(self, path: str) -> Path:
        return self.workdir / path  # an absolute path stays absolute

    def _outcome(
        self,
        segment: Segment,
        code: int,
        progress: _Progress,
        output: _ScriptOutput,
        asked_to_stop_at: float | None,
    ) -> TrialOutcome:
        reached = progress.last_epoch
        done = reached is not None and reached >= segment.to_epoch
        if code == 0 and done:
            return self._trial_outcome(segment, progress, stopped=False)
        if asked_to_stop_at is not None:
            # The server said stop: the trial ends with what was reported, however the script
            # took it (a script without a SIGTERM handler dies of it; torchrun exits 1).
            if code != 0:
                segment.log(
                    f"trial {segment.lease.id}: {self.label} exited with code {code} after it "
                    "was told to stop"
                )
            if not progress.curve:
                raise TrialFailed(
                    f"command {self.name} stopped as asked before reporting any epoch of this "
                    "segment: nothing to rank",
                    retry=False,
                )
            return self._trial_outcome(segment, progress, stopped=True)
        if code == 0:
            after = f"after epoch {reached}" if reached else "without reporting an epoch"
            raise TrialFailed(
                f"command {self.name} exited 0 {after}, before to_epoch {segment.to_epoch} "
                "(exit 0 only once to_epoch is reported, or when told to stop; exit 75 to be "
                f"retried){_tail_block(output)}",
                retry=False,
            )
        if code == EXIT_TEMPFAIL:
            raise TrialFailed(
                f"command {self.name} exited with code {EXIT_TEMPFAIL} (try again): retrying "
                f"from the last checkpoint{_tail_block(output)}",
                retry=True,
            )
        if code < 0:
            name = _signal_name(-code)
            raise TrialFailed(
                f"command {self.name} was killed by {name}, which the worker did not send (the "
                f"kernel's OOM killer? a kill from outside?): retrying from the last "
                f"checkpoint{_tail_block(output)}",
                retry=True,
            )
        key = output.key_line() or f"command {self.name} exited with code {code}"
        message = f"{key}\n(command {self.name} exited with code {code})"
        tail = output.tail_text()
        if tail:
            message += f"\n{tail}"
        raise TrialFailed(message, retry=False)

    def _trial_outcome(
        self, segment: Segment, progress: _Progress, *, stopped: bool
    ) -> TrialOutcome:
        lease = segment.lease
        metric = segment.metric
        # The whole run's curve: a segment's result is its best epoch so far, as a builtin one's.
        curve = progress.earlier + progress.curve
        best = metric.best_point(curve)
        assert best is not None  # every point carries the metric, checked on arrival
        value = float(best[metric.name])
        return TrialOutcome(
            value=value,
            metric=metric,
            curve=curve,
            stopped=stopped,
            best_epoch=int(best["epoch"]),
            params=lease.params,
            macs=lease.macs,
            resumed_from_epoch=lease.from_epoch or None,
            epochs_trained=float(len(progress.curve)),
            weights_path=self._convert_weights(segment, progress.weights, value),
        )

    def _convert_weights(self, segment: Segment, source: Path | None, value: float) -> Path | None:
        """The script's final state dict in workers.checkpoint's weights format, or None (none
        saved, or one that is not a state dict: logged, the result is still reported)."""
        if source is None:
            return None
        lease = segment.lease
        target = segment.scratch / f"weights-{lease.id}.pt"
        try:
            state_dict = _load_state_dict(source)
            from vitcube.workers.checkpoint import save_weights

            save_weights(
                target,
                arch=lease.arch,
                state_dict=state_dict,
                preprocessing=_script_preprocessing(lease, self.name),
                top1=value,
                trial_id=lease.id,
                search_id=lease.search_id,
            )
        except Exception as error:  # any unreadable file: the result still counts
            segment.log(f"trial {lease.id}: weights from {source} not kept: {error}")
            target.unlink(missing_ok=True)
            return None
        return target


class _ScriptBug(ValueError):
    """The script broke the channel's protocol (a report outside its segment, a missing file)."""


def _check_point(point: dict[str, float], epoch: int) -> None:
    """Refuse a point the server would refuse at the end (val_top1 in percent, a long name)."""
    try:
        CurvePoint.model_validate(point)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'report'}: {e['msg']}" for e in error.errors()
        )
        raise _ScriptBug(
            f"epoch {epoch}'s report is not a valid curve point ({problems})"
        ) from None


def _load_state_dict(path: Path) -> Mapping[str, Any]:
    import torch

    loaded = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(loaded, Mapping) and isinstance(loaded.get("state_dict"), Mapping):
        loaded = loaded["state_dict"]  # vitcube's own weights file, or a Lightning-style dict
    if not isinstance(loaded, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in loaded.values()
    ):
        raise ValueError("it is not a state dict (save model.state_dict())")
    return loaded


def _script_preprocessing(lease: TrialLease, name: str) -> dict[str, Any]:
    return {
        "resolution": int(lease.arch.get("resolution", 0)),
        "defined_by": f"the training script (command {name}): vitcube does not know its "
        "input pipeline",
    }


def _die_with_the_worker() -> Callable[[], None] | None:
    """A preexec_fn that makes the kernel SIGKILL the script when the worker dies (Linux's
    PR_SET_PDEATHSIG): a worker killed with -9 leaves no script holding its GPU. Resolved here,
    so the forked child only makes one system call; None where prctl does not exist."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    worker = os.getpid()

    def set_death_signal() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != worker:  # the worker died before the call: nothing would fire
            os.kill(os.getpid(), signal.SIGKILL)

    return set_death_signal


def _kill_group(process: subprocess.Popen[bytes], signum: int) -> None:
    """Signal the script's whole process group (it leads it: start_new_session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):  # the group is gone
        os.killpg(process.pid, signum)


def _signal_name(signum: int) -> str:
    try:
        return f"{signal.Signals(signum).name} (signal {signum})"
    except ValueError:
        return f"signal {signum}"


def _tail_block(output: _ScriptOutput) -> str:
    tail = output.tail_text()
    return f"\nthe end of its stderr:\n{tail}" if tail else ""
