"""The HTTP client and the spool against a real server (and against no server at all)."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.factories import curve
from vitcube.contract import TrialAck, TrialLease
from vitcube.workers.client import (
    AuthError,
    Backoff,
    RequestRejected,
    ServerUnavailable,
    VitcubeClient,
)
from vitcube.workers.spool import Spool, deliver


def _dead_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])  # closed again: nothing listens there


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    backoff = Backoff(initial_s=0.5, max_s=8.0)
    for attempt, ceiling in [(0, 0.5), (1, 1.0), (3, 4.0), (4, 8.0), (30, 8.0)]:
        delays = [backoff.delay(attempt) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 100  # jittered, so many workers do not retry in lockstep


def test_unreachable_server_is_retried_until_the_deadline() -> None:
    messages: list[str] = []
    client = VitcubeClient(
        f"http://127.0.0.1:{_dead_port()}",
        "token",
        worker="t",
        backoff=Backoff(initial_s=0.05, max_s=0.2),
        log=messages.append,
    )
    start = time.monotonic()
    with pytest.raises(ServerUnavailable, match="ConnectError"):
        client.heartbeat(1, "lease", epoch=0, deadline_s=1.0)
    assert 0.5 < time.monotonic() - start < 5
    assert len(messages) >= 3 and "retrying in" in messages[0]
    abort = threading.Event()
    threading.Timer(0.3, abort.set).start()
    with pytest.raises(ServerUnavailable, match="aborted"):
        client.lease(abort=abort)  # no deadline: only the abort ends it


def test_a_report_the_server_would_refuse_is_not_sent() -> None:
    client = VitcubeClient(
        f"http://127.0.0.1:{_dead_port()}",
        "token",
        worker="t",
        backoff=Backoff(initial_s=0.05, max_s=0.1),
    )
    good = {"lease_id": "lease", "top1": 0.5, "curve": curve(2, 0.5)}
    bad = {**good, "curve": [{"epoch": 1, "val_top1": 0.5, "epoch_time_s": True}]}
    # Refused before any request: no retrying against the (dead) server, a final 422.
    with pytest.raises(RequestRejected, match=r"curve\.0\.epoch_time_s") as refused:
        client.complete(1, bad, deadline_s=30.0)
    assert refused.value.status == 422
    with pytest.raises(RequestRejected, match="retry"):
        client.fail(1, "lease", "boom", retry="yes")  # type: ignore[arg-type]
    with pytest.raises(ServerUnavailable):  # the good one is really sent (and retried)
        client.complete(1, good, deadline_s=0.3)


def test_client_and_spool_against_a_real_server(
    live_server: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    worker_token = request.getfixturevalue("worker_token")
    client = VitcubeClient(live_server.url, worker_token, worker="client-test")
    assert client.lease() is None  # nothing queued: 204
    with pytest.raises(AuthError, match="401"):
        VitcubeClient(live_server.url, "wrong-token", worker="x").lease()

    search_id = live_server.create_search()
    lease = None
    deadline = time.monotonic() + 30
    while lease is None and time.monotonic() < deadline:
        lease = client.lease()
        time.sleep(0.1)
    assert isinstance(lease, TrialLease) and lease.search_id == search_id
    assert lease.training["epochs"] == 2 and lease.kind.startswith("reference:")
    assert lease.arch["resolution"] == 32 and lease.lease_seconds == 60.0
    assert client.heartbeat(lease.id, lease.lease_id, epoch=1, metrics={"val_top1": 0.5}) == (
        "continue"
    )

    spool = Spool(tmp_path / "spool")
    body = {"lease_id": lease.lease_id, "top1": 0.5, "top5": 0.9, "curve": [], "surrogate": True}
    other = spool.put("http://elsewhere:1", lease.id, dict(body))
    stale = spool.put(live_server.url, lease.id, dict(body, lease_id="not-the-lease"))
    assert deliver(spool, client) == (0, 0)  # the stale one: 409, set aside
    assert (spool.rejected_dir / stale.path.name).exists()
    assert "409" in (spool.rejected_dir / stale.path.name).with_suffix(".reason.txt").read_text()
    good = spool.put(live_server.url, lease.id, body)
    assert [e.path for e in spool.pending(live_server.url)] == [good.path]
    assert deliver(spool, client) == (1, 0)
    assert live_server.trial(search_id)["state"] == "completed"
    ack = client.complete(lease.id, body)  # the same report again: acknowledged, parsed
    assert isinstance(ack, TrialAck) and ack.state == "completed"
    # Delivering the identical report again (a lost acknowledgement) is acknowledged too.
    again = spool.put(live_server.url, lease.id, body)
    assert deliver(spool, client) == (1, 0) and not again.path.exists()
    assert [e.path for e in spool.pending()] == [other.path]  # another server's: untouched
