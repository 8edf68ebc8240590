"""The artifact store on a local directory: streamed round trip, atomic writes, server keys."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.factories import artifact_files
from vitcube.service.artifacts import (
    ArtifactStore,
    ArtifactTooLarge,
    Written,
    default_artifact_url,
)
from vitcube.service.settings import Settings


class ClientGone(Exception):
    pass


async def _chunks(
    data: bytes, size: int = 64 * 1024, *, fail_after: int | None = None, probe: Any = None
) -> AsyncIterator[bytes]:
    for i, start in enumerate(range(0, len(data), size)):
        if fail_after is not None and i == fail_after:
            raise ClientGone("the client went away mid-upload")
        if probe is not None:
            probe()
        yield data[start : start + size]


def _write(store: ArtifactStore, key: str, chunks: AsyncIterator[bytes], max_bytes: int) -> Any:
    async def main() -> Written:
        return await store.write_stream(key, chunks, max_bytes=max_bytes)

    return anyio.run(main)


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(str(tmp_path / "store"))


def test_a_streamed_upload_reads_back_whole_with_its_sha256(store: ArtifactStore) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)  # several 1 MiB blocks and a tail
    key = store.new_key(search_id=1, trial_id=2, attempt=0, kind="checkpoint")
    assert key.startswith("searches/1/trials/2/attempt-0/checkpoint-") and key.endswith(".pt")
    written = _write(store, key, _chunks(data), max_bytes=len(data))
    assert written == Written(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    assert store.exists(key)
    blocks = list(store.read(key))
    assert b"".join(blocks) == data and max(len(b) for b in blocks) <= 1024 * 1024
    assert store.delete([key, "searches/1/never-written.pt"]) == 1  # a missing key is ignored
    assert not store.exists(key)


def test_an_upload_is_invisible_until_it_is_whole(store: ArtifactStore) -> None:
    data = os.urandom(2 * 1024 * 1024)
    key = store.new_key(search_id=1, trial_id=2, attempt=0, kind="weights")
    seen: list[bool] = []
    _write(store, key, _chunks(data, probe=lambda: seen.append(store.exists(key))), len(data))
    assert seen and not any(seen)  # never visible mid-upload
    assert store.exists(key)


def test_a_failed_or_oversized_upload_leaves_nothing(store: ArtifactStore) -> None:
    data = os.urandom(3 * 1024 * 1024)
    broken = store.new_key(search_id=1, trial_id=3, attempt=0, kind="checkpoint")
    with pytest.raises(ClientGone):
        _write(store, broken, _chunks(data, fail_after=20), max_bytes=len(data))
    big = store.new_key(search_id=1, trial_id=3, attempt=0, kind="weights")
    with pytest.raises(ArtifactTooLarge, match="VITCUBE_MAX_ARTIFACT_BYTES"):
        _write(store, big, _chunks(data), max_bytes=len(data) - 1)
    assert not store.exists(broken) and not store.exists(big)
    assert artifact_files(store.root) == []  # no partial file either


def test_keys_are_the_servers_own(store: ArtifactStore) -> None:
    with pytest.raises(ValueError, match="not a store key"):
        store.path("../../etc/passwd")
    with pytest.raises(ValueError, match="not a store key"):
        store.path("/etc/passwd")
    a = store.new_key(search_id=1, trial_id=2, attempt=1, kind="checkpoint")
    assert a != store.new_key(search_id=1, trial_id=2, attempt=1, kind="checkpoint")


def test_the_default_store_lies_beside_the_sqlite_file(tmp_path: Path) -> None:
    db = tmp_path / "data" / "vitcube.db"
    assert default_artifact_url(f"sqlite:///{db}") == str(db.parent / "artifacts")
    assert default_artifact_url("postgresql+psycopg://u@h/db") == str(
        Path("vitcube-artifacts").resolve()
    )
    settings = Settings(database_url=f"sqlite:///{db}")
    store = ArtifactStore.from_settings(settings)
    assert Path(store.root) == db.parent / "artifacts" and store.local
    # Made by the first upload, not by the app: a server that stores nothing leaves no folder.
    assert not (db.parent / "artifacts").exists()

    async def one_chunk() -> AsyncIterator[bytes]:
        yield b"weights"

    key = store.new_key(search_id=1, trial_id=1, attempt=0, kind="weights")
    anyio.run(lambda: store.write_stream(key, one_chunk(), max_bytes=100))
    assert (db.parent / "artifacts" / key).read_bytes() == b"weights"


def test_the_artifact_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VITCUBE_ARTIFACT_URL", "s3://bucket/prefix")
    monkeypatch.setenv("VITCUBE_ARTIFACT_OPTIONS", '{"endpoint_url": "http://127.0.0.1:9000"}')
    monkeypatch.setenv("VITCUBE_MAX_ARTIFACT_BYTES", "1000")
    monkeypatch.setenv("VITCUBE_KEEP_WEIGHTS", "3")
    settings = Settings()
    assert settings.artifact_url == "s3://bucket/prefix"
    assert settings.artifact_options == {"endpoint_url": "http://127.0.0.1:9000"}
    assert (settings.max_artifact_bytes, settings.keep_weights) == (1000, 3)
    monkeypatch.setenv("VITCUBE_KEEP_WEIGHTS", "-1")
    with pytest.raises(ValueError, match="keep_weights"):
        Settings()
