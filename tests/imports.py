"""What a fresh interpreter loads: the tests that keep imports light (a GPU box must not pay for
the server, the web process not for BoTorch) run their code through `modules_loaded_by`."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence


def modules_loaded_by(code: str, watched: Sequence[str], *, timeout_s: float = 120) -> list[str]:
    """Run `code` in a new Python process; the modules of `watched` it loaded, sorted.

    A watched name matches that module and its submodules ("torch" matches "torch.nn").
    """
    report = (
        "\nimport json as _json, sys as _sys\n"
        f"_watched = {list(watched)!r}\n"
        "print(_json.dumps(sorted(m for m in _sys.modules"
        " if any(m == w or m.startswith(w + '.') for w in _watched))))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code + report], capture_output=True, text=True, timeout=timeout_s
    )
    assert done.returncode == 0, done.stderr
    return list(json.loads(done.stdout.strip().splitlines()[-1]))
