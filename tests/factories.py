"""Test data for the service tests: request bodies, settings and role headers, in one place."""

from __future__ import annotations

import atexit
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from vitcube.contract import TrainingRecipe, TrialLease
from vitcube.service import store
from vitcube.service.db import Database
from vitcube.service.planner import Planner
from vitcube.service.schemas import SearchCreate
from vitcube.service.settings import Settings
from vitcube.service.tables import Search, Trial

ADMIN_TOKEN = "admin-token-for-tests-0123456789"
WORKER_TOKEN = "worker-token-for-tests-012345678"
VIEWER_TOKEN = "viewer-token-for-tests-012345678"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
WORKER = {"Authorization": f"Bearer {WORKER_TOKEN}"}
VIEWER = {"Authorization": f"Bearer {VIEWER_TOKEN}"}

BASE = {"family": "mobilevit_v1", "size": "xxs", "resolution": 256}


@contextmanager
def scratch_database(admin_url: str, prefix: str) -> Iterator[str]:
    """A new, empty PostgreSQL database `<prefix>_<random>` on the server of `admin_url`;
    yields its URL and drops it (closing any connection still open) afterwards."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as connection:
                connection.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def make_settings(database_url: str, **overrides: Any) -> Settings:
    """Settings for a test server: the three tokens, quick planner and sweeper."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "admin_token": ADMIN_TOKEN,
        "worker_token": WORKER_TOKEN,
        "viewer_token": VIEWER_TOKEN,
        "planner_interval_s": 0.05,
        "sweep_interval_s": 0.05,
        "lease_seconds": 60.0,
        "pool_size": 5,
        "max_overflow": 40,
    }
    if not database_url.startswith("sqlite"):
        # The PostgreSQL default (./vitcube-artifacts) would write into the checkout.
        values["artifact_url"] = scratch_artifacts()
    values.update(overrides)
    return Settings(**values)


@lru_cache
def scratch_artifacts() -> str:
    """A temporary artifact store directory for this test process (removed at exit)."""
    path = tempfile.mkdtemp(prefix="vitcube-artifacts-")
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def artifact_files(root: str | Path) -> list[Path]:
    """Every object file under an artifact store directory (partial uploads included)."""
    return sorted(p for p in Path(root).rglob("*") if p.is_file())


def search_body(**overrides: Any) -> dict[str, Any]:
    """A small, fast search: random strategy, a half budget, digits."""
    body: dict[str, Any] = {
        "name": "test search",
        "base": dict(BASE),
        "dataset": {"name": "digits"},
        "budget": {"c": 0.5},
        "objective": "accuracy",
        "strategy": "random",
        "max_trials": 6,
        "parallelism": 3,
        "training": {"epochs": 3, "batch_size": 16},
        "seed": 1,
    }
    body.update(overrides)
    return body


def command_trainer(label: str = "det-v2", metric: str = "val_map") -> dict[str, Any]:
    """The create-body fields of a search trained by a worker's `--command LABEL='…'`: the
    trainer, a dataset block only the script understands (passed to it untouched: a name no
    builtin trainer knows, extra keys, no num_classes) and the metric the script reports."""
    return {
        "trainer": {"kind": "command", "name": label},
        "dataset": {"name": "coco-mini", "root": "/data/coco", "splits": ["train", "val"]},
        "metric": {"name": metric, "goal": "maximize"},
    }


def command_search_body(label: str = "det-v2", **overrides: Any) -> dict[str, Any]:
    """`search_body` for a search whose trials the command trainer `label` trains."""
    return search_body(**{**command_trainer(label), **overrides})


def curve(epochs: int, final_top1: float) -> list[dict[str, Any]]:
    """A plausible rising learning curve that ends at `final_top1`."""
    return [
        {
            "epoch": e,
            "val_top1": round(final_top1 * (e + 1) / epochs, 6),
            "val_top5": min(1.0, round(final_top1 * (e + 1) / epochs + 0.1, 6)),
            "train_loss": round(2.0 / (e + 1), 6),
        }
        for e in range(epochs)
    ]


def report_body(lease: dict[str, Any], top1: float = 0.8, **overrides: Any) -> dict[str, Any]:
    """A complete report for a leased trial."""
    body: dict[str, Any] = {
        "lease_id": lease["lease_id"],
        "top1": top1,
        "top5": min(1.0, top1 + 0.1),
        "params": lease["params"],
        "macs": lease["macs"],
        "latency_ms": 3.5,
        "images_per_s": 900.0,
        "surrogate": True,
        "curve": curve(3, top1),
    }
    body.update(overrides)
    return body


def heartbeat_body(lease: dict[str, Any], epoch: int = 0, **metrics: float) -> dict[str, Any]:
    return {"lease_id": lease["lease_id"], "epoch": epoch, "metrics": metrics}


# Training blocks (a search's `training`) that the server and every worker must both accept ...
GOOD_TRAINING_BLOCKS: list[dict[str, Any]] = [
    {},
    {"epochs": 3, "batch_size": 16},  # search_body's
    {"epochs": 100, "batch_size": 64},  # DESIGN.md's example
    {"epochs": 6, "batch_size": 32, "max_steps_per_epoch": 2},  # the worker-service tests'
    {"epochs": 10, "warmup_epochs": 10, "lr": 1, "min_lr": 0, "warmup_init_lr": 1},  # edges
    {"crop_scale": [0.3, 1], "hflip": None, "amp": "bf16", "channels_last": False},
    {"multiscale": True, "multiscale_min": 1, "multiscale_max": 4, "multiscale_n": 16},
    {"eval_batch_size": None, "num_workers": 0, "grad_clip": 0, "weight_decay": 0.0},
    {"transformer_dropout": 0.2, "decay_norms_and_biases": False, "crop_interpolation": "bicubic"},
    {
        "rand_augment": True,
        "rand_augment_ops": 14,
        "rand_augment_magnitude": 30,
        "antialias": False,
    },
    {"random_erase_p": 1, "mixup_alpha": 0.8, "cutmix_alpha": 0, "lr": None, "min_lr": None},
]

# ... and blocks both must refuse, each with what the refusal must say.
BAD_TRAINING_BLOCKS: list[tuple[Any, str]] = [
    ({"epoch": 10}, "training.epoch is not a recipe key (did you mean epochs?)"),
    ({"epochs": 5, "lr": -1}, "training.lr must be a number in (0, 10), or null, got -1"),
    ({"epochs": True}, "training.epochs must be an integer in [1, 10000], got true"),
    ({"epochs": 5.0}, "training.epochs must be an integer in [1, 10000], got 5.0"),
    ({"epochs": 0}, "training.epochs must be an integer in [1, 10000], got 0"),
    ({"batch_size": 6.5}, "training.batch_size must be an integer in [1, 65536], got 6.5"),
    ({"batch_size": None}, "training.batch_size must be an integer in [1, 65536], got null"),
    ({"lr": "0.1"}, 'training.lr must be a number in (0, 10), or null, got "0.1"'),
    ({"lr": 0.001, "min_lr": 0.01}, "training.min_lr must be in [0, lr] = [0, 0.001], got 0.01"),
    ({"lr": 0.001, "warmup_init_lr": 0.01}, "training.warmup_init_lr must be in [0, lr]"),
    (
        {"epochs": 10, "warmup_epochs": 20},
        "training.warmup_epochs must be in [0, epochs] = [0, 10]",
    ),
    ({"crop_scale": [0.9, 0.2]}, "training.crop_scale must be [low, high] with 0 < low <= high"),
    ({"crop_scale": [0, 1]}, "training.crop_scale must be [low, high] with 0 < low <= high"),
    ({"crop_scale": [0.5]}, "training.crop_scale must be [low, high] with 0 < low <= high"),
    ({"amp": "fp8"}, "training.amp must be one of 'auto', 'bf16', 'off', got \"fp8\""),
    ({"hflip": 1}, "training.hflip must be true or false, or null, got 1"),
    ({"compile": "yes"}, 'training.compile must be true or false, got "yes"'),
    ({"multiscale_max": 0.9}, "training.multiscale_max must be a number in [1, 4], got 0.9"),
    ({"multiscale_n": 17}, "training.multiscale_n must be an integer in [1, 16], got 17"),
    ({"grad_clip": -1}, "training.grad_clip must be a number >= 0, got -1"),
    ({"weight_decay": 1}, "training.weight_decay must be a number in [0, 1), or null, got 1"),
    ({"transformer_dropout": 1.0}, "training.transformer_dropout must be a number in [0, 1)"),
    ({"decay_norms_and_biases": 0}, "training.decay_norms_and_biases must be true or false, or"),
    ({"crop_interpolation": "nearest"}, "training.crop_interpolation must be one of 'bilinear'"),
    (
        {"rand_augment_magnitude": 31},
        "training.rand_augment_magnitude must be an integer in [0, 30]",
    ),
    ({"rand_augment_ops": 0}, "training.rand_augment_ops must be an integer in [1, 14], got 0"),
    (
        {"random_erase_p": 1.5},
        "training.random_erase_p must be a number in [0, 1], or null, got 1.5",
    ),
    ({"mixup_alpha": -0.1}, "training.mixup_alpha must be a number in [0, 10], or null, got -0.1"),
    ({"cutmix_alpha": 11}, "training.cutmix_alpha must be a number in [0, 10], or null, got 11"),
    ({"antialias": None}, "training.antialias must be true or false, got null"),
    ({"num_workers": 65}, "training.num_workers must be an integer in [0, 64], got 65"),
    ({"max_steps_per_epoch": 0}, "training.max_steps_per_epoch must be an integer >= 1"),
    ("fast", "training must be an object"),
]


def trial_lease(**overrides: Any) -> TrialLease:
    """A lease as POST /api/trials/lease hands it out, for worker code that needs no server."""
    fields: dict[str, Any] = {
        "id": 3,
        "lease_id": "3f1c0c3e-0000-4000-8000-000000000003",
        "search_id": 1,
        "kind": "search",
        "factors": {"r": 1.0, "d_i": 1.5, "d_m": 1.0, "w": 0.8},
        "effective_factors": {"r": 1.0, "d_i": 1.5, "d_m": 1.0, "w": 0.8},
        "arch": {"resolution": 224},
        "macs": 10**8,
        "params": 10**6,
        "dataset": {"name": "digits", "num_classes": 10},
        "training": TrainingRecipe().model_dump(mode="json"),
        "seed": 0,
        "attempts": 0,
        "lease_expires_at": datetime.now(UTC) + timedelta(seconds=120),
        "lease_seconds": 120.0,
    }
    fields.update(overrides)
    return TrialLease(**fields)


def surrogate_top1(factors: dict[str, float]) -> float:
    """A smooth toy landscape for tests that need accuracies with structure."""
    score = 0.55 + 0.1 * factors["r"] + 0.05 * factors["d_i"] + 0.04 * factors["d_m"]
    return round(min(0.99, score + 0.15 * factors["w"]), 6)


# -- API helpers (take a TestClient or an httpx.Client) ---------------------------------------


def wait_for(
    predicate: Callable[[], Any], timeout_s: float = 20.0, interval_s: float = 0.02
) -> Any:
    """Poll until `predicate()` is truthy; its value, or AssertionError after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        time.sleep(interval_s)


def create_search(client: Any, **overrides: Any) -> dict[str, Any]:
    response = client.post("/api/searches", json=search_body(**overrides), headers=ADMIN)
    assert response.status_code == 201, response.text
    return dict(response.json())


def queued(client: Any, search_id: int) -> list[dict[str, Any]]:
    trials = client.get(f"/api/searches/{search_id}/trials", headers=ADMIN).json()
    return [t for t in trials if t["state"] == "queued"]


def lease_one(
    client: Any,
    worker: str = "test-worker",
    timeout_s: float = 20.0,
    *,
    trainers: list[str] | None = None,
) -> Any:
    """Lease a trial, waiting for the planner to queue one. `trainers`: the labels the worker
    says it can run (None: the body says none, as a builtin-only worker's does)."""
    body: dict[str, Any] = {"worker": worker}
    if trainers is not None:
        body["trainers"] = trainers

    def attempt() -> Any:
        response = client.post("/api/trials/lease", json=body, headers=WORKER)
        assert response.status_code in (200, 204), response.text
        return response.json() if response.status_code == 200 else None

    return wait_for(attempt, timeout_s)


# -- database helpers (take a Database: no HTTP, no background threads) -----------------------


def add_search(db: Database, *, queued: int, **overrides: Any) -> int:
    """A search created as POST /api/searches creates it (`search_body(**overrides)`), with
    `queued` trials queued by the planner: the reference trials first, then the strategy's
    picks, in id order. Returns the search's id."""
    body = SearchCreate(**search_body(**{"max_trials": queued, "parallelism": queued, **overrides}))
    columns, strategy = store.resolve_search(body)
    with db.session(write=True) as session:
        search = Search(**columns)
        session.add(search)
        session.flush()
        search_id = search.id
    planner = Planner(db, make_settings(db.url))
    planner.remember(search_id, strategy)

    def topped_up() -> bool:  # a pass may queue fewer when two picks build the same network
        planner.plan_search(search_id)
        with db.session() as session:
            count = select(func.count()).where(Trial.search_id == search_id)
            return session.scalar(count) == queued

    wait_for(topped_up, timeout_s=60, interval_s=0)
    return search_id
