"""The worker's side of `vitcube.channel`, played by a test: a trial file, a channel to read, a
stop file to create. The SDK's, the shell commands' and the integrations' tests run scripts
against it as a real worker would run them (a subprocess with the worker's environment)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vitcube.channel import (
    CHANNEL_ENV,
    STOP_FILE_ENV,
    TRIAL_FILE_ENV,
    ChannelReader,
    Message,
    TrialFile,
    parse_line,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
VITCUBE = Path(sys.executable).parent / "vitcube"

# MobileViT v2-0.5 without stages 4 and 5 (the small-image variant) at 32 px: ~1 M MACs, so a
# CPU trains an epoch of a few hundred digits in about a second.
TINY_BASE = {
    "family": "mobilevit_v2",
    "width": 0.5,
    "resolution": 32,
    "num_classes": 10,
    "dropped_stages": [4, 5],
}


def tiny_arch() -> dict[str, Any]:
    from vitcube.models import ArchConfig

    return ArchConfig.from_dict(TINY_BASE).scale().to_dict()


@dataclass
class PlayedWorker:
    """One segment of one trial, as a worker lays it out in its scratch directory."""

    directory: Path
    spec: TrialFile

    @property
    def trial_file(self) -> Path:
        return self.directory / "trial.json"

    @property
    def stop_file(self) -> Path:
        return Path(self.spec.stop_file)

    def env(self, **extra: str) -> dict[str, str]:
        """The script's environment: the worker's three variables, one torch thread."""
        env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK")}
        env.update(
            {
                TRIAL_FILE_ENV: str(self.trial_file),
                CHANNEL_ENV: self.spec.channel,
                STOP_FILE_ENV: self.spec.stop_file,
                "OMP_NUM_THREADS": "1",
                "PYTHONPATH": str(REPO_ROOT),
            }
        )
        env.update(extra)
        return env

    def run(
        self, *args: str | Path, timeout_s: float = 120, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run a command as the worker runs it (no shell, in the segment's directory)."""
        return subprocess.run(
            [str(arg) for arg in args],
            cwd=self.directory,
            env=self.env(**(env or {})),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )

    def run_python(self, script: Path, **env: str) -> dict[str, Any]:
        """Run a Python training script that prints what it did as JSON on its last line; its
        exit code must be 0."""
        result = self.run(sys.executable, script, timeout_s=300, env=env)
        assert result.returncode == 0, result.stderr[-3000:]
        return dict(json.loads(result.stdout.strip().splitlines()[-1]))

    def messages(self) -> list[Message]:
        """Every line the script appended, parsed as the worker parses it."""
        return [parse_line(line) for line in ChannelReader(self.spec.channel).poll()]

    def reports(self) -> list[Message]:
        return [m for m in self.messages() if m.type == "report"]

    def checkpoints(self) -> list[Message]:
        return [m for m in self.messages() if m.type == "checkpoint"]

    def weights(self) -> list[Message]:
        return [m for m in self.messages() if m.type == "weights"]

    def next_segment(self, directory: Path, *, to_epoch: int) -> PlayedWorker:
        """The next segment of the same trial, resuming from this one's last checkpoint, which
        the worker "uploads" and "downloads" again (a copy into the new scratch directory)."""
        announced = self.checkpoints()[-1]
        assert announced.path is not None and announced.epoch is not None
        directory.mkdir(parents=True)
        resumed = directory / "downloaded-checkpoint"
        shutil.copyfile(announced.path, resumed)
        return play_worker(
            directory,
            from_epoch=announced.epoch,
            to_epoch=to_epoch,
            epochs=self.spec.epochs,
            metric=dict(self.spec.metric),
            checkpoint=str(resumed),
            arch=dict(self.spec.arch),
        )


def play_worker(
    directory: Path,
    *,
    from_epoch: int = 0,
    to_epoch: int = 2,
    epochs: int | None = None,
    metric: dict[str, str] | None = None,
    checkpoint: str | None = None,
    arch: dict[str, Any] | None = None,
) -> PlayedWorker:
    """Write a trial file for epochs from_epoch + 1 … to_epoch into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    spec = TrialFile(
        trial_id=7,
        search_id=3,
        arch=arch if arch is not None else {"resolution": 32, "note": "not built here"},
        factors={"r": 1.0, "d_i": 1.0, "d_m": 1.0, "w": 1.0},
        effective_factors={"r": 1.0, "d_i": 1.0, "d_m": 1.0, "w": 1.0},
        macs=1_000_000,
        params=100_000,
        seed=11,
        training={"epochs": epochs or to_epoch, "batch_size": 32},
        dataset={"name": "digits", "root": "/data/digits"},
        from_epoch=from_epoch,
        to_epoch=to_epoch,
        epochs=epochs or to_epoch,
        metric=metric or {"name": "val_top1", "goal": "maximize"},
        channel=str(directory / "channel.jsonl"),
        stop_file=str(directory / "stop"),
        checkpoint_dir=str(directory / "checkpoints"),
        checkpoint=checkpoint,
    )
    (directory / "checkpoints").mkdir(exist_ok=True)
    worker = PlayedWorker(directory, spec)
    spec.write(worker.trial_file)
    return worker
