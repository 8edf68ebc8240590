"""The worker's artifact traffic over real HTTP: the checkpoint uploader (coalescing, retries
while the server is down, a 409 stops it), the checkpoint download's sha256 check, and a spool
entry with weights that waits for an unreachable server and is delivered later.

The server here is a small HTTP server on loopback, started in-process, that speaks the artifact
API's wire format (the service's own routes are exercised end to end in test_worker_weights.py);
it can be switched to answer 503 or 409 on demand, which the real service cannot be made to do.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from vitcube.workers.checkpoint import CheckpointUploader
from vitcube.workers.client import ArtifactCorrupt, Backoff, VitcubeClient
from vitcube.workers.spool import Spool, deliver


class ArtifactServer:
    """Records artifact PUTs and completes; `status` forces an answer (503, 409) for PUTs."""

    def __init__(self) -> None:
        self.status = 200
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        self.stored: dict[str, bytes] = {}
        self.corrupt_download = False
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length", "0")))

            def do_PUT(self) -> None:
                url = urlparse(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                body = self._body()
                server.requests.append(("PUT", url.path, query, body))
                if server.status != 200:
                    self._answer(server.status, {"detail": f"forced {server.status}"})
                    return
                server.stored[url.path] = body
                kind = "weights" if url.path.endswith("/weights") else "checkpoint"
                self._answer(
                    200,
                    {
                        "kind": kind,
                        "trial_id": 1,
                        "search_id": 1,
                        "bytes": len(body),
                        "sha256": hashlib.sha256(body).hexdigest(),
                        "epoch": int(query.get("epoch", 0)),
                    },
                )

            def do_POST(self) -> None:
                body = self._body()
                server.requests.append(("POST", self.path, {}, body))
                self._answer(200, {"id": 1, "search_id": 1, "state": "completed", "attempts": 1})

            def do_GET(self) -> None:
                body = server.stored.get(self.path)
                if body is None:
                    self._answer(404, {"detail": "the trial has no checkpoint"})
                    return
                sha = hashlib.sha256(body).hexdigest()
                if server.corrupt_download:
                    body = body[:-1] + bytes([body[-1] ^ 1])
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("X-Vitcube-Epoch", "4")
                self.send_header("X-Vitcube-Step", "2")
                self.send_header("X-Vitcube-Sha256", sha)
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def puts(self, suffix: str) -> list[tuple[dict[str, str], bytes]]:
        return [(q, b) for (m, p, q, b) in self.requests if m == "PUT" and p.endswith(suffix)]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def artifact_server() -> Iterator[ArtifactServer]:
    server = ArtifactServer()
    yield server
    server.close()


def _client(url: str) -> VitcubeClient:
    return VitcubeClient(url, "token", worker="w", backoff=Backoff(initial_s=0.05, max_s=0.2))


def _file(directory: Path, name: str, content: bytes) -> Path:
    path = directory / name
    path.write_bytes(content)
    return path


def _wait(predicate: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_uploader_retries_while_the_server_is_down_and_sends_only_the_newest(
    artifact_server: ArtifactServer, tmp_path: Path
) -> None:
    client = _client(artifact_server.url)
    artifact_server.status = 503
    uploader = CheckpointUploader(client, 1, "lease-a")
    first = _file(tmp_path, "a.pt", b"epoch one" * 1000)
    uploader.submit(first, epoch=1, step=0)
    _wait(lambda: len(artifact_server.puts("/checkpoint")) >= 2)  # retried
    assert not uploader.flush(0.2)  # still down
    second = _file(tmp_path, "b.pt", b"epoch two" * 1000)
    third = _file(tmp_path, "c.pt", b"epoch three, step 5" * 1000)
    uploader.submit(second, epoch=2, step=0)
    uploader.submit(third, epoch=3, step=5)
    assert not first.exists() and not second.exists()  # superseded before they were sent
    # Back up only once the newest is being retried: a superseded file's PUT already in flight
    # when the server recovers would (rightly) be stored, and this test is about what is queued.
    _wait(lambda: any(q.get("epoch") == "3" for q, _ in artifact_server.puts("/checkpoint")))
    artifact_server.status = 200
    assert uploader.flush(10.0)
    stored = artifact_server.stored["/api/trials/1/checkpoint"]
    assert stored == third.read_bytes()
    query, _ = artifact_server.puts("/checkpoint")[-1]
    assert query == {"lease_id": "lease-a", "epoch": "3", "step": "5"}
    # Only the newest file was ever sent successfully; the superseded ones never came through.
    assert uploader.uploads == 1 and uploader.sent is not None and uploader.sent.epoch == 3
    uploader.close()
    assert not third.exists()  # close() removes the local files
    client.close()


def test_a_409_stops_the_uploader(artifact_server: ArtifactServer, tmp_path: Path) -> None:
    client = _client(artifact_server.url)
    artifact_server.status = 409
    uploader = CheckpointUploader(client, 1, "stale-lease")
    uploader.submit(_file(tmp_path, "a.pt", b"x" * 100), epoch=1, step=0)
    assert not uploader.flush(5.0)
    assert uploader.lease_lost
    artifact_server.status = 200
    uploader.submit(_file(tmp_path, "b.pt", b"y" * 100), epoch=2, step=0)
    time.sleep(0.3)
    assert len(artifact_server.puts("/checkpoint")) == 1  # nothing more after the 409
    uploader.close()
    client.close()


def test_download_checks_the_sha256_and_404_means_none(
    artifact_server: ArtifactServer, tmp_path: Path
) -> None:
    client = _client(artifact_server.url)
    content = bytes(range(256)) * 5000
    client.put_checkpoint(1, "lease", _file(tmp_path, "up.pt", content), epoch=4, step=2)
    epoch, step, sha = client.download_checkpoint(1, tmp_path / "down.pt")
    assert (epoch, step) == (4, 2) and sha == hashlib.sha256(content).hexdigest()
    assert (tmp_path / "down.pt").read_bytes() == content
    artifact_server.corrupt_download = True
    with pytest.raises(ArtifactCorrupt, match="sha256"):
        client.download_checkpoint(1, tmp_path / "bad.pt")
    assert not (tmp_path / "bad.pt").exists()
    from vitcube.workers.client import RequestRejected

    with pytest.raises(RequestRejected) as missing:
        client.download_checkpoint(2, tmp_path / "none.pt")
    assert missing.value.status == 404
    client.close()


def _report(lease_id: str) -> dict[str, Any]:
    return {"lease_id": lease_id, "top1": 0.9, "params": 10, "macs": 100, "epochs_trained": 2.0}


def test_spooled_weights_wait_for_an_unreachable_server_and_go_before_the_complete(
    artifact_server: ArtifactServer, tmp_path: Path
) -> None:
    spool = Spool(tmp_path / "spool")
    staged = spool.staging_path(1)
    staged.write_bytes(b"weights" * 1000)
    down_url = "http://127.0.0.1:9"  # nothing listens on the discard port
    entry = spool.put(down_url, 1, _report("lease-w"), weights=staged)
    assert entry.weights is not None and entry.weights.exists() and not staged.exists()
    down = _client(down_url)
    assert deliver(spool, down, deadline_s=0.5) == (0, 1)
    [kept] = spool.pending(down_url)
    assert kept.weights == entry.weights and kept.weights.exists()
    down.close()

    # The server is back (a new address here; the entry is re-addressed as a restart would).
    record = json.loads(entry.path.read_text())
    record["server"] = artifact_server.url
    entry.path.write_text(json.dumps(record))
    up = _client(artifact_server.url)
    assert deliver(spool, up, deadline_s=5.0) == (1, 0)
    assert artifact_server.stored["/api/trials/1/weights"] == b"weights" * 1000
    order = [(method, path) for method, path, _, _ in artifact_server.requests]
    assert order == [("PUT", "/api/trials/1/weights"), ("POST", "/api/trials/1/complete")]
    assert artifact_server.puts("/weights")[0][0] == {"lease_id": "lease-w"}
    assert not list((tmp_path / "spool").iterdir())  # both files gone once acknowledged
    up.close()


def test_refused_weights_are_dropped_but_the_result_is_still_completed(
    artifact_server: ArtifactServer, tmp_path: Path
) -> None:
    spool = Spool(tmp_path / "spool")
    staged = spool.staging_path(1)
    staged.write_bytes(b"too big")
    spool.put(artifact_server.url, 1, _report("lease-x"), weights=staged)
    artifact_server.status = 413
    client = _client(artifact_server.url)
    assert deliver(spool, client, deadline_s=5.0) == (1, 0)
    assert [m for m, *_ in artifact_server.requests] == ["PUT", "POST"]
    assert not list((tmp_path / "spool").iterdir())
    client.close()


def test_weights_of_a_lost_lease_are_rejected_with_the_result(
    artifact_server: ArtifactServer, tmp_path: Path
) -> None:
    spool = Spool(tmp_path / "spool")
    staged = spool.staging_path(1)
    staged.write_bytes(b"w")
    spool.put(artifact_server.url, 1, _report("lease-y"), weights=staged)
    artifact_server.status = 409
    client = _client(artifact_server.url)
    assert deliver(spool, client, deadline_s=5.0) == (0, 0)
    rejected = sorted(p.name for p in (tmp_path / "spool" / "rejected").iterdir())
    assert any(name.endswith(".weights.pt") for name in rejected)
    assert [m for m, *_ in artifact_server.requests] == ["PUT"]  # no complete after the 409
    client.close()
