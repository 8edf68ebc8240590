"""What the API answers when it refuses a request, declared so the OpenAPI document says so.

Every refusal is `{"detail": "<what went wrong and what to change>"}` (`ErrorPublic`): domain
errors (service.errors, mapped in service.app), 401/403 from the role check, 413 from the body
limit, 503 when the database cannot be reached. One status differs: 422 for a request that fails
validation carries the list of what failed (FastAPI's shape), while a 422 for input that
validates but is still impossible (an unmeetable budget, an unknown preset) carries one
sentence, so 422's `detail` is either (`ValidationErrorPublic`).

`document_errors(router)` declares these on every route from what the route is: 401 and 403
where a role is required, 404 where the path names a search or a trial, 422 where there is
anything to validate, and `default` (any status not listed, e.g. 409, 413, 503) everywhere.

Imports service.api.deps only.
"""

from __future__ import annotations

from typing import Any, get_args

from fastapi import APIRouter
from fastapi.dependencies.models import Dependant
from fastapi.dependencies.utils import get_flat_params
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field

from vitcube.service.api.deps import AdminAuth, ViewerAuth, WorkerAuth


class ErrorPublic(BaseModel):
    """A refused request: what went wrong and what to change."""

    detail: str = Field(..., examples=["search 7 does not exist"])


class ValidationIssue(BaseModel):
    """One field that failed validation (pydantic's error, as FastAPI reports it)."""

    model_config = ConfigDict(extra="allow")

    loc: list[str | int] = Field(..., description="Where: e.g. ['body', 'budget', 'c']")
    msg: str
    type: str
    input: Any = None
    ctx: dict[str, Any] | None = None


class ValidationErrorPublic(BaseModel):
    """422: the list of fields that failed validation, or one sentence for input that is
    well-formed but impossible (e.g. a budget no buildable network meets)."""

    detail: list[ValidationIssue] | str


_ROLE_CHECKS = {get_args(auth)[1].dependency for auth in (AdminAuth, WorkerAuth, ViewerAuth)}

_UNAUTHORIZED = {"model": ErrorPublic, "description": "No token, or one the server does not know"}
_FORBIDDEN = {"model": ErrorPublic, "description": "The token's role may not do this"}
_NOT_FOUND = {"model": ErrorPublic, "description": "No such search or trial"}
_INVALID = {
    "model": ValidationErrorPublic,
    "description": "The request failed validation (a list of what failed), or is well-formed "
    "but impossible (one sentence)",
}
_OTHER = {
    "model": ErrorPublic,
    "description": "Any other refusal: 409 a conflict (stale lease, a state that does not "
    "allow this, a formula not fittable yet), 413 a body over the size limit, 503 the "
    "database is unavailable (retry after Retry-After seconds)",
}


def _needs_role(dependant: Dependant) -> bool:
    return any(dep.call in _ROLE_CHECKS or _needs_role(dep) for dep in dependant.dependencies)


def error_responses(route: APIRoute) -> dict[int | str, dict[str, Any]]:
    """The error responses `route` can give, for its `responses=`."""
    responses: dict[int | str, dict[str, Any]] = {}
    if _needs_role(route.dependant):
        responses[401] = _UNAUTHORIZED
        responses[403] = _FORBIDDEN
    if "{" in route.path:  # every path parameter of the API is a search or trial id
        responses[404] = _NOT_FOUND
    if get_flat_params(route.dependant) or route.body_field is not None:
        responses[422] = _INVALID
    responses["default"] = _OTHER
    return responses


def document_errors(router: APIRouter) -> None:
    """Declare the error responses of every route of `router`; a route's own `responses=`
    entries win. Call it before `router` is included anywhere: including it reads each route's
    responses and builds their OpenAPI models from them."""
    for route in router.routes:
        if isinstance(route, APIRoute):
            route.responses = {**error_responses(route), **route.responses}
