"""`Client`: the vitcube REST API as typed Python methods, one per endpoint.

The CLI's `vitcube search …` commands, the worker's HTTP calls (`workers.client`) and the tests
all talk to a server through this class. Answers are parsed with the shared contract's models
(`SearchPublic`, `TrialPublic`, `SearchPlan`, `FormulaPublic`, `TrialLease`, …); worker bodies
are built with the same classes the server validates with, so a report the server would refuse
raises `RequestRejected` here before it is sent.

Retries: a request that never reached the server (connection refused, DNS, connect timeout)
is retried with exponential backoff and jitter, as is a 503 (honouring `Retry-After`), until
`retry_for_s` (or the call's deadline) passes or an abort event is set. A request that may have
reached the server is retried only when repeating it is harmless: reads, and the worker's calls,
which carry a lease id. `POST /api/searches` is not retried after a read timeout, so a search is
never created twice. Workers widen the retried statuses to 408/425/429/5xx.

A refusal raises a `ServerRefused` subclass with the server's own message (`detail`); 404 is
`NotFound`, 401/403 `AuthError`, 409 on a worker call `LeaseLost`. Imports httpx, pydantic and
vitcube.contract; never torch, the server or the workers (an import contract checks).
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import httpx
from pydantic import BaseModel, TypeAdapter, ValidationError

from vitcube.client.errors import (
    ArtifactCorrupt,
    AuthError,
    LeaseLost,
    NotFound,
    RequestRejected,
    ServerRefused,
    ServerUnavailable,
)
from vitcube.contract import (
    FACTORS,
    ArchitecturePublic,
    FormulaPublic,
    HeartbeatReply,
    SearchPlan,
    SearchPublic,
    TrialAck,
    TrialFailure,
    TrialHeartbeat,
    TrialLease,
    TrialPublic,
    TrialReport,
    WorkerPublic,
)

if TYPE_CHECKING:
    import pandas

# What a user's client retries: the server says it is briefly unavailable (a restart, a full
# pool). A worker's client also retries the statuses a load balancer or a busy server answers.
USER_RETRY_STATUS = frozenset({503})
WORKER_RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
CHUNK_BYTES = 1 << 20
# Transport errors raised before a byte of the request left: always safe to send again.
_UNSENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)

Model = TypeVar("Model", bound=BaseModel)


class Abort(Protocol):
    """What ends a retry loop early: a `threading.Event`, or anything that waits like one."""

    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> bool: ...


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter: attempt n waits d/2..d, d = min(max_s, initial_s·2ⁿ)."""

    initial_s: float = 0.5
    max_s: float = 30.0

    def delay(self, attempt: int) -> float:
        ceiling = min(self.max_s, self.initial_s * (2.0 ** min(attempt, 30)))
        return ceiling / 2 + random.uniform(0, ceiling / 2)


class Client:
    """One vitcube server, one token. Thread-safe (httpx.Client is); use as a context manager
    or call `close()`.

    >>> with Client("http://127.0.0.1:8000", token) as client:   # doctest: +SKIP
    ...     search = client.create_search(yaml.safe_load(open("search.yaml")))
    ...     client.pareto_frame(search.id)
    """

    def __init__(
        self,
        server: str,
        token: str | None = None,
        *,
        worker: str | None = None,
        timeout_s: float = 30.0,
        retry_for_s: float = 30.0,
        retry_status: frozenset[int] = USER_RETRY_STATUS,
        backoff: Backoff | None = None,
        log: Callable[[str], None] | None = None,
        user_agent: str = "vitcube-client",
    ) -> None:
        if not server.startswith(("http://", "https://")):
            raise ValueError(f"the server must be an http:// or https:// URL, got {server!r}")
        self.server = server.rstrip("/")
        self.worker = worker
        self.retry_for_s = retry_for_s
        self.retry_status = retry_status
        self.backoff = backoff or Backoff()
        self._log = log or (lambda message: None)
        headers = {"User-Agent": user_agent}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(base_url=self.server, headers=headers, timeout=timeout_s)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- searches ---------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """GET /api/health (no token needed): the server's and its database's state."""
        return dict(self._get_json("/api/health"))

    def list_searches(self) -> list[SearchPublic]:
        return _parse_list(SearchPublic, self._get_json("/api/searches"))

    def get_search(self, search_id: int) -> SearchPublic:
        return SearchPublic.model_validate(self._get_json(f"/api/searches/{search_id}"))

    def create_search(self, body: Mapping[str, Any]) -> SearchPublic:
        """POST /api/searches with `body` (the REST API's create body, e.g. a loaded YAML)."""
        response = self._request("POST", "/api/searches", dict(body))
        return SearchPublic.model_validate_json(response.content)

    def validate_search(self, body: Mapping[str, Any]) -> SearchPlan:
        """What `body` would create (m0, budget MACs, references, smallest network), or the
        `RequestRejected(422)` that create would raise; nothing is created."""
        response = self._request("POST", "/api/searches/validate", dict(body), idempotent=True)
        return SearchPlan.model_validate_json(response.content)

    def stop_search(self, search_id: int) -> SearchPublic:
        response = self._request("POST", f"/api/searches/{search_id}/stop", idempotent=True)
        return SearchPublic.model_validate_json(response.content)

    def resume_search(self, search_id: int) -> SearchPublic:
        """Resume a search that fail fast paused, once the cause is fixed."""
        response = self._request("POST", f"/api/searches/{search_id}/resume", idempotent=True)
        return SearchPublic.model_validate_json(response.content)

    def trials(
        self,
        search_id: int,
        *,
        states: Sequence[str] | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[TrialPublic]:
        """The search's trials in id order (only `states`, if given), all or one page."""
        params: dict[str, Any] = {"offset": offset}
        if limit is not None:
            params["limit"] = limit
        if states is not None:
            if not states:
                return []  # no state asked for: no trial (the server reads no `state` as all)
            params["state"] = list(states)
        return _parse_list(
            TrialPublic, self._get_json(f"/api/searches/{search_id}/trials", params=params)
        )

    def trial(self, trial_id: int) -> TrialPublic:
        return TrialPublic.model_validate(self._get_json(f"/api/trials/{trial_id}"))

    def pareto(self, search_id: int) -> list[TrialPublic]:
        """The non-dominated completed trials (top-1 against MACs), by MACs."""
        return _parse_list(TrialPublic, self._get_json(f"/api/searches/{search_id}/pareto"))

    def pareto_frame(self, search_id: int) -> pandas.DataFrame:
        """The Pareto front as a pandas DataFrame (one row per trial; needs pandas)."""
        return trials_frame(self.pareto(search_id))

    def trials_frame(self, search_id: int, *, states: Sequence[str] | None = None) -> Any:
        """The trials as a pandas DataFrame (needs pandas)."""
        return trials_frame(self.trials(search_id, states=states))

    def analysis(self, search_id: int, *, fresh: bool = False) -> dict[str, Any]:
        """The GP views, importance and the fit they come from (`fitted_on`, `stale`)."""
        params = {"fresh": "true"} if fresh else None
        return dict(self._get_json(f"/api/searches/{search_id}/analysis", params=params))

    def formula(
        self, search_id: int, c: float | None = None, *, fresh: bool = False
    ) -> FormulaPublic:
        """The downsizing formula at c (default: the search's own): factors ± std, the network
        built from them and its MACs. `RequestRejected(409)` until enough trials completed."""
        params: dict[str, Any] = {}
        if c is not None:
            params["c"] = c
        if fresh:
            params["fresh"] = "true"
        return FormulaPublic.model_validate(
            self._get_json(f"/api/searches/{search_id}/formula", params=params)
        )

    def export_csv(self, search_id: int) -> str:
        return self._request("GET", f"/api/searches/{search_id}/export.csv").text

    def architecture(self, trial_id: int) -> ArchitecturePublic:
        """What rebuilds the trial's network and how its input is prepared."""
        return ArchitecturePublic.model_validate(
            self._get_json(f"/api/trials/{trial_id}/architecture")
        )

    def workers(self) -> list[WorkerPublic]:
        return _parse_list(WorkerPublic, self._get_json("/api/workers"))

    def download_weights(self, trial_id: int, dest: Path | str) -> str:
        """Stream the trial's final weights to `dest`; returns their sha256."""
        return self._download(f"/api/trials/{trial_id}/weights", Path(dest), "weights")[2]

    # -- the worker endpoints ---------------------------------------------------------------------

    def lease(
        self, *, abort: Abort | None = None, trainers: Sequence[str] | None = None
    ) -> TrialLease | None:
        """Lease the next queued trial as `worker`; None when nothing is queued (204). Retries
        until abort. `trainers`: the trainer labels this worker runs ("builtin",
        "command:NAME"); the server leases only their searches' trials (None: builtin only)."""
        if self.worker is None:
            raise ValueError("lease needs the client's worker name: Client(..., worker='box:0')")
        body: dict[str, Any] = {"worker": self.worker}
        if trainers is not None:
            body["trainers"] = list(trainers)
        response = self._request(
            "POST",
            "/api/trials/lease",
            body,
            deadline_s=None,
            abort=abort,
            idempotent=True,  # a lease lost to a timeout expires and goes back to the queue
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
        response = self._lease_call(
            "POST", f"/api/trials/{trial_id}/heartbeat", body, deadline_s, abort
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
        response = self._lease_call(
            "POST", f"/api/trials/{trial_id}/complete", body, deadline_s, abort
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
        self._lease_call("POST", f"/api/trials/{trial_id}/fail", body, deadline_s, abort)

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

        Raises NotFound when the trial has none, and ArtifactCorrupt when the bytes received do
        not match the server's size or sha256 (`dest` is then removed).
        """
        return self._download(
            f"/api/trials/{trial_id}/checkpoint",
            Path(dest),
            "checkpoint",
            deadline_s=deadline_s,
            abort=abort,
        )

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
            lease_call=True,
        )
        try:
            return int(response.json().get("deleted", 0))
        except (ValueError, AttributeError, TypeError):
            return 0

    # -- plumbing ---------------------------------------------------------------------------------

    def _get_json(self, path: str, *, params: Mapping[str, Any] | None = None) -> Any:
        response = self._request("GET", path, params=params)
        try:
            return response.json()
        except ValueError:
            raise ServerRefused(
                response.status_code, f"GET {path} answered something that is not JSON"
            ) from None

    def _lease_call(
        self,
        method: str,
        path: str,
        body: dict[str, Any],
        deadline_s: float | None,
        abort: Abort | None,
    ) -> httpx.Response:
        return self._request(
            method, path, body, deadline_s=deadline_s, abort=abort, idempotent=True, lease_call=True
        )

    def _download(
        self,
        path: str,
        dest: Path,
        what: str,
        *,
        deadline_s: float | None = 300.0,
        abort: Abort | None = None,
    ) -> tuple[int, int, str]:
        response = self._request("GET", path, deadline_s=deadline_s, abort=abort, stream=True)
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
                f"the {what} download broke off after {size} bytes: {error}"
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
            raise ArtifactCorrupt(f"{what} at {path}: {problem}")
        return (
            _int_header(response, "x-vitcube-epoch"),
            _int_header(response, "x-vitcube-step"),
            sha256,
        )

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
            lease_call=True,
        )
        try:
            answer = response.json()
        except ValueError:
            return {}
        return dict(answer) if isinstance(answer, dict) else {}

    def _request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        deadline_s: float | None = -1.0,
        abort: Abort | None = None,
        params: Mapping[str, Any] | None = None,
        content: Callable[[], Iterator[bytes]] | None = None,
        headers: Mapping[str, str] | None = None,
        stream: bool = False,
        idempotent: bool | None = None,
        lease_call: bool = False,
    ) -> httpx.Response:
        """Send until a 2xx (returned; with `stream`, its body still unread: close it).

        Raises a ServerRefused subclass on a final refusal (409 on a `lease_call` is LeaseLost)
        and ServerUnavailable at the deadline (default `retry_for_s`; None: no deadline) or on
        an error after which repeating a non-`idempotent` request could act twice. `content`
        makes a fresh body iterator for every attempt (a file re-read from the top).
        """
        if deadline_s is not None and deadline_s < 0:
            deadline_s = self.retry_for_s
        if idempotent is None:
            idempotent = method in ("GET", "HEAD", "PUT", "DELETE")
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
                problem = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
                if isinstance(error, httpx.UnsupportedProtocol):
                    raise ServerUnavailable(
                        f"{self.server} is not an HTTP server URL: {error}"
                    ) from None
                if not idempotent and not isinstance(error, _UNSENT):
                    raise ServerUnavailable(
                        f"{method} {self.server}{path} broke off after it was sent ({problem}); "
                        "it may have taken effect, so it was not repeated: look before retrying"
                    ) from None
                wait_s = self.backoff.delay(attempt)
            else:
                status = response.status_code
                if status < 300:
                    return response
                if stream:
                    response.read()
                    response.close()
                detail = _detail(response)
                if status == 409 and lease_call:
                    raise LeaseLost(detail)
                if status in (401, 403):
                    raise AuthError(f"{status} from {self.server}{path}: {detail}", status, detail)
                if status not in self.retry_status:
                    if status == 404:
                        raise NotFound(status, detail)
                    if status < 500:
                        raise RequestRejected(status, detail)
                    raise ServerRefused(
                        status, detail, f"{status} from {self.server}{path}: {detail}"
                    )
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


def trials_frame(trials: Sequence[TrialPublic]) -> pandas.DataFrame:
    """Trials as a pandas DataFrame: one row per trial, the effective factors as columns
    `r`, `d_i`, `d_m`, `w` (requested ones as `requested_r`, …), no learning curves."""
    try:
        import pandas
    except ImportError:
        raise ImportError(
            "a DataFrame needs pandas: pip install pandas (or use the list the method without "
            "'_frame' returns)"
        ) from None
    if not trials:  # the same columns, no rows: frame["top1"] works before anything completed
        shown = sorted(TrialPublic.model_fields.keys() - _NOT_IN_FRAME)
        requested = [f"requested_{factor}" for factor in FACTORS]
        return pandas.DataFrame(columns=[*shown, *FACTORS, *requested])
    rows = []
    for trial in trials:
        row = trial.model_dump(exclude=_NOT_IN_FRAME)
        row.update(trial.effective_factors)
        row.update({f"requested_{name}": value for name, value in trial.factors.items()})
        rows.append(row)
    return pandas.DataFrame(rows)


_NOT_IN_FRAME = {"curve", "factors", "effective_factors", "arch"}


def _parse_list(model: type[Model], data: Any) -> list[Model]:
    return TypeAdapter(list[model]).validate_python(data)  # type: ignore[valid-type]


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
    """The server's message: FastAPI's `detail` (a validation error's list made readable)."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:500] or response.reason_phrase
    if isinstance(body, dict) and "detail" in body:
        detail = body["detail"]
        if isinstance(detail, list):
            return "; ".join(_problem(item) for item in detail)[:2000]
        return str(detail)[:2000]
    return str(body)[:2000]


def _problem(item: Any) -> str:
    if not isinstance(item, dict):
        return str(item)
    where = ".".join(str(part) for part in item.get("loc", ()) if part != "body")
    message = str(item.get("msg", item)).removeprefix("Value error, ")  # pydantic's validators
    return f"{where}: {message}" if where else message


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
