"""The worker's HTTP client: `vitcube.client.Client` as one named worker.

The calls themselves (lease, heartbeat, complete, fail, and the trial's artifacts: checkpoint
upload/download/discard, final weights) are `vitcube.client.Client`'s, the one client the CLI
and the tests use too. A worker's differs only in its retries: connection errors, timeouts,
408/425/429 and 5xx are retried with exponential backoff and jitter (honouring `Retry-After`)
until the call's deadline passes or an abort event is set, since every worker call is safe to
repeat (it carries its lease id). A 409 raises `LeaseLost`; 401/403 `AuthError`; any other
4xx `RequestRejected` with the server's message. A 204 from lease means "nothing queued" and
returns None; polite idling is the caller's business.

Imports vitcube.client; never torch (an import contract checks).
"""

from __future__ import annotations

from typing import Any

from vitcube.client import (
    WORKER_RETRY_STATUS,
    Abort,
    ArtifactCorrupt,
    AuthError,
    Backoff,
    Client,
    ClientError,
    LeaseLost,
    NotFound,
    RequestRejected,
    ServerUnavailable,
)

__all__ = [
    "Abort",
    "ArtifactCorrupt",
    "AuthError",
    "Backoff",
    "ClientError",
    "LeaseLost",
    "NotFound",
    "RequestRejected",
    "ServerUnavailable",
    "VitcubeClient",
]


class VitcubeClient(Client):
    """Talks to one vitcube server as one named worker. Thread-safe (httpx.Client is)."""

    def __init__(
        self,
        server: str,
        token: str,
        *,
        worker: str,
        timeout_s: float = 30.0,
        backoff: Backoff | None = None,
        log: Any = None,
    ) -> None:
        try:
            super().__init__(
                server,
                token,
                worker=worker,
                timeout_s=timeout_s,
                retry_status=WORKER_RETRY_STATUS,
                backoff=backoff,
                log=log,
                user_agent="vitcube-worker",
            )
        except ValueError:
            raise ValueError(
                f"--server must be an http:// or https:// URL, got {server!r}"
            ) from None
