"""A command trial's checkpoint carries the learning curve it was taken at.

A script's checkpoint is the script's own file; the worker uploads it and a later segment (on
any box) gets it back. Completing a segment reports the trial's whole curve, but a command
executor sees only the epochs its script reported in this run: the epochs before the
checkpoint were reported by another run, maybe on a worker that was killed since. So before
uploading, the worker appends the curve so far to the file (`seal`), and after downloading it
cuts it off again (`unseal`): the script gets its file back byte for byte, and the executor
knows every epoch up to the checkpoint, taken at the same moment as the checkpoint itself.

The trailer: the curve as JSON, its length as 8 bytes big-endian, then `MAGIC`. A file without
it (written by an older worker, or by hand) is the script's file whole, with no curve.
Imports the standard library only.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

MAGIC = b"\nvitcube-curve/1\n"
_LENGTH_BYTES = 8


def seal(path: Path, curve: Sequence[dict[str, Any]]) -> None:
    """Append `curve` (points with "epoch" and metrics) to the checkpoint file at `path`."""
    body = json.dumps(list(curve), separators=(",", ":"), allow_nan=False).encode()
    with path.open("ab") as handle:
        handle.write(body + len(body).to_bytes(_LENGTH_BYTES, "big") + MAGIC)
        handle.flush()
        os.fsync(handle.fileno())


def unseal(path: Path) -> list[dict[str, Any]]:
    """Cut the curve off the checkpoint file at `path` and return it ([] when it has none)."""
    size = path.stat().st_size
    tail = len(MAGIC) + _LENGTH_BYTES
    if size < tail:
        return []
    with path.open("r+b") as handle:
        handle.seek(size - tail)
        footer = handle.read(tail)
        if not footer.endswith(MAGIC):
            return []
        length = int.from_bytes(footer[:_LENGTH_BYTES], "big")
        start = size - tail - length
        if start < 0:
            return []
        handle.seek(start)
        try:
            curve = json.loads(handle.read(length))
        except ValueError:
            return []
        if not isinstance(curve, list) or not all(isinstance(p, dict) for p in curve):
            return []
        handle.truncate(start)
    return curve
