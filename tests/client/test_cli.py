"""`vitcube search …` as a user runs it: the real command, in its own process, against a real
server over HTTP, on SQLite and on PostgreSQL; `watch` under a pseudo-terminal while a real
(surrogate) worker finishes the search."""

from __future__ import annotations

import csv
import fcntl
import io
import json
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.backends import LiveServer
from tests.factories import ADMIN_TOKEN, VIEWER_TOKEN, WORKER_TOKEN, command_trainer, wait_for
from vitcube.client import Client

VITCUBE = Path(sys.executable).parent / "vitcube"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
pytestmark = pytest.mark.slow

# MobileViT v2-0.5 without stages 4 and 5 at 32 px: the surrogate worker answers in milliseconds.
SEARCH = {
    "name": "cli search",
    "base": {"family": "mobilevit_v2", "width": 0.5, "resolution": 32, "dropped_stages": [4, 5]},
    "dataset": {"name": "digits"},
    "budget": {"c": 0.5},
    "strategy": "random",
    "max_trials": 6,
    "parallelism": 2,
    "training": {"epochs": 3, "batch_size": 64},
    "seed": 3,
}


@pytest.fixture
def env(server: LiveServer, tmp_path: Path) -> dict[str, str]:
    """The CLI's environment: the server and an admin token, a profile file of its own."""
    return {
        **os.environ,
        "VITCUBE_SERVER": server.url,
        "VITCUBE_TOKEN": ADMIN_TOKEN,
        "VITCUBE_CONFIG": str(tmp_path / "config.toml"),
        "NO_COLOR": "1",
        "COLUMNS": "160",
    }


def vitcube(
    env: dict[str, str], *args: str, timeout_s: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VITCUBE), *args], env=env, capture_output=True, text=True, timeout=timeout_s
    )


def write_yaml(path: Path, body: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def _surrogate_worker(server: LiveServer, tmp_path: Path) -> subprocess.Popen[bytes]:
    log = (tmp_path / "worker.log").open("wb")
    command = ["worker", "--server", server.url, "--token", WORKER_TOKEN, "--trainer", "surrogate"]
    return subprocess.Popen(
        [str(VITCUBE), *command, "--spool-dir", str(tmp_path / "spool")],
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def _watch_in_a_terminal(
    env: dict[str, str], search_id: int, timeout_s: float, *, interrupt_after: str | None = None
) -> tuple[int, str]:
    """Run `vitcube search watch` with a pseudo-terminal as its stdin/stdout (120 × 40); with
    `interrupt_after`, press Ctrl-C (SIGINT) once that text has been drawn."""
    primary, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    terminal_env = {k: v for k, v in env.items() if k not in ("NO_COLOR", "COLUMNS")}
    terminal_env["TERM"] = "xterm-256color"
    process = subprocess.Popen(
        [str(VITCUBE), "search", "watch", str(search_id), "--interval", "0.3"],
        env=terminal_env,
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
        close_fds=True,
    )
    os.close(secondary)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([primary], [], [], 0.5)
            if ready:
                try:
                    data = os.read(primary, 65536)
                except OSError:  # EIO: the terminal's other side closed (the process ended)
                    break
                if not data:
                    break
                chunks.append(data)
                if interrupt_after and interrupt_after in ANSI.sub("", b"".join(chunks).decode()):
                    process.send_signal(signal.SIGINT)
                    interrupt_after = None
            elif process.poll() is not None:
                break
        code = process.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if process.poll() is None:
            process.kill()
        os.close(primary)
    return code, b"".join(chunks).decode(errors="replace")


def test_a_search_is_created_watched_read_and_asked_from_the_command_line(
    server: LiveServer, env: dict[str, str], tmp_path: Path
) -> None:
    spec = write_yaml(tmp_path / "search.yaml", SEARCH)
    done = vitcube(env, "search", "create", str(spec))
    assert done.returncode == 0, done.stderr
    assert "created search 1 'cli search'" in done.stdout
    assert "vitcube search watch 1" in done.stdout

    worker = _surrogate_worker(server, tmp_path)
    try:
        code, screen = _watch_in_a_terminal(env, 1, timeout_s=180)
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    assert code == 0, screen
    assert "\x1b[" in screen  # drawn as a live terminal view (cursor moves), not plain lines
    text = ANSI.sub("", screen)
    assert "Pareto front" in text and "running" in text and "search 1 completed" in text
    with Client(server.url, VIEWER_TOKEN) as client:
        search = client.get_search(1)
        trials = client.trials(1)
    assert search.state == "completed"

    shown = vitcube(env, "search", "show", "1")
    assert shown.returncode == 0, shown.stderr
    assert "completed" in shown.stdout and f"completed {search.counts.completed}" in shown.stdout
    assert f"trial {search.best.id if search.best else '?'} " in shown.stdout
    assert "epochs trained" in shown.stdout  # compute spent

    listed = vitcube(env, "search", "trials", "1", "--format", "csv")
    assert listed.returncode == 0, listed.stderr
    rows = list(csv.DictReader(io.StringIO(listed.stdout)))
    assert [int(row["id"]) for row in rows] == [t.id for t in trials]
    assert {row["state"] for row in rows} == {t.state for t in trials}
    by_id = {t.id: t for t in trials}
    for row in rows:
        trial = by_id[int(row["id"])]
        assert float(row["w"]) == pytest.approx(trial.effective_factors["w"])
        assert int(row["macs"]) == trial.macs

    completed = vitcube(env, "search", "trials", "1", "--state", "completed", "--format", "json")
    assert completed.returncode == 0, completed.stderr
    assert {t["state"] for t in json.loads(completed.stdout)} == {"completed"}

    formula = vitcube(env, "search", "formula", "1", "--c", "0.3", "--fresh", "--json")
    assert formula.returncode == 0, formula.stderr
    answer = json.loads(formula.stdout)
    assert answer["c"] == pytest.approx(0.3) and answer["macs"] <= answer["max_macs"]
    assert set(answer["factors"]) == {"r", "d_i", "d_m", "w"}
    table = vitcube(env, "search", "formula", "1", "--c", "0.3")
    assert table.returncode == 0 and "± std" in table.stdout
    assert f"{answer['macs']:,} MACs" in table.stdout


def test_ctrl_c_stops_watching_not_the_search(
    server: LiveServer, env: dict[str, str], tmp_path: Path
) -> None:
    spec = write_yaml(tmp_path / "search.yaml", SEARCH)
    assert vitcube(env, "search", "create", str(spec)).returncode == 0  # no worker: it waits
    code, screen = _watch_in_a_terminal(env, 1, timeout_s=120, interrupt_after="Ctrl-C stops")
    text = ANSI.sub("", screen)
    assert code == 0, text
    assert "stopped watching search 1; it goes on" in text and "Traceback" not in text
    with Client(server.url, VIEWER_TOKEN) as client:
        assert client.get_search(1).state == "running"


def test_a_bad_body_is_refused_by_the_dry_run_with_the_servers_message(
    server: LiveServer, env: dict[str, str], tmp_path: Path
) -> None:
    spec = write_yaml(tmp_path / "tiny.yaml", {**SEARCH, "budget": {"c": 0.01}})
    done = vitcube(env, "search", "create", "--dry-run", str(spec))
    assert done.returncode == 1
    assert done.stderr.startswith("error: budget: no network in the space meets max_macs")
    assert "raise the budget" in done.stderr and "Traceback" not in done.stderr

    good = write_yaml(tmp_path / "good.yaml", SEARCH)
    planned = vitcube(env, "search", "create", "--dry-run", str(good))
    assert planned.returncode == 0, planned.stderr
    with Client(server.url, VIEWER_TOKEN) as client:
        plan = client.validate_search(SEARCH)
        assert client.list_searches() == []  # neither dry run created anything
    assert f"{plan.m0:,} MACs" in planned.stdout and f"{plan.max_macs:,} MACs" in planned.stdout
    assert f"smallest {plan.smallest_macs:,} MACs" in planned.stdout
    for reference in plan.references:
        assert f"{reference.macs:,}" in planned.stdout
    # Allowed but likely not meant: said, not refused (ASHA with too few trials to finish any).
    risky = write_yaml(
        tmp_path / "risky.yaml", {**SEARCH, "training": {"epochs": 15, "batch_size": 64}}
    )
    warned = vitcube(env, "search", "create", "--dry-run", str(risky))
    assert warned.returncode == 0, warned.stderr
    assert "warning: schedule asha" in " ".join(warned.stdout.split())


def test_show_says_when_no_connected_worker_can_run_the_searchs_trainer(
    server: LiveServer, env: dict[str, str], tmp_path: Path
) -> None:
    body = {**SEARCH, **command_trainer("det-v2")}
    assert (
        vitcube(env, "search", "create", str(write_yaml(tmp_path / "det.yaml", body))).returncode
        == 0
    )
    with Client(server.url, VIEWER_TOKEN) as client:
        wait_for(lambda: client.trials(1, states=["queued"]), 20)
    shown = vitcube(env, "search", "show", "1")
    assert shown.returncode == 0, shown.stderr
    words = " ".join(shown.stdout.split())
    assert "trainer command:det-v2 (0 connected workers can run it)" in words
    assert (
        "notice no connected worker can run trainer command:det-v2: start one with "
        "vitcube worker --command det-v2='…'"
    ) in words
    asked = httpx.post(
        f"{server.url}/api/trials/lease",
        json={"worker": "det-box", "trainers": ["command:det-v2"]},
        headers={"Authorization": f"Bearer {WORKER_TOKEN}"},
    )
    assert asked.status_code == 200, asked.text
    again = " ".join(vitcube(env, "search", "show", "1").stdout.split())
    assert "trainer command:det-v2 (1 connected worker can run it)" in again
    assert "no connected worker" not in again


def test_stop_resume_and_list(server: LiveServer, env: dict[str, str], tmp_path: Path) -> None:
    spec = write_yaml(tmp_path / "search.json", SEARCH)  # JSON bodies work the same
    spec.write_text(json.dumps(SEARCH))
    assert vitcube(env, "search", "create", str(spec)).returncode == 0
    listed = vitcube(env, "search", "list")
    assert listed.returncode == 0 and "cli search" in listed.stdout and "running" in listed.stdout

    stopped = vitcube(env, "search", "stop", "1")
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout.startswith("search 1 stopped")
    with Client(server.url, VIEWER_TOKEN) as client:
        assert client.get_search(1).state == "stopped"
        wait_for(lambda: not client.trials(1, states=["queued"]), 10, "queued trials stopped")
    again = vitcube(env, "search", "stop", "1")  # stopping twice is no error, and no change
    assert again.returncode == 0 and again.stdout.startswith("search 1 stopped")
    resumed = vitcube(env, "search", "resume", "1")  # only a fail-fast pause can resume
    assert resumed.returncode == 1 and "Traceback" not in resumed.stderr


def test_exit_codes_and_messages_say_what_to_change(
    server: LiveServer, env: dict[str, str], tmp_path: Path
) -> None:
    missing = vitcube(env, "search", "show", "99")
    assert missing.returncode == 1 and missing.stderr.strip() == "error: search 99 does not exist"

    unreadable = vitcube(env, "search", "create", str(tmp_path / "nope.yaml"))
    assert unreadable.returncode == 2 and "cannot read" in unreadable.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    assert vitcube(env, "search", "create", str(broken)).returncode == 2
    scalar = write_yaml(tmp_path / "list.yaml", [1, 2])  # type: ignore[arg-type]
    done = vitcube(env, "search", "create", str(scalar))
    assert done.returncode == 2 and "must hold one mapping" in done.stderr
    assert vitcube(env, "search", "trials", "1", "--state", "done").returncode == 2
    assert vitcube(env, "search", "show", "not-a-number").returncode == 2

    wrong = vitcube({**env, "VITCUBE_TOKEN": "not-a-token-of-this-server"}, "search", "list")
    assert wrong.returncode == 1 and wrong.stderr.startswith("error: ")
    viewer = write_yaml(tmp_path / "s.yaml", SEARCH)
    refused = vitcube({**env, "VITCUBE_TOKEN": VIEWER_TOKEN}, "search", "create", str(viewer))
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    with Client(server.url, VIEWER_TOKEN) as client:
        assert client.list_searches() == []


def test_login_saves_a_profile_that_later_commands_use(
    server: LiveServer, env: dict[str, str], tmp_path: Path
) -> None:
    bare = {k: v for k, v in env.items() if k not in ("VITCUBE_SERVER", "VITCUBE_TOKEN")}
    refused = vitcube(bare, "login", "--server", server.url, "--token", "wrong-token-000000000")
    assert refused.returncode == 1
    assert not (tmp_path / "config.toml").exists()  # a token the server refused is not saved

    saved = vitcube(bare, "login", "--server", server.url, "--token", ADMIN_TOKEN)
    assert saved.returncode == 0, saved.stderr
    config = tmp_path / "config.toml"
    assert config.stat().st_mode & 0o077 == 0  # it holds a token: its owner's only
    spec = write_yaml(tmp_path / "search.yaml", SEARCH)
    created = vitcube(bare, "search", "create", str(spec))  # no flags: the profile's
    assert created.returncode == 0, created.stderr

    saved = vitcube(
        bare, "login", "--profile", "ro", "--server", server.url, "--token", VIEWER_TOKEN
    )
    assert saved.returncode == 0, saved.stderr
    as_viewer = vitcube({**bare, "VITCUBE_PROFILE": "ro"}, "search", "create", str(spec))
    assert as_viewer.returncode == 1  # the viewer profile's token, refused by the server
    unknown = vitcube(bare, "search", "list", "--profile", "nope")
    assert unknown.returncode == 2 and "no profile 'nope'" in unknown.stderr
