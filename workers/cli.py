"""`vitcube worker`: lease trials from a vitcube server, train them, report results.

`worker_command` is a plain function with typer-annotated parameters; vitcube/cli.py registers
it as `vitcube worker`, and `python -m vitcube.workers` runs it on a box that only has the worker's
dependencies. With `--gpus` it starts one worker process per GPU (each sees only its GPU via
CUDA_VISIBLE_DEVICES; with `--gpus-per-trial N`, one per group of N GPUs, for `--command` scripts
that run torchrun), each in its own session so a Ctrl-C on the terminal reaches only this
parent, which forwards the first SIGINT/SIGTERM to every child exactly once: each child then
hands its trial back (`retry: true`) and exits. `launch_workers` takes the list of devices, so
the same launcher runs CPU children (tests) as GPU ones.

Heavy imports (torch, the trainer) happen inside the command, not at module import.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from vitcube.workers.executors.command import CommandSpec


def worker_command(
    server: str = typer.Option(
        ..., envvar="VITCUBE_SERVER", help="vitcube server URL, e.g. http://127.0.0.1:8000"
    ),
    token: str = typer.Option(
        ..., envvar="VITCUBE_WORKER_TOKEN", help="A worker (or admin) token."
    ),
    device: str = typer.Option(
        "auto", help="cuda:0, cuda:1, …, cpu, or auto (the first GPU if any, else the CPU)."
    ),
    data_root: Path | None = typer.Option(
        None,
        envvar="VITCUBE_DATA_ROOT",
        help="Where datasets live: cifar-10-batches-py/, cifar-100-python/, or train/ and val/ "
        "class folders. digits needs none.",
    ),
    max_trials: int | None = typer.Option(
        None,
        min=0,
        help="Exit after this many trials (default: run until stopped); 0 only delivers "
        "spooled results and exits.",
    ),
    trainer: str = typer.Option(
        "real", help="real: train the network; surrogate: the synthetic landscape (no training)."
    ),
    name: str | None = typer.Option(
        None, help="Worker name shown on the dashboard (default HOST:DEVICE)."
    ),
    gpus: str | None = typer.Option(
        None,
        help="Start one worker process per GPU: all, or a list of indices like 0,2,3 "
        "(for one GPU, --device cuda:N).",
    ),
    spool_dir: Path | None = typer.Option(
        None,
        envvar="VITCUBE_SPOOL_DIR",
        help="Where undelivered results wait (default $XDG_STATE_HOME/vitcube/spool, "
        "i.e. ~/.local/state/vitcube/spool).",
    ),
    progress: str = typer.Option(
        "auto", help="auto (a live bar on a terminal, log lines otherwise), rich, or plain."
    ),
    threads: int | None = typer.Option(
        None,
        min=1,
        envvar="VITCUBE_WORKER_THREADS",
        help="CPU threads for torch (default: torch's choice). Give each of several CPU "
        "workers on one box its share of the cores.",
    ),
    deliver_timeout_s: float = typer.Option(
        60.0,
        min=0.0,
        help="How long to keep retrying a result before leaving it in the spool and moving on.",
    ),
    max_worker_faults: int = typer.Option(
        3,
        min=0,
        envvar="VITCUBE_WORKER_MAX_FAULTS",
        help="Stop leasing and exit with code 4 after this many worker faults in a row (a "
        "broken GPU, killed DataLoader workers), so the scheduler replaces the worker; a "
        "sticky CUDA error exits at once. 0: never.",
    ),
    checkpoint_every_s: float = typer.Option(
        180.0,
        min=0.0,
        envvar="VITCUBE_CHECKPOINT_EVERY_S",
        help="Checkpoint a trial at an epoch end at most this often (seconds; 0: every epoch). "
        "Short epochs are checkpointed every epoch while a save costs <= 5 % of the training "
        "since the last; SIGTERM/SIGINT always saves one before the trial is handed back.",
    ),
    command: list[str] | None = typer.Option(
        None,
        "--command",
        help="LABEL='program args…': run your own training script for the trials of searches "
        'whose trainer is {"kind": "command", "name": "LABEL"} (split like a shell would, run '
        "without one, in --workdir; repeatable, one label each). It talks to the worker "
        "through vitcube.trial.",
    ),
    workdir: Path | None = typer.Option(
        None, help="The directory --command scripts run in (default: the current directory)."
    ),
    report_timeout: float = typer.Option(
        1800.0,
        "--report-timeout",
        min=1.0,
        help="Kill a --command script (its whole process group) and fail its trial when it "
        "reports no epoch for this many seconds.",
    ),
    gpus_per_trial: int = typer.Option(
        1,
        min=1,
        help="With --gpus and --command: give each trial this many GPUs (one worker process "
        "per group, CUDA_VISIBLE_DEVICES set to the group), e.g. for torchrun "
        "--nproc_per_node N.",
    ),
) -> None:
    """Lease trials from a vitcube server, train them on this machine, report the results."""
    if trainer not in ("real", "surrogate"):
        raise typer.BadParameter("must be real or surrogate", param_hint="--trainer")
    if progress not in ("auto", "rich", "plain"):
        raise typer.BadParameter("must be auto, rich or plain", param_hint="--progress")
    commands = _command_specs(command or [], workdir, report_timeout)
    if gpus_per_trial > 1 and gpus is None:
        raise typer.BadParameter(
            f"--gpus-per-trial {gpus_per_trial} splits the GPUs of --gpus into groups: add "
            f"--gpus all (or a list such as --gpus 0,1,2,3)",
            param_hint="--gpus-per-trial",
        )
    if gpus_per_trial > 1 and not commands:
        raise typer.BadParameter(
            "the builtin trainer trains on one GPU: --gpus-per-trial is for --command scripts "
            "(e.g. torchrun --nproc_per_node N …); drop it, or add --command",
            param_hint="--gpus-per-trial",
        )
    if gpus is not None:
        raise typer.Exit(
            _run_per_gpu(gpus, name=name, argv=sys.argv[1:], gpus_per_trial=gpus_per_trial)
        )

    from vitcube.workers.loop import Worker, WorkerOptions
    from vitcube.workers.progress import make_progress

    options = WorkerOptions(
        server=server,
        token=token,
        device=device,
        data_root=data_root,
        max_trials=max_trials,
        trainer=trainer,
        name=name,
        spool_dir=spool_dir,
        deliver_timeout_s=deliver_timeout_s,
        threads=threads,
        max_worker_faults=max_worker_faults,
        checkpoint_every_s=checkpoint_every_s,
        commands={spec.label: spec for spec in commands},
    )
    display = make_progress(progress)
    for spec in commands:
        display.log(f"command {spec.name}: {shlex.join(spec.argv)} (in {spec.workdir})")
    try:
        worker = Worker(options, display)
        code = worker.run()
    except ValueError as error:
        display.log(f"error: {error}")
        code = 2
    finally:
        display.close()
    raise typer.Exit(code)


def _command_specs(
    flags: list[str], workdir: Path | None, report_timeout_s: float
) -> list[CommandSpec]:
    """The --command flags, checked; a bad one is exit 2 with what to write instead."""
    from vitcube.workers.executors.command import CommandSpecError, parse_command_flags

    directory = (workdir or Path.cwd()).resolve()
    if flags and not directory.is_dir():
        raise typer.BadParameter(
            f"{directory} is not a directory (--command scripts run there)", param_hint="--workdir"
        )
    try:
        return parse_command_flags(flags, workdir=directory, report_timeout_s=report_timeout_s)
    except CommandSpecError as error:
        raise typer.BadParameter(str(error), param_hint="--command") from None


def group_gpus(chosen: Sequence[int], per_trial: int) -> list[list[int]]:
    """Split the chosen GPUs, in order, into groups of `per_trial`: one worker process each.

    Raises ValueError saying what would divide when `per_trial` does not divide their count.
    """
    if per_trial < 1:
        raise ValueError(f"--gpus-per-trial must be >= 1, got {per_trial}")
    if len(chosen) % per_trial:
        divisors = [n for n in range(1, len(chosen) + 1) if len(chosen) % n == 0]
        raise ValueError(
            f"--gpus-per-trial {per_trial} does not divide the {len(chosen)} GPU(s) of --gpus "
            f"{','.join(str(i) for i in chosen)}: use one of {', '.join(map(str, divisors))}, "
            f"or list {per_trial * (len(chosen) // per_trial or 1)} GPUs"
        )
    return [list(chosen[i : i + per_trial]) for i in range(0, len(chosen), per_trial)]


def parse_gpus(spec: str, visible: int) -> list[int]:
    """`all` → every visible GPU; `0,2` → those indices. Raises ValueError saying the fix.

    A bare number is refused: users type `--gpus 4` meaning "four GPUs" as often as "GPU 4".
    """
    spec = spec.strip()
    if spec.isdigit():
        n = int(spec)
        example = ",".join(str(i) for i in range(max(n, 2)))
        raise ValueError(
            f"--gpus {spec} is ambiguous (a count, or GPU {spec}?): list the indices, e.g. "
            f"--gpus {example}, or use --gpus all; for one GPU use --device cuda:{spec}"
        )
    if spec == "all":
        chosen = list(range(visible))
    else:
        try:
            chosen = [int(part) for part in spec.split(",") if part.strip()]
        except ValueError:
            raise ValueError(
                f"--gpus must be all or a list of GPU indices like 0,1,2,3; got {spec!r}"
            ) from None
        if len(set(chosen)) != len(chosen):
            raise ValueError(f"--gpus {spec}: a GPU is listed twice; name each GPU once")
    if not chosen:
        raise ValueError(f"--gpus {spec}: no GPU is visible on this machine; use --device cpu")
    bad = [i for i in chosen if not 0 <= i < visible]
    if bad:
        raise ValueError(f"--gpus {spec}: GPU(s) {bad} not visible ({visible} visible)")
    return chosen


def _strip_options(argv: list[str], names: set[str]) -> list[str]:
    """Drop `--gpus X`, `--device X`, `--name X`, `--progress X` (and `--opt=X`) from argv."""
    kept: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in names:
            skip = True
            continue
        if any(arg.startswith(f"{option}=") for option in names):
            continue
        kept.append(arg)
    return kept


def _run_per_gpu(spec: str, *, name: str | None, argv: list[str], gpus_per_trial: int = 1) -> int:
    import torch

    try:
        groups = group_gpus(parse_gpus(spec, torch.cuda.device_count()), gpus_per_trial)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if argv and argv[0] == "worker":
        argv = argv[1:]
    base_args = _strip_options(
        argv, {"--gpus", "--gpus-per-trial", "--device", "--name", "--progress"}
    )
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    physical = visible.split(",") if visible else [str(i) for i in range(torch.cuda.device_count())]
    host = name or socket.gethostname()
    children = [
        ChildWorker(
            device="cuda:0",  # the first GPU of those the child sees; a command sees them all
            name=f"{host}:cuda{'+'.join(str(index) for index in group)}",
            env={"CUDA_VISIBLE_DEVICES": ",".join(physical[index] for index in group)},
        )
        for group in groups
    ]
    return launch_workers(children, base_args)


@dataclass(frozen=True)
class ChildWorker:
    """One worker process `launch_workers` starts: its --device, --name and extra environment."""

    device: str
    name: str
    env: Mapping[str, str] = field(default_factory=dict)


def launch_workers(children: Sequence[ChildWorker], base_args: Sequence[str]) -> int:
    """Run one `python -m vitcube.workers` per child with `base_args`; wait; the worst exit code.

    Each child starts in its own session, so a terminal's Ctrl-C (sent to the whole foreground
    process group) reaches only this parent. The parent forwards the first SIGINT or SIGTERM to
    every child exactly once, and each child hands its trial back with `retry: true`; a second
    signal only says what is going on, a third kills the children (SIGKILL: their leases expire
    and the server re-queues those trials).
    """
    processes: list[subprocess.Popen[bytes]] = []
    received: list[int] = []
    forwarded: set[int] = set()  # pids that got the first signal

    def forward(process: subprocess.Popen[bytes]) -> None:
        if process.pid not in forwarded and process.poll() is None:
            forwarded.add(process.pid)
            process.send_signal(received[0])

    def on_signal(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        running = [p for p in processes if p.poll() is None]
        if len(received) == 1:
            for process in running:
                forward(process)
        elif len(received) == 2:
            print(
                f"stopping: {len(running)} worker(s) are handing their trials back; "
                "signal again to kill them",
                file=sys.stderr,
                flush=True,
            )
        else:
            for process in running:
                process.kill()

    # Installed before the first start: a signal during the launch is not lost.
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for child in children:
            if received:
                break  # asked to stop while starting: start no more
            command = [
                sys.executable,
                "-m",
                "vitcube.workers",
                *base_args,
                "--device",
                child.device,
                "--name",
                child.name,
                "--progress",
                "plain",
            ]
            process = subprocess.Popen(
                command, env={**os.environ, **child.env}, start_new_session=True
            )
            processes.append(process)
            if received:  # the signal came while this one started: it has not seen it
                forward(process)
        codes = [process.wait() for process in processes]
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return max(codes, default=0)
