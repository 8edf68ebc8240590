"""The worker's HTTP client for the vitcube REST API (lease, heartbeat, complete, fail, and the
trial's artifacts: checkpoint upload/download/discard, final weights).

Every call retries connection errors, timeouts, 429 and 5xx responses with exponential
backoff and jitter (honouring `Retry-After`), until an optional deadline passes or an abort
event is set; a 409 (the lease is no longer ours) raises `LeaseLost`; 401/403 raise
`AuthError`; any other 4xx raises `RequestRejected` with the server's message. A 204 from
lease means "nothing queued" and returns None; polite idling is the caller's business.

Bodies are built, and answers parsed, with the payload classes of `vitcube.contract` that the
server validates with: a report the server would refuse (422) raises `RequestRejected` here,
before it is sent. Artifacts are streamed from and to files in 1 MiB chunks (a checkpoint is
never held whole in memory); a download is checked against the server's `X-Vitcube-Sha256`.

Imports httpx and vitcube.contract; never torch (an import contract checks).
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx
from pydantic import BaseModel, ValidationError

from vitcube.contract import (
    HeartbeatReply,
    TrialAck,
    TrialFailure,
    TrialHeartbeat,
    TrialLease,
    TrialReport,
)

RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
CHUNK_BYTES = 1 << 20


class Abort(Protocol):
    """What ends a retry loop early: a `threading.Event`, or anything that waits like one."""

    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> bool: ...


class ClientError(Exception):
    """Base class of the errors this client raises."""


class LeaseLost(ClientError):
    """409: the lease expired or the trial was re-leased, stopped or completed elsewhere."""


class AuthError(ClientError):
    """401/403: the token is missing, unknown or lacks the worker role."""


class RequestRejected(ClientError):
    """A 4xx other than 401/403/409: retrying the same request cannot succeed."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail


class ServerUnavailable(ClientError):
    """The server could not be reached (or kept answering 5xx) before the deadline or abort."""


class ArtifactCorrupt(ClientError):
    """A downloaded artifact's size or sha256 differs from what the server said it is."""


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter: attempt n waits d/2..d, d = min(max_s, initial_s·2ⁿ)."""

    initial_s: float = 0.5
    max_s: float = 30.0

    def delay(self, attempt: int) -> float:
        ceiling = min(self.max_s, self.initial_s * (2.0 ** min(attempt, 30)))
        return ceiling / 2 + random.uniform(0, ceiling / 2)


class VitcubeClient:
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
        if not server.startswith(("http://", "https://")):
            raise ValueError(f"--server must be an http:// or https:// URL, got {server!r}")
        self.server = server.rstrip("/")
        self.worker = worker
        self.backoff = backoff or Backoff()
        self._log = log or (lambda message: None)
        self._http = httpx.Client(
            base_url=self.server,
            headers={"Authorization": f"Bearer {token}", "User-Agent": "vitcube-worker"},
            timeout=timeout_s,
        )

    def close(self) -> None:
        self._http.close()

    # -- the four worker endpoints ------------------------------------------------------------

    def lease(self, *, abort: Abort | None = None) -> TrialLease | None:
        """Lease the next queued trial; None when nothing is queued (204). Retries until abort."""
        response = self._request(
            "POST", "/api/trials/lease", {"worker": self.worker}, deadline_s=None, abort=abort
        )
        if response.status_code == 204:
            return None
        return TrialLease.model_validate_json(response.content)

    def heartbeat(
        self,
        trial_id: int,
        lease_id: str,
        *,
        epoch: int,
        metrics: dict[str, float] | None = None,
        deadline_s: float | None = 30.0,
        abort: Abort | None = None,
    ) -> str:
        """Extend the lease; returns the server's action, "continue" or "stop"."""
        body = _payload(
            TrialHeartbeat, {"lease_id": lease_id, "epoch": epoch, "metrics": metrics or {}}
        )
        response = self._request(
            "POST", f"/api/trials/{trial_id}/heartbeat", body, deadline_s=deadline_s, abort=abort
        )
        return HeartbeatReply.model_validate_json(response.content).action

    def complete(
        self,
        trial_id: int,
        report: Mapping[str, Any],
        *,
        deadline_s: float | None = 60.0,
        abort: Abort | None = None,
    ) -> TrialAck:
        """Report a result: the fields of TrialReport (the REST API's complete row, lease_id)."""
        body = _payload(TrialReport, report)
        response = self._request(
            "POST", f"/api/trials/{trial_id}/complete", body, deadline_s=deadline_s, abort=abort
        )
        return TrialAck.model_validate_json(response.content)

    def fail(
        self,
        trial_id: int,
        lease_id: str,
        error: str,
        *,
        retry: bool,
        worker_fault: bool = False,
        deadline_s: float | None = 20.0,
        abort: Abort | None = None,
    ) -> None:
        """Give a trial up: `retry` true puts it back in the queue; `worker_fault` true says
        this worker (its GPU, its host) broke, so the trial is not charged an attempt."""
        body = _payload(
            TrialFailure,
            {
                "lease_id": lease_id,
                "error": error[:20_000] or "unknown error",
                "retry": retry or worker_fault,
                "worker_fault": worker_fault,
            },
        )
        self._request(
            "POST", f"/api/trials/{trial_id}/fail", body, deadline_s=deadline_s, abort=abort
        )

    # -- artifacts ---------------------------------------------------------------------------------

    def put_checkpoint(
        self,
        trial_id: int,
        lease_id: str,
        path: Path | str,
        *,
        epoch: int,
        step: int = 0,
        deadline_s: float | None = 300.0,
        abort: Abort | None = None,
    ) -> dict[str, Any]:
        """Upload a checkpoint file (streamed); returns the server's ArtifactPublic as a dict.
        409: the lease is not current (LeaseLost); 413: too large (RequestRejected)."""
        return self._put_file(
            f"/api/trials/{trial_id}/checkpoint",
            Path(path),
            {"lease_id": lease_id, "epoch": epoch, "step": step},
            deadline_s=deadline_s,
            abort=abort,
        )

    def put_weights(
        self,
        trial_id: int,
        lease_id: str,
        path: Path | str,
        *,
        deadline_s: float | None = 300.0,
        abort: Abort | None = None,
    ) -> dict[str, Any]:
        """Upload the final weights of a trial about to be completed (streamed)."""
        return self._put_file(
            f"/api/trials/{trial_id}/weights",
            Path(path),
            {"lease_id": lease_id},
            deadline_s=deadline_s,
            abort=abort,
        )

    def download_checkpoint(
        self,
        trial_id: int,
        dest: Path | str,
        *,
        deadline_s: float | None = 300.0,
        abort: Abort | None = None,
    ) -> tuple[int, int, str]:
        """Stream the trial's checkpoint to `dest`; returns (epoch, step, sha256).

        Raises RequestRejected(404) when the trial has none, and ArtifactCorrupt when the bytes
        received do not match the server's size or sha256 (`dest` is then removed).
        """
        dest = Path(dest)
        response = self._request(
            "GET",
            f"/api/trials/{trial_id}/checkpoint",
            deadline_s=deadline_s,
            abort=abort,
            stream=True,
        )
        digest = hashlib.sha256()
        size = 0
        try:
            with dest.open("wb") as handle:
                for chunk in response.iter_bytes(CHUNK_BYTES):
                    digest.update(chunk)
                    handle.write(chunk)
                    size += len(chunk)
        except (httpx.TransportError, httpx.TimeoutException) as error:
            dest.unlink(missing_ok=True)
            raise ArtifactCorrupt(
                f"the checkpoint download broke off after {size} bytes: {error}"
            ) from None
        finally:
            response.close()
        expected_sha = response.headers.get("x-vitcube-sha256")
        expected_size = response.headers.get("content-length")
        sha256 = digest.hexdigest()
        problem = None
        if expected_size is not None and expected_size.isdigit() and int(expected_size) != size:
            problem = f"{size} bytes received, the server announced {expected_size}"
        elif expected_sha and expected_sha.lower() != sha256:
            problem = f"sha256 {sha256} received, the server stores {expected_sha}"
        if problem is not None:
            dest.unlink(missing_ok=True)
            raise ArtifactCorrupt(f"checkpoint of trial {trial_id}: {problem}")
        epoch = _int_header(response, "x-vitcube-epoch")
        step = _int_header(response, "x-vitcube-step")
        return epoch, step, sha256

    def discard_checkpoint(
        self,
        trial_id: int,
        lease_id: str,
        reason: str,
        *,
        deadline_s: float | None = 30.0,
        abort: Abort | None = None,
    ) -> int:
        """Ask the server to delete a checkpoint this worker could not load; returns how many
        objects it deleted."""
        response = self._request(
            "DELETE",
            f"/api/trials/{trial_id}/checkpoint",
            params={"lease_id": lease_id, "reason": reason[:2000] or "unreadable"},
            deadline_s=deadline_s,
            abort=abort,
        )
        try:
            return int(response.json().get("deleted", 0))
        except (ValueError, AttributeError, TypeError):
            return 0

    def _put_file(
        self,
        path: str,
        source: Path,
        params: Mapping[str, Any],
        *,
        deadline_s: float | None,
        abort: Abort | None,
    ) -> dict[str, Any]:
        size = source.stat().st_size  # OSError when the file is gone: the caller's problem

        def chunks() -> Iterator[bytes]:
            with source.open("rb") as handle:
                while chunk := handle.read(CHUNK_BYTES):
                    yield chunk

        response = self._request(
            "PUT",
            path,
            params=params,
            content=chunks,
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
            deadline_s=deadline_s,
            abort=abort,
        )
        try:
            answer = response.json()
        except ValueError:
            return {}
        return dict(answer) if isinstance(answer, dict) else {}

    # -- plumbing ---------------------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        deadline_s: float | None,
        abort: Abort | None,
        params: Mapping[str, Any] | None = None,
        content: Callable[[], Iterator[bytes]] | None = None,
        headers: Mapping[str, str] | None = None,
        stream: bool = False,
    ) -> httpx.Response:
        """Send until a 2xx (returned; with `stream`, its body still unread: close it), raising
        LeaseLost/AuthError/RequestRejected on a final 4xx and ServerUnavailable at the deadline.
        `content` makes a fresh body iterator for every attempt (a file re-read from the top)."""
        deadline = None if deadline_s is None else time.monotonic() + deadline_s
        attempt = 0
        while True:
            wait_s: float
            try:
                request = self._http.build_request(
                    method,
                    path,
                    json=body,
                    params=params,
                    content=content() if content is not None else None,
                    headers=headers,
                )
                response = self._http.send(request, stream=stream)
            except (httpx.TransportError, httpx.TimeoutException) as error:
                problem = f"{type(error).__name__}: {error}"
                wait_s = self.backoff.delay(attempt)
            else:
                status = response.status_code
                if status < 300:
                    return response
                if stream:
                    response.read()
                    response.close()
                detail = _detail(response)
                if status == 409:
                    raise LeaseLost(detail)
                if status in (401, 403):
                    raise AuthError(f"{status} from {self.server}{path}: {detail}")
                if status not in RETRYABLE_STATUS:
                    raise RequestRejected(status, detail)
                problem = f"HTTP {status}: {detail}"
                wait_s = max(self.backoff.delay(attempt), _retry_after(response))
            attempt += 1
            if deadline is not None and time.monotonic() + wait_s > deadline:
                raise ServerUnavailable(f"{method} {self.server}{path} failed: {problem}")
            self._log(f"{method} {path}: {problem}; retrying in {wait_s:.1f} s")
            if abort is not None:
                if abort.wait(wait_s):
                    raise ServerUnavailable(
                        f"{method} {self.server}{path} aborted after: {problem}"
                    )
            else:
                time.sleep(wait_s)


def _payload(schema: type[BaseModel], fields: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON body of `schema` built from `fields`; RequestRejected(422) if the server's
    validation (the same class) would refuse it, so a bad report is never sent."""
    try:
        return schema.model_validate(dict(fields)).model_dump(mode="json", exclude_none=True)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in problem['loc']) or 'body'}: {problem['msg']}"
            for problem in error.errors()
        )
        raise RequestRejected(422, f"not sent, the server would refuse it: {problems}") from None


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500] or response.reason_phrase
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])[:2000]
    return str(body)[:2000]


def _int_header(response: httpx.Response, name: str) -> int:
    value = response.headers.get(name, "0")
    try:
        return max(0, int(value))
    except ValueError:
        return 0


def _retry_after(response: httpx.Response) -> float:
    value = response.headers.get("retry-after")
    try:
        return min(300.0, max(0.0, float(value))) if value else 0.0
    except ValueError:
        return 0.0
