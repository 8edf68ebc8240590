"""examples/: every example is a create-search body the server accepts, checked with the real
`vitcube search create --dry-run` against a live server (SQLite), which creates nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.backends import LiveServer
from tests.factories import ADMIN_TOKEN, make_settings
from vitcube.client import Client
from vitcube.contract import SearchPlan
from vitcube.service import db as service_db
from vitcube.service.demo import DemoOptions, search_body

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
VITCUBE = Path(sys.executable).parent / "vitcube"
# examples/byo/: searches trained by the user's own scripts (tests/examples/test_byo.py runs them).
EXAMPLE_FILES = sorted(EXAMPLES.glob("*.yaml")) + sorted((EXAMPLES / "byo").glob("*.yaml"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    url = f"sqlite:///{tmp_path_factory.mktemp('examples') / 'vitcube.db'}"
    service_db.upgrade(url)
    with LiveServer(make_settings(url)) as live:
        yield live


@pytest.fixture
def client(server: LiveServer) -> Iterator[Client]:
    with Client(server.url, ADMIN_TOKEN) as api:
        yield api


def run_cli(args: list[str], server: LiveServer, config: Path) -> subprocess.CompletedProcess[str]:
    """`vitcube ARGS --server URL --token T`, with no profile or connection from the caller's
    environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VITCUBE_")}
    env["VITCUBE_CONFIG"] = str(config)
    return subprocess.run(
        [str(VITCUBE), *args, "--server", server.url, "--token", ADMIN_TOKEN],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_there_is_an_example_per_use() -> None:
    names = {str(path.relative_to(EXAMPLES)) for path in EXAMPLE_FILES}
    assert {
        "demo.yaml",
        "mobilevit_v2_imagefolder_asha.yaml",
        "pareto_min_macs.yaml",
        "byo/digits_plain.yaml",
        "byo/digits_lightning.yaml",
        "byo/shell.yaml",
    } <= names
    listed = (EXAMPLES / "README.md").read_text()
    assert all(name in listed for name in names)
    byo = (EXAMPLES / "byo" / "README.md").read_text()
    for script in ("train_digits.py", "train_lightning.py", "train.sh"):
        assert (EXAMPLES / "byo" / script).is_file() and script in byo


@pytest.mark.parametrize(
    ("path", "script"),
    [
        ("byo/digits_plain.yaml", "train_digits.py"),
        ("byo/digits_lightning.yaml", "train_lightning.py"),
        ("byo/shell.yaml", "train.sh"),
    ],
)
def test_a_byo_search_names_the_label_its_worker_line_registers(path: str, script: str) -> None:
    text = (EXAMPLES / path).read_text()
    label = yaml.safe_load(text)["trainer"]["name"]
    assert f"--command {label}='" in text and f"examples/byo/{script}'" in text


def test_demo_yaml_is_the_search_vitcube_demo_creates() -> None:
    body = yaml.safe_load((EXAMPLES / "demo.yaml").read_text())
    expected = search_body(DemoOptions())
    expected["space"] = {factor: list(bounds) for factor, bounds in expected["space"].items()}
    assert body == expected


def macs_shown(macs: int) -> tuple[str, str]:
    """A MAC count as the CLI may print it exactly: plain or with thousands separators."""
    return str(macs), f"{macs:,}"


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda path: str(path.relative_to(EXAMPLES)))
def test_dry_run_shows_the_plan_and_creates_nothing(
    path: Path, server: LiveServer, client: Client, tmp_path: Path
) -> None:
    plan: SearchPlan = client.validate_search(yaml.safe_load(path.read_text()))

    done = run_cli(["search", "create", str(path), "--dry-run"], server, tmp_path / "config.toml")

    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "m0" in out
    shown: dict[str, int] = {
        "m0": plan.m0,
        "budget": plan.max_macs,
        **({"budget's floor": plan.min_macs} if plan.min_macs else {}),
        "smallest reachable": plan.smallest_macs,
        **{reference.name or reference.kind: reference.macs for reference in plan.references},
    }
    for what, macs in shown.items():
        assert any(text in out for text in macs_shown(macs)), f"{what} ({macs} MACs) not in {out}"
    for reference in plan.references:
        assert (reference.name or reference.kind.removeprefix("reference:")) in out
    assert client.list_searches() == []


def test_a_broken_body_is_refused_with_the_servers_message(
    server: LiveServer, client: Client, tmp_path: Path
) -> None:
    body = yaml.safe_load((EXAMPLES / "demo.yaml").read_text())
    body["space"]["r"] = [1.5, 0.9]
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump(body))

    done = run_cli(["search", "create", str(broken), "--dry-run"], server, tmp_path / "config.toml")

    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr.startswith("error: ")
    assert "space.r: min 1.5 must be below max 0.9" in done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert client.list_searches() == []
