"""`vitcube demo`: the whole mission on one machine (server, search, local workers)."""

from __future__ import annotations


def run_demo(*, trials: int, workers: int, port: int, exit_when_done: bool) -> int:
    raise NotImplementedError("vitcube demo is not built yet (issue 'demo')")
