"""The built wheel: one import name, `vitcube`, with everything a server and a worker need."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_the_wheel_installs_only_vitcube(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(ROOT)],
        check=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("vitcube-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (top_level,) = [n for n in names if n.endswith(".dist-info/top_level.txt")]
        assert archive.read(top_level).decode().split() == ["vitcube"]
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        assert "vitcube = vitcube.cli:app" in archive.read(entry_points).decode()
    roots = {name.split("/")[0] for name in names}
    assert {r for r in roots if not r.endswith(".dist-info")} == {"vitcube"}
    for needed in (
        "vitcube/models/__init__.py",
        "vitcube/search/strategies.py",
        "vitcube/service/templates/search.html",
        "vitcube/service/static/dashboard.js",
        "vitcube/workers/loop.py",
        "vitcube/migrations/env.py",
        "vitcube/migrations/versions/0001_initial_schema.py",
        "vitcube/migrations/versions/0002_fail_fast.py",
        "vitcube/contract.py",
        "vitcube/cli.py",
        "vitcube/client/cli.py",
        "vitcube/client/api.py",
    ):
        assert needed in names, needed
