"""Fixtures for the workers tests: the repository root first on sys.path, a real server.

`live_server` starts a real `vitcube serve` subprocess on a fresh SQLite database with short
leases; `start_worker` starts real `python -m workers` processes against it.
"""

from __future__ import annotations

import sys
from pathlib import Path

# pyproject's `pythonpath = ["tests"]` puts tests/ ahead of the repository root; there
# tests/workers and tests/models (no __init__.py) would shadow the real `workers` and `models`
# packages as namespace packages. Keep the repository root first (as tests/models does).
_REPO_ROOT = str(Path(__file__).resolve().parents[2])
if sys.path[0] != _REPO_ROOT:
    sys.path.insert(0, _REPO_ROOT)
