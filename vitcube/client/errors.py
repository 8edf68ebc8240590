"""What `vitcube.client` raises: a small hierarchy whose names say what went wrong.

Every answer the server refused carries its HTTP status and the server's own message
(`detail`), so a caller shows the server's words, never a traceback. Imports nothing.
"""

from __future__ import annotations


class ClientError(Exception):
    """Base class of the errors this client raises."""


class ServerRefused(ClientError):
    """The server answered and refused the request (4xx, or a 5xx that was not retried)."""

    def __init__(self, status: int, detail: str, message: str | None = None) -> None:
        super().__init__(message or f"{status}: {detail}")
        self.status = status
        self.detail = detail


class LeaseLost(ServerRefused):
    """409 on a worker call: the lease expired, or the trial was re-leased, stopped or completed
    elsewhere."""

    def __init__(self, detail: str, status: int = 409) -> None:
        super().__init__(status, detail, detail)


class AuthError(ServerRefused):
    """401/403: the token is missing, unknown or lacks the role the call needs."""

    def __init__(self, message: str, status: int = 401, detail: str | None = None) -> None:
        super().__init__(status, detail or message, message)


class RequestRejected(ServerRefused):
    """A 4xx other than 401/403 (and, on worker calls, 409): the same request cannot succeed."""


class NotFound(RequestRejected):
    """404: no such search, trial or artifact."""


class ServerUnavailable(ClientError):
    """The server could not be reached (or kept answering 503) before the deadline or abort."""


class ArtifactCorrupt(ClientError):
    """A downloaded artifact's size or sha256 differs from what the server said it is."""
