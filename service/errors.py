"""Domain errors raised below the HTTP layer, and the one handler that turns them into JSON.

Domain code raises these; `HTTPException` appears only in service/api/. Imports nothing of ours.
"""

from __future__ import annotations

from typing import ClassVar


class ServiceError(Exception):
    """A request the service understood but refuses; `status_code` is its HTTP status."""

    status_code: ClassVar[int] = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(ServiceError):
    status_code = 404


class Conflict(ServiceError):
    """The request lost a race or presents a stale lease: nothing was changed."""

    status_code = 409


class InvalidTransition(Conflict):
    """The trial or search is not in a state that allows this operation."""


class InvalidInput(ServiceError):
    """Input that passed schema validation but is still impossible (e.g. an unmeetable budget)."""

    status_code = 422


class DatabaseUnavailable(ServiceError):
    status_code = 503
