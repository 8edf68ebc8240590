"""Bring your own training script, end to end: a real `vitcube serve` (SQLite and PostgreSQL),
real `vitcube worker --command` processes, and the scripts of examples/byo/ really training.

- the plain-PyTorch example completes a search, weights included;
- its script killed with SIGKILL alone is retried and resumes from its SDK checkpoint; then the
  worker itself killed with SIGKILL (the script dies with it) and an heir on another worker
  resumes — at most one epoch lost each time;
- the shell-only example under ASHA, with a minimised metric: rungs promoted, segments resumed,
  the best trial the lowest value;
- a script that exits 1 pauses its search after three identical failures, its stderr line the
  reason; a script that hangs is killed after --report-timeout;
- a builtin-only worker and a worker with another label never lease a command trial.
"""

from __future__ import annotations

import re
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from tests.workers.conftest import VITCUBE, LiveServer, WorkerProcess, wait_for

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
BYO = ROOT / "examples" / "byo"
# A killed worker's trial is leased again within seconds.
SERVER_LEASE_SECONDS = 3.0


def _example(name: str, **overrides: Any) -> dict[str, Any]:
    body = yaml.safe_load((BYO / name).read_text())
    body.update(overrides)
    return body


def _create(server: LiveServer, body: dict[str, Any]) -> int:
    return server.client.create_search(body).id


def _search(server: LiveServer, search_id: int) -> dict[str, Any]:
    return server.client.get_search(search_id).model_dump(mode="json")


def _plain_command(max_steps: int) -> str:
    return f"digits={sys.executable} {BYO / 'train_digits.py'} --max-steps {max_steps}"


def _script_of(worker: WorkerProcess) -> psutil.Process | None:
    """The training script the worker runs now (its child), if any."""
    children = psutil.Process(worker.process.pid).children()
    return children[0] if children else None


def _epochs_logged(worker: WorkerProcess) -> list[int]:
    return [int(e) for e in re.findall(r"epoch (\d+)/\d+:", worker.log())]


def _whole_curve(trial: dict[str, Any], epochs: int) -> None:
    assert [point["epoch"] for point in trial["curve"]] == list(range(1, epochs + 1)), trial


def test_the_plain_example_completes_a_search_with_its_weights(
    server: LiveServer, start_worker: Callable[..., WorkerProcess]
) -> None:
    body = _example(
        "digits_plain.yaml",
        strategy="random",
        max_trials=2,
        parallelism=1,
        training={"epochs": 2, "batch_size": 64},
    )
    search_id = _create(server, body)
    worker = start_worker(server, "--command", _plain_command(2), "--max-trials", "2")
    assert worker.wait(timeout_s=240) == 0, worker.log()[-3000:]
    search = wait_for(
        lambda: (s := _search(server, search_id))["state"] == "completed" and s,
        30,
        "the search to complete",
    )
    trials = server.trials(search_id)
    assert [t["state"] for t in trials] == ["completed", "completed"], trials
    for trial in trials:
        _whole_curve(trial, 2)
        assert 0.0 <= trial["value"] <= 1.0 and trial["value"] == trial["top1"]
        assert trial["weights_bytes"] and trial["weights_bytes"] > 0, trial
    assert search["best"]["value"] == max(t["value"] for t in trials)


EPOCHS = 9


@pytest.fixture(autouse=True)
def attempts_for_every_fault(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before the server starts: one trial goes through three faults in a row here, each of
    which costs an attempt (the default allows three)."""
    monkeypatch.setenv("VITCUBE_MAX_ATTEMPTS", "5")


def test_a_killed_script_a_sigterm_and_a_killed_worker_each_lose_at_most_one_epoch(
    server: LiveServer, start_worker: Callable[..., WorkerProcess]
) -> None:
    body = _example(
        "digits_plain.yaml",
        strategy="random",
        max_trials=1,
        parallelism=1,
        training={"epochs": EPOCHS, "batch_size": 32},
    )
    search_id = _create(server, body)
    first = start_worker(server, "--command", _plain_command(4), name="first", own_home=True)

    def checkpoint_at_least(epoch: int) -> dict[str, Any] | None:
        trial = server.trial(search_id)
        checkpoint = trial.get("checkpoint")
        ok = trial.get("state") == "running" and checkpoint and checkpoint["epoch"] >= epoch
        return dict(checkpoint) if ok else None

    # 1. The script alone, killed from outside (as the OOM killer would): a retryable failure.
    checkpoint = wait_for(lambda: checkpoint_at_least(2), 180, "a checkpoint at epoch >= 2")
    script = _script_of(first)
    assert script is not None, first.log()[-2000:]
    script.kill()
    reported_before = max(_epochs_logged(first))
    wait_for(
        lambda: "SIGKILL" in first.log() or "signal 9" in first.log(),
        60,
        "the worker to see its script killed",
    )
    # The same worker leases it again and resumes from the SDK checkpoint.
    resumed = wait_for(
        lambda: (t := server.trial(search_id))["state"] == "running" and t["attempts"] == 1 and t,
        60,
        "the trial leased again",
    )
    assert resumed["error"] is None
    wait_for(lambda: checkpoint_at_least(reported_before + 1), 180, "a checkpoint after resume")
    log = first.log()
    assert "resum" in log.lower(), log[-3000:]
    lost_to_script = reported_before - checkpoint["epoch"]
    assert lost_to_script <= 1, (reported_before, checkpoint)

    # 2. SIGTERM to the worker (a preemption): the script is told to stop (SIGTERM and the
    # stop file), the worker stores its last checkpoint, hands the trial back and exits 0.
    script = _script_of(first)
    assert script is not None
    first.signal(signal.SIGTERM)
    assert first.wait(timeout_s=90) == 0, first.log()[-3000:]
    script.wait(timeout=10)
    handed_back = server.trial(search_id)
    assert handed_back["state"] == "queued", handed_back
    assert "SIGTERM" in handed_back["error"], handed_back
    held = handed_back["checkpoint"]
    assert max(_epochs_logged(first)) - held["epoch"] <= 1, (held, first.log()[-2000:])
    second = start_worker(server, "--command", _plain_command(4), name="second", own_home=True)
    wait_for(lambda: checkpoint_at_least(held["epoch"] + 1), 180, "the second worker's checkpoint")
    assert f"resuming from its checkpoint at epoch {held['epoch']}" in second.log()

    # 3. The worker itself, SIGKILLed: no goodbye; the kernel kills its script with it.
    script = _script_of(second)
    assert script is not None
    second.kill()
    script.wait(timeout=10)  # PR_SET_PDEATHSIG: the script does not outlive its worker
    trained_by_second = max(_epochs_logged(second))
    assert trained_by_second < EPOCHS, "the trial finished before the kill; make epochs longer"
    heir = start_worker(
        server, "--command", _plain_command(4), "--max-trials", "1", name="heir", own_home=True
    )
    assert heir.wait(timeout_s=240) == 0, heir.log()[-3000:]
    trial = server.trial(search_id)
    assert trial["state"] == "completed", trial
    _whole_curve(trial, EPOCHS)
    assert trial["attempts"] == 3  # the killed script, the SIGTERM and the expired lease
    assert trained_by_second - trial["resumed_from_epoch"] <= 1, trial
    assert _epochs_logged(heir) == list(range(trial["resumed_from_epoch"] + 1, EPOCHS + 1))
    assert trial["weights_bytes"] and trial["weights_bytes"] > 0


def test_the_shell_example_under_asha_promotes_resumes_and_minimises(
    server: LiveServer, start_worker: Callable[..., WorkerProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VITCUBE", str(VITCUBE))
    monkeypatch.setenv("VITCUBE_EXAMPLE_EPOCH_S", "0")
    body = _example(
        "shell.yaml",
        strategy="random",
        max_trials=6,
        parallelism=3,
        training={"epochs": 4},
        schedule={"kind": "asha", "min_epochs": 1, "eta": 2},
    )
    search_id = _create(server, body)
    command = f"shell=bash {BYO / 'train.sh'}"
    workers = [start_worker(server, "--command", command, name=f"w{i}") for i in range(2)]
    search = wait_for(
        lambda: (s := _search(server, search_id))["state"] == "completed" and s,
        300,
        "the ASHA search to complete",
    )
    trials = server.trials(search_id)
    logs = [w.log()[-2000:] for w in workers]
    searched = [t for t in trials if t["kind"] == "search"]
    promoted = [t for t in searched if len(t["rung_values"]) >= 2]
    assert promoted, (trials, logs)
    for trial in promoted:
        # Each later segment resumed from the shell's checkpoint and continued the curve.
        _whole_curve(trial, max(int(epoch) for epoch in trial["rung_values"]))
        assert trial["resumed_from_epoch"], trial
    assert any(t["state"] == "paused" for t in searched), trials  # some were not promoted
    # val_error is minimised: the best is the lowest, and promotions took the lowest at rung 1.
    full = [t for t in trials if t["state"] == "completed"]
    assert search["best"]["value"] == min(t["value"] for t in full)
    assert search["best"]["top1"] is None
    rung_one = {t["id"]: t["rung_values"]["1"] for t in searched if "1" in t["rung_values"]}
    left = set(rung_one) - {t["id"] for t in promoted}
    if left:
        highest_promoted = max(rung_one[t["id"]] for t in promoted)
        assert highest_promoted <= min(rung_one[i] for i in left), rung_one


def test_a_script_that_exits_1_pauses_the_search_with_its_stderr_line(
    server: LiveServer, start_worker: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    script = tmp_path / "broken.py"
    script.write_text(
        "import sys\n"
        "print('loading labels', flush=True)\n"
        "sys.stderr.write('FileNotFoundError: /data/labels.csv\\n')\n"
        "sys.exit(1)\n"
    )
    body = _example("digits_plain.yaml", strategy="random", max_trials=6, parallelism=1)
    search_id = _create(server, body)
    worker = start_worker(server, "--command", f"digits={sys.executable} {script}")
    search = wait_for(
        lambda: (s := _search(server, search_id))["state"] == "paused" and s,
        120,
        "fail fast to pause the search",
    )
    assert "FileNotFoundError: /data/labels.csv" in search["error"], search["error"]
    failed = [t for t in server.trials(search_id) if t["state"] == "failed"]
    assert len(failed) == 3, failed
    for trial in failed:
        assert trial["error"].splitlines()[0] == "FileNotFoundError: /data/labels.csv", trial
        assert "exited with code 1" in trial["error"]
    assert "loading labels" in worker.log()  # stdout goes to the worker's log, untouched


def test_a_script_that_never_reports_is_killed_after_the_report_timeout(
    server: LiveServer, start_worker: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    script = tmp_path / "hang.py"
    script.write_text("import time\ntime.sleep(600)\n")
    search_id = _create(server, _example("digits_plain.yaml", max_trials=1, parallelism=1))
    worker = start_worker(
        server,
        "--command",
        f"digits={sys.executable} {script}",
        "--report-timeout",
        "3",
        "--max-trials",
        "1",
    )
    started = time.monotonic()
    assert worker.wait(timeout_s=60) == 0, worker.log()[-3000:]
    assert time.monotonic() - started < 45
    trial = server.trial(search_id)
    assert trial["state"] == "failed", trial
    assert "report-timeout" in trial["error"], trial["error"]
    # (process_iter with attrs skips processes that end or turn zombie while it reads them)
    commands = [" ".join(p.info["cmdline"] or []) for p in psutil.process_iter(["cmdline"])]
    assert not any(str(script) in command for command in commands), "the hung script lives on"


def test_only_a_worker_given_the_label_leases_a_command_trial(
    server: LiveServer, start_worker: Callable[..., WorkerProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VITCUBE", str(VITCUBE))
    monkeypatch.setenv("VITCUBE_EXAMPLE_EPOCH_S", "0")
    body = _example("shell.yaml", max_trials=1, parallelism=1, training={"epochs": 1})
    search_id = _create(server, body)
    builtin = start_worker(server, name="builtin-only")
    other = start_worker(server, "--command", f"other=bash {BYO / 'train.sh'}", name="other")

    # Both ask for leases; neither may take the trial, and the search says why it waits.
    def asked(names: set[str]) -> bool:
        return names <= {w["worker"] for w in server.http.get("/api/workers").json()}

    wait_for(lambda: asked({"builtin-only", "other"}), 60, "both workers to ask for a lease")
    time.sleep(2)
    assert server.trial(search_id)["state"] == "queued"
    notice = _search(server, search_id)["notice"]
    assert notice and "command:shell" in notice, notice
    right = start_worker(
        server, "--command", f"shell=bash {BYO / 'train.sh'}", "--max-trials", "1", name="right"
    )
    assert right.wait(timeout_s=120) == 0, right.log()[-3000:]
    trial = server.trial(search_id)
    assert trial["state"] == "completed" and trial["worker"] == "right", trial
    for worker in (builtin, other):
        assert worker.process.poll() is None
        assert f"trial {trial['id']}" not in worker.log()
