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


# -- scheduling on several processes (`make test` runs `pytest -n 2 --dist loadfile`) -------------
#
# loadfile keeps a file on one process, so its module fixtures (servers, trained searches) are
# built once. Two things keep both processes busy to the end: the slowest files are handed out
# first (a slow file collected last ran alone while the other process idled), and the files whose
# slow tests run once per backend are split by backend, each half a unit of its own.
SLOWEST_FIRST = (
    "tests/workers/test_byo_end_to_end.py",
    "tests/workers/test_asha_worker.py",
    "tests/workers/test_preemption.py",
    "tests/service/test_dashboard_scale.py",
    "tests/service/test_concurrency.py",
    "tests/workers/test_worker_service.py",
    "tests/service/test_dashboard_browser.py",
    "tests/service/test_dashboard_compare.py",
    "tests/workers/test_trainer.py",
    "tests/service/test_demo.py",
    "tests/test_export_cli.py",
    "tests/workers/executors/test_conformance.py",
    "tests/examples/test_byo.py",
    "tests/integrations/test_lightning.py",
    "tests/integrations/test_transformers.py",
)
SPLIT_BY_BACKEND = (
    "tests/workers/test_byo_end_to_end.py",
    "tests/workers/test_asha_worker.py",
    "tests/workers/test_preemption.py",
    "tests/workers/test_worker_service.py",
)
BACKENDS = ("sqlite", "postgres")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        path = item.nodeid.split("::", 1)[0]
        return SLOWEST_FIRST.index(path) if path in SLOWEST_FIRST else len(SLOWEST_FIRST)

    items.sort(key=rank)  # stable: the order within a file is kept


def _backend_of(nodeid: str) -> str | None:
    params = nodeid.rsplit("[", 1)[1].rstrip("]").split("-") if nodeid.endswith("]") else []
    return next((p for p in params if p in BACKENDS), None)


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    if config.getoption("dist", None) != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class SplitSlowFilesByBackend(LoadFileScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            scope = str(super()._split_scope(nodeid))
            backend = _backend_of(nodeid) if scope in SPLIT_BY_BACKEND else None
            return f"{scope}::{backend}" if backend else scope

    return SplitSlowFilesByBackend(config, log)
