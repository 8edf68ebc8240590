"""The artifact store on S3: moto's S3 server on loopback, reached through s3fs as a cluster
reaches MinIO or AWS S3 (`VITCUBE_ARTIFACT_URL=s3://bucket/prefix`), and the worker's artifact
routes on top of it."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from fastapi.testclient import TestClient

from tests.factories import ADMIN, WORKER, create_search, lease_one, make_settings, report_body
from tests.s3 import S3Server, moto_server
from vitcube.service.app import create_app
from vitcube.service.artifacts import ArtifactStore, ArtifactTooLarge


class ClientGone(Exception):
    """What the upload's body stream raises when the client disconnects (Starlette's own)."""


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with moto_server(tmp_path_factory.mktemp("moto")) as server:
        yield server


@pytest.fixture
def store(s3: S3Server, request: pytest.FixtureRequest) -> ArtifactStore:
    return ArtifactStore(s3.url(f"store-{request.node.name}"), s3.options)


async def _chunks(data: bytes, size: int = 256 * 1024, fail_after: int | None = None):  # type: ignore[no-untyped-def]
    for i, start in enumerate(range(0, len(data), size)):
        if fail_after is not None and i == fail_after:
            raise ClientGone("the client went away mid-upload")
        yield data[start : start + size]


def _write(store: ArtifactStore, key: str, chunks: AsyncIterator[bytes], max_bytes: int) -> Any:
    return anyio.run(lambda: store.write_stream(key, chunks, max_bytes=max_bytes))


def test_a_streamed_upload_is_stored_whole_and_reads_back(store: ArtifactStore) -> None:
    # Larger than s3fs's 5 MiB block: a real multipart upload.
    data = os.urandom(6 * 1024 * 1024 + 12345)
    key = store.new_key(search_id=1, trial_id=2, attempt=0, kind="checkpoint")
    written = _write(store, key, _chunks(data), max_bytes=len(data))
    assert written.bytes == len(data)
    assert written.sha256 == hashlib.sha256(data).hexdigest()
    assert b"".join(store.read(key)) == data
    assert store.delete([key]) == 1 and not store.exists(key)


def test_a_failed_or_oversized_upload_leaves_no_object(store: ArtifactStore, s3: S3Server) -> None:
    data = os.urandom(7 * 1024 * 1024)
    broken = store.new_key(search_id=1, trial_id=3, attempt=0, kind="checkpoint")
    with pytest.raises(ClientGone):
        _write(store, broken, _chunks(data, fail_after=25), max_bytes=len(data))
    big = store.new_key(search_id=1, trial_id=3, attempt=0, kind="weights")
    with pytest.raises(ArtifactTooLarge):
        _write(store, big, _chunks(data), max_bytes=len(data) - 1)
    assert not store.exists(broken) and not store.exists(big)
    # Nothing at all under the trial's prefix, and no multipart upload left open in the bucket.
    fs = s3.filesystem()
    assert not fs.exists(store.path("searches/1/trials/3"))
    uploads = fs.call_s3("list_multipart_uploads", Bucket=s3.bucket).get("Uploads", [])
    assert [u["Key"] for u in uploads if "/trials/3/" in u["Key"]] == []


def test_the_worker_routes_keep_checkpoints_and_weights_in_s3(s3: S3Server, tmp_path: Path) -> None:
    settings = make_settings(
        f"sqlite:///{tmp_path / 'vitcube.db'}",
        artifact_url=s3.url("cluster"),
        artifact_options=s3.options,
        migrate_on_start=True,
    )
    fs = s3.filesystem()
    with TestClient(create_app(settings)) as client:
        search = create_search(client)
        lease = lease_one(client)
        blob = os.urandom(3 * 1024 * 1024)
        put = client.put(
            f"/api/trials/{lease['id']}/checkpoint",
            params={"lease_id": lease["lease_id"], "epoch": 2, "step": 0},
            content=blob,
            headers={**WORKER, "Content-Type": "application/octet-stream"},
        )
        assert put.status_code == 200, put.text
        stored = fs.find(f"{s3.bucket}/cluster/searches/{search['id']}")
        assert len(stored) == 1 and stored[0].endswith(".pt"), stored
        got = client.get(f"/api/trials/{lease['id']}/checkpoint", headers=WORKER)
        assert got.status_code == 200 and got.content == blob
        assert got.headers["x-vitcube-sha256"] == hashlib.sha256(blob).hexdigest()

        weights = os.urandom(100_000)
        put = client.put(
            f"/api/trials/{lease['id']}/weights",
            params={"lease_id": lease["lease_id"]},
            content=weights,
            headers={**WORKER, "Content-Type": "application/octet-stream"},
        )
        assert put.status_code == 200, put.text
        done = client.post(
            f"/api/trials/{lease['id']}/complete", json=report_body(lease), headers=WORKER
        )
        assert done.status_code == 200, done.text
        # Completing deleted the checkpoint from the bucket; the weights stay and download.
        stored = fs.find(f"{s3.bucket}/cluster/searches/{search['id']}", refresh=True)
        assert len(stored) == 1 and "/weights-" in stored[0], stored
        got = client.get(f"/api/trials/{lease['id']}/weights", headers=ADMIN)
        assert got.status_code == 200 and got.content == weights
