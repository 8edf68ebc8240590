"""Alembic is the only way the schema is made: empty → head, round trip, no drift."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from tests.factories import scratch_database
from vitcube.service import db as service_db
from vitcube.service.tables import Base


@pytest.fixture
def empty_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """A brand-new empty database of the backend under test."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    base_url = request.getfixturevalue("postgres_url")
    with scratch_database(base_url, "vitcube_mig") as url:
        yield url


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def _drift(url: str) -> list[object]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


def test_empty_to_head_round_trip_and_no_drift(empty_url: str) -> None:
    assert service_db.current_revision(empty_url) is None
    service_db.upgrade(empty_url)
    assert service_db.current_revision(empty_url) == "0008"
    assert _tables(empty_url) >= {
        "searches",
        "trials",
        "trial_metrics",
        "artifacts",
        "api_tokens",
        "search_analyses",
        "workers",
    }
    assert _drift(empty_url) == []  # the tables module and the migrations agree
    service_db.downgrade(empty_url, "base")
    assert service_db.current_revision(empty_url) is None
    assert _tables(empty_url) <= {"alembic_version"}
    service_db.upgrade(empty_url)
    assert _drift(empty_url) == []


def test_migrations_are_found_from_the_installed_package() -> None:
    config = service_db.alembic_config("sqlite://")
    location = Path(config.get_main_option("script_location"))
    assert (location / "env.py").is_file()
    assert any((location / "versions").glob("0001_*.py"))


def test_searches_from_before_trainers_become_builtin_val_top1_searches(empty_url: str) -> None:
    service_db.upgrade(empty_url, "0006")
    engine = create_engine(empty_url)
    try:
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO searches (name, state, base, dataset, budget, m0, max_macs, space,"
                    " objective, strategy, max_trials, parallelism, training, seed, extra) VALUES"
                    " ('old', 'running', '{}', '{\"name\": \"digits\"}', '{}', 10, 5, '{}',"
                    " 'accuracy', 'gp', 4, 2, '{\"epochs\": 3}', 0, '{}')"
                )
            )
        service_db.upgrade(empty_url)
        with engine.connect() as connection:
            row = connection.execute(
                text("SELECT trainer, trainer_label, metric FROM searches")
            ).one()
        trainer, label, metric = row
        # SQLite hands JSON back as text, PostgreSQL's driver decodes it.
        trainer, metric = (json.loads(v) if isinstance(v, str) else v for v in (trainer, metric))
        assert (trainer, label) == ({"kind": "builtin"}, "builtin")
        assert metric == {"name": "val_top1", "goal": "maximize"}
        service_db.downgrade(empty_url, "0006")  # and back, the search kept
        with engine.connect() as connection:
            assert connection.execute(text("SELECT name FROM searches")).scalar_one() == "old"
    finally:
        engine.dispose()
