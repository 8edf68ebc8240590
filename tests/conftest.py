"""Suite-wide fixtures. Package-specific fixtures live beside their tests."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def test_output_dir() -> Path:
    """test-output/: screenshots and logs a person may want to look at after a run."""
    out = REPO_ROOT / "test-output"
    out.mkdir(exist_ok=True)
    return out
