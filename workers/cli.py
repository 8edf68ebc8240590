"""`vitcube worker`: lease trials from a vitcube server, train them, report results.

`worker_command` is a plain function with typer-annotated parameters; vitcube/cli.py registers
it as `vitcube worker`, and `python -m vitcube.workers` runs it on a box that only has the worker's
dependencies. With `--gpus` it starts one worker process per GPU (each sees only its GPU via
CUDA_VISIBLE_DEVICES) and forwards SIGINT/SIGTERM to them.

Heavy imports (torch, the trainer) happen inside the command, not at module import.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from types import FrameType

import typer


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
        help="Start one worker process per GPU: all, a count N (GPUs 0..N-1), or a list 0,2,3.",
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
) -> None:
    """Lease trials from a vitcube server, train them on this machine, report the results."""
    if trainer not in ("real", "surrogate"):
        raise typer.BadParameter("must be real or surrogate", param_hint="--trainer")
    if progress not in ("auto", "rich", "plain"):
        raise typer.BadParameter("must be auto, rich or plain", param_hint="--progress")
    if gpus is not None:
        raise typer.Exit(_run_per_gpu(gpus, name=name, argv=sys.argv[1:]))

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
    )
    display = make_progress(progress)
    try:
        worker = Worker(options, display)
        code = worker.run()
    except ValueError as error:
        display.log(f"error: {error}")
        code = 2
    finally:
        display.close()
    raise typer.Exit(code)


def parse_gpus(spec: str, visible: int) -> list[int]:
    """`all` → every visible GPU; `N` → GPUs 0..N-1; `0,2` → those. Raises ValueError."""
    spec = spec.strip()
    if spec == "all":
        chosen = list(range(visible))
    elif spec.isdigit():
        chosen = list(range(int(spec)))
    else:
        try:
            chosen = [int(part) for part in spec.split(",") if part.strip()]
        except ValueError:
            raise ValueError(
                f"--gpus must be all, a count or a list like 0,1; got {spec!r}"
            ) from None
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


def _run_per_gpu(spec: str, *, name: str | None, argv: list[str]) -> int:
    import torch

    try:
        chosen = parse_gpus(spec, torch.cuda.device_count())
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if argv and argv[0] == "worker":
        argv = argv[1:]
    base_args = _strip_options(argv, {"--gpus", "--device", "--name", "--progress"})
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    physical = visible.split(",") if visible else [str(i) for i in range(torch.cuda.device_count())]
    host = name or socket.gethostname()
    children: list[subprocess.Popen[bytes]] = []
    for index in chosen:
        env = dict(os.environ, CUDA_VISIBLE_DEVICES=physical[index])
        command = [
            sys.executable,
            "-m",
            "vitcube.workers",
            *base_args,
            "--device",
            "cuda:0",
            "--name",
            f"{host}:cuda{index}",
            "--progress",
            "plain",
        ]
        children.append(subprocess.Popen(command, env=env))

    def forward(signum: int, frame: FrameType | None) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        codes = [child.wait() for child in children]
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return max(codes, default=0)
