"""Alembic is the only way the schema is made: empty → head, round trip, no drift."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect

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
    assert service_db.current_revision(empty_url) == "0007"
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
