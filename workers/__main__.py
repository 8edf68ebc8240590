"""`python -m vitcube.workers ...`: the worker command on a box with only the worker's dependencies.

Same options as `vitcube worker`; `--gpus` starts its per-GPU children this way.
"""

from __future__ import annotations

import typer

from vitcube.workers.cli import worker_command


def main() -> None:
    typer.run(worker_command)


if __name__ == "__main__":
    main()
