"""The command executor runs real scripts: tiny Python files that speak `vitcube.channel`.

Each test writes a script into tmp_path, drives `CommandExecutor.run` with a segment whose
events and checkpoints record what the executor did, and asserts what a user would see: the
outcome, the failure and its message, what was uploaded, and that no process outlives the
trial. The end-to-end test runs the real `vitcube worker --command` against a real server.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.factories import trial_lease
from vitcube.contract import TrialLease
from vitcube.workers.cli import group_gpus
from vitcube.workers.executors import Control, Segment, TrainingAborted, TrialFailed
from vitcube.workers.executors.command import (
    CommandExecutor,
    CommandSpecError,
    parse_command_flag,
    parse_command_flags,
)
from vitcube.workers.executors.sealed import seal, unseal

WORKER = [sys.executable, "-m", "vitcube.workers"]

# What every test script starts with: the trial file, and helpers that append channel lines.
PRELUDE = """\
import json, os, signal, subprocess, sys, time
from pathlib import Path
from vitcube.channel import CHANNEL_ENV, STOP_FILE_ENV, TRIAL_FILE_ENV, Message, TrialFile, append

trial = TrialFile.read(os.environ[TRIAL_FILE_ENV])
channel = os.environ[CHANNEL_ENV]
stop_file = Path(os.environ[STOP_FILE_ENV])
terminated = []
signal.signal(signal.SIGTERM, lambda *_: terminated.append(True))

def report(epoch, **metrics):
    append(channel, Message("report", epoch=epoch, metrics=metrics))

def checkpoint(epoch, state):
    path = Path(trial.checkpoint_dir) / f"epoch-{epoch}.json"
    path.with_suffix(".tmp").write_text(json.dumps(state))
    path.with_suffix(".tmp").replace(path)
    append(channel, Message("checkpoint", epoch=epoch, path=str(path)))

def wait_for_sigterm():
    deadline = time.monotonic() + 20
    while not terminated and time.monotonic() < deadline:
        time.sleep(0.01)
"""


@dataclass
class RecordingEvents:
    """SegmentEvents that keep every epoch; `then` runs after an epoch (to stop, to signal)."""

    epochs: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    then: Callable[[int], None] | None = None

    def on_start(self, *, epochs: int, steps_per_epoch: int, train_images: int) -> None:
        pass

    def on_step(
        self, *, epoch: int, step: int, loss: float, images_per_s: float, lr: float
    ) -> None:
        pass

    def on_epoch(self, epoch: int, metrics: Mapping[str, float]) -> None:
        self.epochs.append((epoch, dict(metrics)))
        if self.then is not None:
            self.then(epoch)


@dataclass
class RecordingCheckpoints:
    """SegmentCheckpoints that hand out `resume` and keep what was submitted (the file's
    content at submission, as the uploader reads it)."""

    resume: Path | None = None
    submitted: list[tuple[int, Any]] = field(default_factory=list)
    curves: list[list[int]] = field(default_factory=list)  # the epochs each file carried

    def resume_path(self) -> Path | None:
        return self.resume

    def discard(self, reason: str) -> None:
        raise AssertionError(f"a command trainer's checkpoint is never discarded: {reason}")

    def submit(self, path: Path, *, epoch: int, step: int = 0) -> None:
        # What a later segment would get: the script's file with the curve cut off (sealed).
        seen = path.with_name(f"{path.name}.downloaded")
        shutil.copyfile(path, seen)
        self.curves.append([point["epoch"] for point in unseal(seen)])
        self.submitted.append((epoch, json.loads(seen.read_text())))


@dataclass
class Run:
    """One segment of a test script: the executor, its segment and what they recorded."""

    executor: CommandExecutor
    segment: Segment
    events: RecordingEvents
    checkpoints: RecordingCheckpoints
    log: list[str]

    @property
    def control(self) -> Control:
        return self.segment.control

    def __call__(self) -> Any:
        return self.executor.run(self.segment)

    def trial_file(self) -> dict[str, Any]:
        (path,) = self.segment.scratch.glob("command-*/trial.json")
        return dict(json.loads(path.read_text()))


def command_run(
    tmp_path: Path,
    body: str,
    *,
    lease: TrialLease | None = None,
    report_timeout_s: float = 20.0,
    grace_s: float = 10.0,
    resume: Path | None = None,
) -> Run:
    script = tmp_path / "train.py"
    script.write_text(PRELUDE + textwrap.dedent(body))
    workdir = tmp_path / "work"
    workdir.mkdir(exist_ok=True)
    scratch = tmp_path / "scratch"
    scratch.mkdir(exist_ok=True)
    log: list[str] = []
    events = RecordingEvents()
    checkpoints = RecordingCheckpoints(resume=resume)
    segment = Segment(
        lease=lease or trial_lease(training={"epochs": 3}),
        control=Control(),
        events=events,
        checkpoints=checkpoints,
        scratch=scratch,
        log=log.append,
    )
    executor = CommandExecutor(
        "command:train",
        [sys.executable, str(script)],
        workdir,
        report_timeout_s,
        grace_s=grace_s,
    )
    return Run(executor, segment, events, checkpoints, log)


def alive(pid: int) -> bool:
    """Whether a process runs (a zombie waiting for its reaper does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


# -- segments ---------------------------------------------------------------------------------


def test_a_full_segment_reports_every_epoch_and_its_best(tmp_path: Path) -> None:
    run = command_run(
        tmp_path,
        """
        import torch
        assert trial.checkpoint is None and trial.from_epoch == 0 and trial.to_epoch == 3
        Path("cwd.txt").write_text(os.getcwd() + " " + os.environ["PYTHONUNBUFFERED"])
        for epoch, top1 in ((1, 0.5), (2, 0.75), (3, 0.7)):
            print(f"epoch {epoch} done")
            report(epoch, val_top1=top1, train_loss=2.0 / epoch)
        print("a warning on stderr", file=sys.stderr)
        torch.save({"fc.weight": torch.ones(2, 3)}, "weights.pt")
        append(channel, Message("weights", path="weights.pt"))
        """,
    )
    outcome = run()
    assert outcome.stopped is False
    assert outcome.value == 0.75 and outcome.best_epoch == 2
    assert [p["epoch"] for p in outcome.curve] == [1, 2, 3]
    assert outcome.curve[2] == {"epoch": 3, "val_top1": 0.7, "train_loss": pytest.approx(2 / 3)}
    assert [epoch for epoch, _ in run.events.epochs] == [1, 2, 3]
    assert outcome.params == 10**6 and outcome.macs == 10**8
    assert outcome.resumed_from_epoch is None and outcome.epochs_trained == 3
    assert outcome.report()["top1"] == 0.75
    # The script ran in --workdir, unbuffered; its output is in the worker's log, by trial.
    workdir = tmp_path / "work"
    assert (workdir / "cwd.txt").read_text() == f"{workdir} 1"
    assert "[trial 3] epoch 2 done" in run.log
    assert "[trial 3] a warning on stderr" in run.log
    assert any("running command:train" in line and "epochs 1-3 of 3" in line for line in run.log)
    # Its weights, converted to the format vitcube export reads.
    import torch

    from vitcube.workers.checkpoint import WEIGHTS_FORMAT

    assert outcome.weights_path is not None
    weights = torch.load(outcome.weights_path, weights_only=True)
    assert weights["format"] == WEIGHTS_FORMAT and weights["trial_id"] == 3
    assert torch.equal(weights["state_dict"]["fc.weight"], torch.ones(2, 3))
    # The trial file says what the SDK needs.
    described = run.trial_file()
    assert described["metric"] == {"name": "val_top1", "goal": "maximize"}
    assert described["epochs"] == 3 and described["checkpoint"] is None
    assert Path(described["checkpoint_dir"]).is_dir()


def test_a_resumed_segment_gets_its_checkpoint_and_submits_new_ones(tmp_path: Path) -> None:
    saved = tmp_path / "from-the-server.json"
    saved.write_text(json.dumps({"epoch": 2, "weights": [1, 2]}))
    # The earlier segment's curve travels sealed onto its checkpoint.
    seal(saved, [{"epoch": 1, "val_loss": 0.9}, {"epoch": 2, "val_loss": 0.2}])
    lease = trial_lease(
        training={"epochs": 6},
        from_epoch=2,
        to_epoch=4,
        metric={"name": "val_loss", "goal": "minimize"},
    )
    run = command_run(
        tmp_path,
        """
        state = json.loads(Path(trial.checkpoint).read_text())
        assert (trial.from_epoch, trial.to_epoch, trial.epochs) == (2, 4, 6), trial
        for epoch in range(state["epoch"] + 1, trial.to_epoch + 1):
            report(epoch, val_loss=1.0 / epoch)
            checkpoint(epoch, {"epoch": epoch, "from": state["epoch"]})
        """,
        lease=lease,
        resume=saved,
    )
    outcome = run()
    assert run.trial_file()["checkpoint"] == str(saved)
    assert run.checkpoints.submitted == [(3, {"epoch": 3, "from": 2}), (4, {"epoch": 4, "from": 2})]
    assert run.checkpoints.curves == [[1, 2, 3], [1, 2, 3, 4]]
    # The whole run's curve, and its best epoch over every segment (minimised: the lowest).
    assert [p["epoch"] for p in outcome.curve] == [1, 2, 3, 4]
    assert outcome.value == 0.2 and outcome.best_epoch == 2
    assert outcome.resumed_from_epoch == 2 and outcome.epochs_trained == 2
    assert outcome.weights_path is None  # the script saved none


def test_the_server_s_stop_reaches_the_script_and_stops_the_trial(tmp_path: Path) -> None:
    run = command_run(
        tmp_path,
        """
        report(1, val_top1=0.4)
        wait_for_sigterm()
        Path("seen.txt").write_text(f"{bool(terminated)} {stop_file.exists()}")
        """,
    )
    run.events.then = lambda epoch: run.control.stop.set()
    outcome = run()
    assert (tmp_path / "work" / "seen.txt").read_text() == "True True"
    assert outcome.stopped is True
    assert outcome.value == 0.4 and [p["epoch"] for p in outcome.curve] == [1]


def test_a_stop_the_script_ignores_is_killed_after_the_grace_period(tmp_path: Path) -> None:
    run = command_run(
        tmp_path,
        """
        report(1, val_top1=0.4)
        time.sleep(30)
        """,
        grace_s=0.5,
    )
    run.events.then = lambda epoch: run.control.stop.set()
    started = time.monotonic()
    outcome = run()
    assert time.monotonic() - started < 10
    assert outcome.stopped is True and outcome.value == 0.4
    assert any("did not exit within 0.5 s of SIGTERM: killed" in line for line in run.log)


def test_a_script_that_dies_of_the_stop_s_sigterm_is_stopped_too(tmp_path: Path) -> None:
    run = command_run(
        tmp_path,
        """
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # no handler: SIGTERM kills it
        report(1, val_top1=0.4)
        report(2, val_top1=0.3)
        time.sleep(30)
        """,
    )
    run.events.then = lambda epoch: run.control.stop.set() if epoch == 2 else None
    outcome = run()
    assert outcome.stopped is True
    assert outcome.value == 0.4 and outcome.best_epoch == 1
    assert [p["epoch"] for p in outcome.curve] == [1, 2]


def test_an_interrupt_saves_a_checkpoint_then_hands_the_trial_back(tmp_path: Path) -> None:
    run = command_run(
        tmp_path,
        """
        report(1, val_top1=0.4)
        wait_for_sigterm()
        checkpoint(1, {"epoch": 1, "saved_on": "SIGTERM" if terminated else "nothing"})
        """,
    )
    run.events.then = lambda epoch: run.control.interrupted.set()
    with pytest.raises(TrainingAborted) as aborted:
        run()
    assert aborted.value.reason == "interrupted"
    assert run.checkpoints.submitted == [(1, {"epoch": 1, "saved_on": "SIGTERM"})]


def test_a_lost_lease_kills_the_script_at_once(tmp_path: Path) -> None:
    run = command_run(
        tmp_path,
        """
        Path("pid").write_text(str(os.getpid()))
        report(1, val_top1=0.4)
        time.sleep(30)
        """,
    )
    run.events.then = lambda epoch: run.control.lease_lost.set()
    started = time.monotonic()
    with pytest.raises(TrainingAborted) as aborted:
        run()
    assert aborted.value.reason == "lease_lost"
    assert time.monotonic() - started < 10
    assert not alive(int((tmp_path / "work" / "pid").read_text()))


def test_a_worker_killed_with_minus_9_takes_its_script_along(tmp_path: Path) -> None:
    """A process that runs the executor, as the worker does: kill -9 it, and the script it
    started must not live on (holding a GPU the next worker needs)."""
    driver = tmp_path / "worker.py"
    driver.write_text(
        textwrap.dedent(
            f"""
            import sys
            from pathlib import Path
            sys.path[:0] = {sys.path!r}
            from tests.workers.executors.test_command import command_run
            body = "Path('pid').write_text(str(os.getpid()))\\ntime.sleep(60)\\n"
            command_run(Path({str(tmp_path)!r}), body)()
            """
        )
    )
    worker = subprocess.Popen([sys.executable, str(driver)], cwd=Path(__file__).parents[3])
    try:
        pid_file = tmp_path / "work" / "pid"
        deadline = time.monotonic() + 30
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        script = int(pid_file.read_text())
        assert alive(script)
        worker.kill()
        worker.wait()
        deadline = time.monotonic() + 5
        while alive(script) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(script)
    finally:
        worker.kill()
        worker.wait()


# -- failures ---------------------------------------------------------------------------------


def test_exit_75_is_a_retryable_failure(tmp_path: Path) -> None:
    run = command_run(
        tmp_path,
        """
        report(1, val_top1=0.4)
        print("the data server is down", file=sys.stderr)
        sys.exit(75)
        """,
    )
    with pytest.raises(TrialFailed) as failed:
        run()
    assert failed.value.retry is True
    assert "exited with code 75" in str(failed.value)
    assert "the data server is down" in str(failed.value)


def test_a_kill_9_from_outside_is_a_retryable_failure(tmp_path: Path) -> None:
    run = command_run(
        tmp_path,
        """
        report(1, val_top1=0.4)
        os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer would
        """,
    )
    with pytest.raises(TrialFailed) as failed:
        run()
    assert failed.value.retry is True
    assert "killed by SIGKILL (signal 9), which the worker did not send" in str(failed.value)


def test_a_crash_fails_for_good_with_the_exception_as_the_first_line(tmp_path: Path) -> None:
    run = command_run(
        tmp_path,
        """
        print("UserWarning: something harmless", file=sys.stderr)
        def load(root):
            raise FileNotFoundError(f"no images under {root}")
        load("/data/coco")
        """,
    )
    with pytest.raises(TrialFailed) as failed:
        run()
    lines = str(failed.value).splitlines()
    assert failed.value.retry is False
    assert lines[0] == "FileNotFoundError: no images under /data/coco"
    assert lines[1] == "(command train exited with code 1)"
    assert "Traceback (most recent call last):" in lines
    assert "UserWarning: something harmless" in lines  # the stderr tail follows


def test_a_crash_without_a_traceback_leads_with_its_first_stderr_line(tmp_path: Path) -> None:
    run = command_run(
        tmp_path,
        """
        print("", file=sys.stderr)
        print("error: --config x.yaml: no such file", file=sys.stderr)
        print("usage: train.py --config FILE", file=sys.stderr)
        sys.exit(2)
        """,
    )
    with pytest.raises(TrialFailed) as failed:
        run()
    lines = str(failed.value).splitlines()
    assert lines[:2] == [
        "error: --config x.yaml: no such file",
        "(command train exited with code 2)",
    ]
    assert failed.value.retry is False


def test_a_flood_of_stderr_fits_in_the_failure_the_server_takes(tmp_path: Path) -> None:
    run = command_run(
        tmp_path,
        """
        for line in range(200):
            print(f"line {line}: " + "x" * 5000, file=sys.stderr)
        sys.exit(1)
        """,
    )
    with pytest.raises(TrialFailed) as failed:
        run()
    message = str(failed.value)
    assert len(message) <= 20_000  # TrialFailure.error's limit
    assert message.startswith("line 0: xxx")
    assert message.splitlines()[1] == "(command train exited with code 1)"
    assert "line 199: xxx" in message


def test_exit_0_before_to_epoch_without_a_stop_is_a_failure(tmp_path: Path) -> None:
    run = command_run(tmp_path, "report(1, val_top1=0.4)\n")
    with pytest.raises(TrialFailed) as failed:
        run()
    assert failed.value.retry is False
    assert str(failed.value).startswith("command train exited 0 after epoch 1, before to_epoch 3")


def test_a_nan_metric_is_refused_on_the_spot_naming_it(tmp_path: Path) -> None:
    lease = trial_lease(training={"epochs": 3}, metric={"name": "val_map", "goal": "maximize"})
    run = command_run(
        tmp_path,
        """
        with open(channel, "a") as handle:  # what a script in another language might write
            handle.write('{"type": "report", "epoch": 1, "metrics": {"val_map": NaN}}\\n')
        time.sleep(30)
        """,
        lease=lease,
    )
    started = time.monotonic()
    with pytest.raises(TrialFailed) as failed:
        run()
    assert time.monotonic() - started < 10  # killed, not waited for
    assert failed.value.retry is False
    assert "val_map must be finite" in str(failed.value)
    assert run.events.epochs == []


def test_a_report_without_the_search_s_metric_is_refused_naming_it(tmp_path: Path) -> None:
    lease = trial_lease(training={"epochs": 3}, metric={"name": "val_map", "goal": "maximize"})
    run = command_run(tmp_path, "report(1, val_top1=0.4)\ntime.sleep(30)\n", lease=lease)
    with pytest.raises(TrialFailed) as failed:
        run()
    assert failed.value.retry is False
    assert "epoch 1's report has no 'val_map'" in str(failed.value)
    assert "the search optimises val_map (maximize)" in str(failed.value)


def test_a_report_the_server_would_refuse_is_refused_at_once(tmp_path: Path) -> None:
    run = command_run(tmp_path, "report(1, val_top1=71.5)\ntime.sleep(30)\n")  # in percent
    with pytest.raises(TrialFailed) as failed:
        run()
    assert "epoch 1's report is not a valid curve point (val_top1:" in str(failed.value)


def test_a_report_outside_the_segment_is_refused(tmp_path: Path) -> None:
    lease = trial_lease(training={"epochs": 6}, from_epoch=2, to_epoch=4)
    run = command_run(tmp_path, "report(1, val_top1=0.4)\ntime.sleep(30)\n", lease=lease)
    with pytest.raises(TrialFailed) as failed:
        run()
    assert "it reported epoch 1, but this segment trains epochs 3-4" in str(failed.value)


def test_a_hung_script_is_killed_with_its_children_after_the_report_timeout(
    tmp_path: Path,
) -> None:
    run = command_run(
        tmp_path,
        """
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        Path("pids").write_text(f"{os.getpid()} {child.pid}")
        report(1, val_top1=0.4)
        time.sleep(60)
        """,
        report_timeout_s=1.0,
    )
    started = time.monotonic()
    with pytest.raises(TrialFailed) as failed:
        run()
    assert 1.0 <= time.monotonic() - started < 10
    assert failed.value.retry is False
    assert str(failed.value).startswith(
        "command train sent no report for 1 s (--report-timeout): killed; its last report was "
        "epoch 1"
    )
    script, child = (int(pid) for pid in (tmp_path / "work" / "pids").read_text().split())
    # The child is re-parented when the script dies; give its reaper a moment.
    deadline = time.monotonic() + 5
    while (alive(script) or alive(child)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(script) and not alive(child)


def test_a_malformed_channel_line_fails_the_trial(tmp_path: Path) -> None:
    run = command_run(
        tmp_path,
        """
        with open(channel, "a") as handle:
            handle.write("epoch 1 val_top1=0.4\\n")
        time.sleep(30)
        """,
    )
    with pytest.raises(TrialFailed) as failed:
        run()
    assert failed.value.retry is False
    assert str(failed.value).startswith("command train: a channel line is not JSON")


def test_a_command_that_cannot_start_fails_saying_so(tmp_path: Path) -> None:
    run = command_run(tmp_path, "")
    run.executor.argv = (str(tmp_path / "missing-program"),)
    with pytest.raises(TrialFailed) as failed:
        run()
    assert str(failed.value).startswith("command train could not start: [Errno 2]")


# -- the worker's flags -------------------------------------------------------------------------


def test_command_flags_are_split_like_a_shell_and_checked(tmp_path: Path) -> None:
    spec = parse_command_flag(
        "det-v2=python train.py --config 'my configs/x.yaml'", workdir=tmp_path
    )
    assert spec.label == "command:det-v2"
    assert spec.argv == ("python", "train.py", "--config", "my configs/x.yaml")
    assert spec.workdir == tmp_path and spec.report_timeout_s == 1800
    for flag, says in [
        ("python train.py", "has no '=': write LABEL=COMMAND, e.g. --command train='python"),
        ("my label=python x.py", "label 'my label' is not a valid label"),
        ("-x=python x.py", "label '-x' is not a valid label"),
        ("train=", "has no command line"),
        ("train=python 'x.py", "cannot split"),
        ("train=pyhton x.py", "'pyhton' is not a program on PATH"),
        ("train=./train.sh", "'./train.sh' is not a program in"),
    ]:
        with pytest.raises(CommandSpecError) as refused:
            parse_command_flag(flag, workdir=tmp_path)
        assert says in str(refused.value), (flag, str(refused.value))
    with pytest.raises(CommandSpecError, match="--command a is given twice"):
        parse_command_flags(["a=python x.py", "b=python y.py", "a=python z.py"], workdir=tmp_path)


def test_the_worker_refuses_a_bad_command_flag_with_exit_2(tmp_path: Path) -> None:
    for args, says in [
        (["--command", "python train.py"], "has no '=': write LABEL=COMMAND"),
        (["--command", "a=python x.py", "--command", "a=python y.py"], "is given twice"),
        (["--gpus-per-trial", "2"], "--gpus-per-trial 2 splits the GPUs of --gpus"),
    ]:
        done = subprocess.run(
            [*WORKER, "--server", "http://127.0.0.1:9", "--token", "t", *args],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "COLUMNS": "400"},
        )
        assert done.returncode == 2, done
        assert says in " ".join(done.stderr.split()), done.stderr


def test_gpus_per_trial_splits_the_gpus_into_groups() -> None:
    assert group_gpus([0, 1, 2, 3], 1) == [[0], [1], [2], [3]]
    assert group_gpus([0, 1, 2, 3], 2) == [[0, 1], [2, 3]]
    assert group_gpus([1, 3, 5, 7, 0, 2], 3) == [[1, 3, 5], [7, 0, 2]]
    assert group_gpus([4], 1) == [[4]]
    with pytest.raises(ValueError) as refused:
        group_gpus([0, 1, 2, 3], 3)
    assert "--gpus-per-trial 3 does not divide the 4 GPU(s) of --gpus 0,1,2,3: use one of " in (
        str(refused.value)
    )
    assert "1, 2, 4" in str(refused.value)


# -- end to end ---------------------------------------------------------------------------------

E2E_SCRIPT = """\
import json, os
from pathlib import Path
from vitcube.channel import CHANNEL_ENV, TRIAL_FILE_ENV, Message, TrialFile, append

trial = TrialFile.read(os.environ[TRIAL_FILE_ENV])
channel = os.environ[CHANNEL_ENV]
start = json.loads(Path(trial.checkpoint).read_text())["epoch"] if trial.checkpoint else 0
print(f"training trial {trial.trial_id} from epoch {start}")
for epoch in range(start + 1, trial.to_epoch + 1):
    score = 0.1 * epoch + 0.01 * trial.factors["w"]
    metrics = {"val_top1": score, "val_loss": 1.0 - score}
    append(channel, Message("report", epoch=epoch, metrics=metrics))
    path = Path(trial.checkpoint_dir) / f"e{epoch}.json"
    path.write_text(json.dumps({"epoch": epoch}))
    append(channel, Message("checkpoint", epoch=epoch, path=str(path)))
"""


@pytest.mark.slow
def test_a_command_search_completes_on_a_real_worker(
    live_server: Any, start_worker: Any, tmp_path: Path
) -> None:
    (tmp_path / "toy.py").write_text(E2E_SCRIPT)
    search_id = live_server.create_search(
        trainer={"kind": "command", "name": "toy"},
        max_trials=2,
        training={"epochs": 3, "batch_size": 64},
    )
    worker = start_worker(
        live_server,
        "--command",
        f"toy={sys.executable} toy.py",
        "--workdir",
        str(tmp_path),
        "--report-timeout",
        "30",
        "--max-trials",
        "2",
    )
    assert worker.wait(timeout_s=120) == 0, worker.log()
    trials = live_server.trials(search_id)
    assert [t["state"] for t in trials] == ["completed", "completed"], (trials, worker.log())
    for trial in trials:
        assert [p["epoch"] for p in trial["curve"]] == [1, 2, 3]
        assert trial["curve"][-1]["val_loss"] == pytest.approx(0.7 - 0.01 * trial["factors"]["w"])
    log = worker.log()
    assert f"command toy: {sys.executable} toy.py (in {tmp_path})" in log
    assert f"[trial {trials[0]['id']}] training trial {trials[0]['id']} from epoch 0" in log
