"""The training-script SDK (`vitcube.trial`) and `vitcube trial …`, end to end against a trial
file and channel the test lays out as a worker would (tests/trialfiles.py): what a script's
calls put on the channel, what they refuse and how, signals, ranks, and the shell commands'
exit codes. Scripts that must own their process (current(), SIGTERM) run as subprocesses."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from trialfiles import VITCUBE, PlayedWorker, play_worker, tiny_arch

from vitcube.trial import Trial

OUTSIDE = (
    "vitcube.trial.current() works only inside a trial a vitcube worker runs "
    "(VITCUBE_TRIAL_FILE is not set)"
)


@pytest.fixture
def worker(tmp_path: Path) -> PlayedWorker:
    return play_worker(tmp_path / "segment", from_epoch=1, to_epoch=3, epochs=5)


@pytest.fixture
def t(worker: PlayedWorker, monkeypatch: pytest.MonkeyPatch) -> Trial:
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    return Trial.from_file(worker.trial_file)


def python(worker: PlayedWorker, code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return worker.run(sys.executable, "-c", textwrap.dedent(code), env=env)


# -- the trial's fields ---------------------------------------------------------------------------


def test_fields_are_the_trial_files(t: Trial, worker: PlayedWorker) -> None:
    assert (t.trial_id, t.search_id, t.seed) == (7, 3, 11)
    assert (t.from_epoch, t.to_epoch, t.epochs) == (1, 3, 5)
    assert (t.metric.name, t.metric.goal) == ("val_top1", "maximize")
    assert t.factors == {"r": 1.0, "d_i": 1.0, "d_m": 1.0, "w": 1.0}
    assert t.effective_factors == t.factors
    assert (t.macs, t.params) == (1_000_000, 100_000)
    assert t.dataset == {"name": "digits", "root": "/data/digits"}  # passed through untouched
    assert t.training["batch_size"] == 32
    assert t.checkpoint_path is None
    assert t.checkpoint_dir == worker.directory / "checkpoints"


def test_build_model_builds_the_trials_arch_with_the_scripts_classes(tmp_path: Path) -> None:
    t = Trial.from_file(play_worker(tmp_path, arch=tiny_arch()).trial_file)
    images = torch.rand(2, 3, 32, 32)
    assert t.build_model()(images).shape == (2, 10)  # the arch's own classes
    model = t.build_model(num_classes=3)
    assert model(images).shape == (2, 3)
    assert model.arch.stages == t.build_model().arch.stages  # the same network otherwise


# -- report ---------------------------------------------------------------------------------------


def test_report_appends_one_line_per_epoch_the_worker_parses(
    t: Trial, worker: PlayedWorker
) -> None:
    t.report(2, val_top1=0.71, train_loss=1.9)
    t.report(3, val_top1=torch.tensor(0.75), train_loss=1)  # tensors and ints are numbers
    reports = worker.reports()
    assert [(m.epoch, dict(m.metrics)) for m in reports] == [
        (2, {"val_top1": 0.71, "train_loss": 1.9}),
        (3, {"val_top1": 0.75, "train_loss": 1.0}),
    ]


@pytest.mark.parametrize(
    ("metrics", "message"),
    [
        ({"train_loss": 1.9}, "has no 'val_top1': the search optimises val_top1 (maximize)"),
        ({"val_top1": math.nan}, "val_top1 must be a finite number, got nan"),
        ({"val_top1": math.inf}, "val_top1 must be a finite number, got inf"),
        ({"val_top1": "0.7"}, "val_top1 must be a finite number, got '0.7'"),
        ({"val_top1": True}, "val_top1 must be a finite number, got True"),
        ({"val_top1": 0.7, "train_loss": math.nan}, "metric train_loss must be a finite number"),
        ({"val_top1": 0.7, "lr": None}, "metric lr must be a finite number, got None"),
        ({"val_top1": 1.5}, "val_top1"),  # a fraction: the server would refuse the curve
        ({"val_top1": 0.7, "epoch": 2}, "'epoch' is the report's own field"),
    ],
)
def test_a_report_the_search_cannot_use_is_refused_on_the_spot_naming_the_metric(
    t: Trial, worker: PlayedWorker, metrics: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match="the report of epoch 2") as raised:
        t.report(2, **metrics)
    assert message in str(raised.value)
    assert worker.messages() == []  # nothing reached the worker


def test_a_minimized_metric_is_named_with_its_goal(tmp_path: Path) -> None:
    worker = play_worker(tmp_path, metric={"name": "val_loss", "goal": "minimize"})
    t = Trial.from_file(worker.trial_file)
    with pytest.raises(ValueError, match=r"the search optimises val_loss \(minimize\)"):
        t.report(1, val_top1=0.9)
    t.report(1, val_loss=0.4)
    assert [dict(m.metrics) for m in worker.reports()] == [{"val_loss": 0.4}]


@pytest.mark.parametrize("epoch", [0, 1, 4, -1])
def test_an_epoch_outside_the_segment_is_refused(t: Trial, epoch: int) -> None:
    with pytest.raises(ValueError, match=r"outside this segment: it trains epochs 2…3"):
        t.report(epoch, val_top1=0.5)


@pytest.mark.parametrize("epoch", [2.0, "2", True])
def test_an_epoch_must_be_a_whole_number(t: Trial, epoch: object) -> None:
    with pytest.raises(ValueError, match="epoch must be a whole number"):
        t.report(epoch, val_top1=0.5)  # type: ignore[arg-type]


# -- checkpoints and weights ------------------------------------------------------------------


def test_checkpoint_round_trip_through_the_next_segment(t: Trial, worker: PlayedWorker) -> None:
    first = t.save_checkpoint({"step": 0})  # before any report: the state at from_epoch
    t.report(2, val_top1=0.6)
    weights = torch.arange(4.0)
    state = {"epoch": 2, "weights": weights, "note": "anything torch.save takes"}
    second = t.save_checkpoint(state)
    announced = worker.checkpoints()
    assert [(m.epoch, m.path) for m in announced] == [(1, str(first)), (2, str(second))]
    assert (
        first is not None and first != second
    )  # a fresh name each time: the worker may still be uploading `first`
    assert torch.load(first, weights_only=False) == {"step": 0}

    nxt = worker.next_segment(worker.directory.parent / "next", to_epoch=5)
    resumed = Trial.from_file(nxt.trial_file)
    assert resumed.from_epoch == 2
    loaded = resumed.load_checkpoint()
    assert loaded["epoch"] == 2 and loaded["note"] == state["note"]
    assert torch.equal(loaded["weights"], weights)


def test_load_checkpoint_is_none_on_a_fresh_start(t: Trial) -> None:
    assert t.load_checkpoint() is None


def test_files_appear_whole_or_not_at_all(t: Trial, worker: PlayedWorker) -> None:
    t.report(2, val_top1=0.6)
    t.save_checkpoint({"ok": 1})
    with pytest.raises(Exception, match="pickle"):
        t.save_checkpoint({"unpicklable": lambda: None})  # fails half way through torch.save
    files = sorted(p.name for p in t.checkpoint_dir.iterdir())
    assert len(files) == 1 and not files[0].startswith(".")  # no temporary file left behind
    assert len(worker.checkpoints()) == 1  # and no line for the failed one


def test_save_weights_saves_a_cpu_state_dict(t: Trial, worker: PlayedWorker) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    path = t.save_weights(model)
    assert path is not None
    assert [m.path for m in worker.weights()] == [str(path)]
    saved = torch.load(path, weights_only=True)
    assert saved.keys() == model.state_dict().keys()
    assert all(v.device.type == "cpu" for v in saved.values())
    assert torch.equal(saved["0.weight"], model.state_dict()["0.weight"])


# -- should_stop, signals, ranks ----------------------------------------------------------------


def test_should_stop_once_the_stop_file_exists(t: Trial, worker: PlayedWorker) -> None:
    assert not t.should_stop
    worker.stop_file.touch()
    assert t.should_stop


SIGTERM_SCRIPT = """
    import signal, sys, time
    from vitcube import trial
    t = trial.current()
    assert trial.current() is t  # one Trial per process
    print("own handler kept" if signal.getsignal(signal.SIGTERM) is not trial._on_sigterm
          else "flag installed", flush=True)
    t.report(2, val_top1=0.5)
    deadline = time.monotonic() + 30
    while not t.should_stop:
        if time.monotonic() > deadline:
            sys.exit(3)
        time.sleep(0.01)
    t.save_checkpoint({"saved": "after SIGTERM"})
    print("saved", flush=True)
"""


@pytest.mark.slow
def test_sigterm_sets_should_stop_and_the_script_saves_and_exits_by_itself(
    worker: PlayedWorker,
) -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(SIGTERM_SCRIPT)],
        cwd=worker.directory,
        env=worker.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "flag installed"
    deadline = time.monotonic() + 30
    while not worker.reports() and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err  # not killed by SIGTERM: it saved and exited
    assert out.strip() == "saved"
    assert not worker.stop_file.exists()  # the signal alone stopped it
    assert [m.epoch for m in worker.checkpoints()] == [2]


@pytest.mark.slow
def test_a_scripts_own_sigterm_handler_is_left_alone(worker: PlayedWorker) -> None:
    code = """
        import signal
        signal.signal(signal.SIGTERM, lambda *a: print("the script's own", flush=True))
        from vitcube import trial
        t = trial.current()
        signal.raise_signal(signal.SIGTERM)
        print("should_stop", t.should_stop)
    """
    result = python(worker, code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["the script's own", "should_stop False"]


@pytest.mark.parametrize(
    ("env", "reports"),
    [
        ({"RANK": "1"}, False),
        ({"LOCAL_RANK": "2"}, False),
        ({"RANK": "0", "LOCAL_RANK": "1"}, True),
    ],
)
def test_only_rank_zero_reports_and_saves(
    t: Trial,
    worker: PlayedWorker,
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    reports: bool,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    t.report(2, val_top1=0.5)
    checkpoint = t.save_checkpoint({"a": 1})
    weights = t.save_weights({"w": torch.zeros(1)})
    assert bool(worker.messages()) is reports
    assert (checkpoint is not None, weights is not None) == (reports, reports)
    assert bool(list(t.checkpoint_dir.iterdir())) is reports
    with pytest.raises(ValueError, match="val_top1"):
        t.report(2, train_loss=1.0)  # every rank checks what it would report
    worker.stop_file.touch()
    assert t.should_stop  # every rank sees the stop


def test_every_rank_loads_the_checkpoint(
    t: Trial, worker: PlayedWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    t.save_checkpoint({"epoch": 1})
    nxt = worker.next_segment(worker.directory.parent / "next", to_epoch=3)
    monkeypatch.setenv("RANK", "3")
    assert Trial.from_file(nxt.trial_file).load_checkpoint() == {"epoch": 1}


# -- outside a worker, imports --------------------------------------------------------------------


@pytest.mark.slow
def test_outside_a_worker_current_fails_with_one_sentence(worker: PlayedWorker) -> None:
    code = """
        from vitcube import trial
        try:
            trial.current()
        except trial.TrialError as error:
            assert isinstance(error, RuntimeError)
            print(error)
    """
    result = python(worker, code, VITCUBE_TRIAL_FILE="")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(OUTSIDE + "; start the script with vitcube worker --command")
    assert result.stdout.count("\n") == 1
    missing = python(worker, code, VITCUBE_TRIAL_FILE=str(worker.directory / "gone.json"))
    assert "gone.json does not exist" in missing.stdout


@pytest.mark.slow
def test_the_sdk_imports_without_torch(worker: PlayedWorker) -> None:
    code = """
        import sys
        from vitcube import trial
        t = trial.current()
        t.report(2, val_top1=0.5)
        print(t.should_stop, 'torch' in sys.modules, 'vitcube.models' in sys.modules)
    """
    result = python(worker, code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False", "False"]
    assert [m.epoch for m in worker.reports()] == [2]


# -- vitcube trial … ----------------------------------------------------------------------------


def cli(worker: PlayedWorker, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return worker.run(VITCUBE, "trial", *args, env=env)


@pytest.mark.slow
def test_shell_report_writes_the_same_line_and_refuses_what_report_refuses(
    worker: PlayedWorker,
) -> None:
    ok = cli(worker, "report", "--epoch", "2", "--metric", "val_top1=0.41", "--metric", "lr=1e-3")
    assert ok.returncode == 0, ok.stderr
    assert [(m.epoch, dict(m.metrics)) for m in worker.reports()] == [
        (2, {"val_top1": 0.41, "lr": 0.001})
    ]
    missing = cli(worker, "report", "--epoch", "3", "--metric", "train_loss=1.2")
    assert missing.returncode == 2
    assert "has no 'val_top1': the search optimises val_top1 (maximize)" in missing.stderr
    nan = cli(worker, "report", "--epoch", "3", "--metric", "val_top1=nan")
    assert nan.returncode == 2 and "val_top1 must be a finite number" in nan.stderr
    garbled = cli(worker, "report", "--epoch", "3", "--metric", "val_top1")
    assert garbled.returncode == 2 and "NAME=VALUE" in garbled.stderr
    late = cli(worker, "report", "--epoch", "9", "--metric", "val_top1=0.5")
    assert late.returncode == 2 and "outside this segment" in late.stderr
    assert len(worker.reports()) == 1


@pytest.mark.slow
def test_shell_checkpoint_and_weights_copy_the_file_then_announce_it(
    worker: PlayedWorker,
) -> None:
    state = worker.directory / "state.bin"
    state.write_bytes(b"model state after epoch 2")
    ok = cli(worker, "checkpoint", "--epoch", "2", str(state))
    assert ok.returncode == 0, ok.stderr
    (announced,) = worker.checkpoints()
    assert announced.epoch == 2 and announced.path is not None
    assert Path(announced.path).parent == worker.directory / "checkpoints"
    assert Path(announced.path).read_bytes() == state.read_bytes()
    state.write_bytes(b"changed later by the script")  # the announced copy is unaffected
    assert Path(announced.path).read_bytes() == b"model state after epoch 2"

    outside = cli(worker, "checkpoint", "--epoch", "7", str(state))
    assert outside.returncode == 2 and "outside this segment" in outside.stderr
    gone = cli(worker, "checkpoint", "--epoch", "2", "nothing-here.bin")
    assert gone.returncode == 2 and "is not a file" in gone.stderr

    ok = cli(worker, "weights", str(state))
    assert ok.returncode == 0, ok.stderr
    (weights,) = worker.weights()
    assert weights.path is not None
    assert Path(weights.path).read_bytes() == b"changed later by the script"


@pytest.mark.slow
def test_shell_show_and_should_stop(worker: PlayedWorker) -> None:
    whole = cli(worker, "show")
    assert whole.returncode == 0, whole.stderr
    assert json.loads(whole.stdout)["trial_id"] == 7
    field = cli(worker, "show", "--field", "metric")
    assert json.loads(field.stdout) == {"name": "val_top1", "goal": "maximize"}
    assert cli(worker, "show", "--field", "to_epoch").stdout.strip() == "3"
    unknown = cli(worker, "show", "--field", "to_epochs")
    assert unknown.returncode == 2 and "no field 'to_epochs'" in unknown.stderr

    assert cli(worker, "should-stop").returncode == 1
    worker.stop_file.touch()
    assert cli(worker, "should-stop").returncode == 0


@pytest.mark.slow
@pytest.mark.parametrize(
    "args",
    [
        ("report", "--epoch", "1", "--metric", "val_top1=0.5"),
        ("checkpoint", "--epoch", "1", "trial.json"),
        ("weights", "trial.json"),
        ("show",),
        ("should-stop",),
    ],
)
def test_shell_commands_outside_a_worker_exit_2_with_the_sentence(
    worker: PlayedWorker, args: tuple[str, ...]
) -> None:
    result = cli(worker, *args, VITCUBE_TRIAL_FILE="")
    assert result.returncode == 2
    assert result.stderr.startswith(OUTSIDE)
    assert worker.messages() == []
