"""The OpenAPI document tells the truth: schemathesis, run as an outside client would, against a
real server.

A uvicorn server on a fresh SQLite database holds one search whose first trials were leased and
completed over the API, so the fuzzer's ids reach real rows. `schemathesis run` (a subprocess,
the CLI a client would use) then sends schema-generated and schema-violating requests to every
operation as admin, with a fixed seed and a bounded number of examples, and checks that no
answer is a 5xx, that every answer matches the schema declared for its status (including the
error bodies of service.api.responses) and that requests the schema forbids are refused.

Nothing is excluded: the dashboard, /docs and /redoc are not in the schema, and the operations
the fuzzer cannot drive to success (heartbeat/complete/fail need a lease id it cannot know) are
still checked for their refusals.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.factories import (
    ADMIN_TOKEN,
    WORKER,
    create_search,
    lease_one,
    make_settings,
    report_body,
)
from tests.service.conftest import LiveServer
from vitcube.service import db as service_db

pytestmark = pytest.mark.slow

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
CHECKS = "not_a_server_error,response_schema_conformance,negative_data_rejection"
# About 35-50 s on a 2-core machine. To hunt, run the same command by hand with
# more examples.
MAX_EXAMPLES = 40
SEED = 20_240_601


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    url = f"sqlite:///{tmp_path / 'contract.db'}"
    service_db.upgrade(url)
    with LiveServer(make_settings(url)) as live:
        _seed(live.url)
        yield live


def _seed(origin: str) -> None:
    """One search, two of its trials completed over the API (as a worker would)."""
    with httpx.Client(base_url=origin, timeout=30) as client:
        create_search(client)
        for _ in range(2):  # the planner queues the trials in the background
            lease = lease_one(client, worker="contract")
            done = client.post(
                f"/api/trials/{lease['id']}/complete", json=report_body(lease), headers=WORKER
            )
            assert done.status_code == 200, done.text


def test_every_operation_answers_as_its_openapi_document_says(
    server: LiveServer, tmp_path: Path
) -> None:
    if not SCHEMATHESIS.exists():  # pragma: no cover - `make install-dev` installs it
        pytest.skip(f"{SCHEMATHESIS} is not installed: `make install-dev`")
    command = [
        str(SCHEMATHESIS), "run", f"{server.url}/openapi.json",
        "--header", f"Authorization: Bearer {ADMIN_TOKEN}",
        "--checks", CHECKS,
        "--max-examples", str(MAX_EXAMPLES),
        "--seed", str(SEED),
        "--workers", "1",
        "--request-timeout", "30",
        "--no-color",
    ]  # fmt: skip
    # In a scratch directory: schemathesis keeps a cache in its working directory.
    run = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, f"schemathesis found contract breaks:\n{output}"
    assert "API Operations" in output and "Selected: 0/" not in output, output
