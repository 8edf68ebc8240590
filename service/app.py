"""The FastAPI application: `create_app(settings)` wires the database, auth, planner and routes.

Error mapping lives here: domain errors (service.errors) → their status with `{"detail": …}`;
a database that cannot be reached → 503 with Retry-After (never 500); bodies over
`max_body_bytes` → 413 (artifact uploads excepted: they stream into the artifact store under
their own limit). Imports service.* only.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.middleware.gzip import DEFAULT_EXCLUDED_CONTENT_TYPES, GZipMiddleware

from vitcube.service import dashboard, docs
from vitcube.service.analyst import Analyst
from vitcube.service.api import api_router
from vitcube.service.artifacts import ArtifactStore
from vitcube.service.auth import Authenticator
from vitcube.service.db import Database, upgrade
from vitcube.service.errors import ServiceError
from vitcube.service.planner import Planner
from vitcube.service.queue import make_queue
from vitcube.service.results import Results
from vitcube.service.settings import Settings, get_settings

log = logging.getLogger("vitcube.app")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


# Artifact uploads stream straight into the store and enforce `max_artifact_bytes` themselves
# (service.api.trials): the JSON body limit must not cut them off at 1 MiB.
ARTIFACT_UPLOAD = re.compile(r"^/api/trials/[^/]+/(checkpoint|weights)$")


class BodySizeLimit:
    """Refuse request bodies over `limit` bytes with 413, by header or while streaming; PUTs
    to the paths `exempt` matches carry their own limit."""

    def __init__(self, app: ASGIApp, limit: int, exempt: re.Pattern[str] | None = None) -> None:
        self.app = app
        self.limit = limit
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (
            self.exempt is not None
            and scope.get("method") == "PUT"
            and self.exempt.match(scope.get("path", ""))
        ):
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > self.limit:
                    await self._refuse(send)
                    return
        received = 0
        refused = False

        async def limited_receive() -> Message:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    refused = True
                    raise _TooLarge
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _TooLarge:
            if refused:
                await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        response = JSONResponse(
            {"detail": f"request body over {self.limit} bytes; send less"}, status_code=413
        )
        await response({"type": "http"}, _no_receive, send)


class _TooLarge(Exception):
    pass


async def _no_receive() -> Message:  # pragma: no cover - JSONResponse never reads
    return {"type": "http.disconnect"}


def _database_down(exc: Exception) -> bool:
    if isinstance(exc, OperationalError | PoolTimeout):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def _json_safe(value: Any) -> Any:
    """Validation errors echo the input; NaN/Infinity must be spelled out to stay valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def create_app(settings: Settings | None = None) -> FastAPI:
    """The vitcube server. With `settings.background` the planner and sweeper threads run."""
    settings = settings or get_settings()
    if settings.migrate_on_start:
        upgrade(settings.database_url)
    db = Database.from_settings(settings)
    store = ArtifactStore.from_settings(settings)  # checkpoints and weights
    queue = make_queue(db, settings, store)  # the worker protocol, shared by routes and sweeper
    planner = Planner(db, settings, queue, store)
    results = Results(db)
    analyst = Analyst(results)  # the GP views and the formula, fitted off the request path

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.background:
            planner.start()
            analyst.start()
        try:
            yield
        finally:
            analyst.stop()
            planner.stop()
            await db.close_hot()
            db.dispose()

    app = FastAPI(
        title="vitcube",
        version="0.1.0",
        summary="Bayesian-optimisation search for the best MobileViT under a MAC budget.",
        lifespan=lifespan,
        # /docs and /redoc come from service.docs: the same pages without a CDN.
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.db = db
    app.state.queue = queue
    app.state.artifacts = store
    app.state.planner = planner
    app.state.results = results
    app.state.analyst = analyst
    app.state.authenticator = Authenticator(settings, db)

    @app.exception_handler(ServiceError)
    async def _service_error(_: Request, exc: ServiceError) -> JSONResponse:
        return JSONResponse({"detail": exc.message}, status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _json_safe(jsonable_encoder(exc.errors()))
        return JSONResponse({"detail": errors}, status_code=422)

    @app.exception_handler(DBAPIError)
    @app.exception_handler(PoolTimeout)
    async def _database_error(_: Request, exc: Exception) -> JSONResponse:
        if _database_down(exc):
            log.warning("database unavailable: %s", str(exc).splitlines()[0][:200])
            return JSONResponse(
                {"detail": "the database is unavailable; retry shortly"},
                status_code=503,
                headers={"Retry-After": "2"},
            )
        log.error("database error", exc_info=exc)
        return JSONResponse({"detail": "internal database error"}, status_code=500)

    app.include_router(api_router)
    app.include_router(dashboard.router)
    app.include_router(docs.router)
    app.add_middleware(BodySizeLimit, limit=settings.max_body_bytes, exempt=ARTIFACT_UPLOAD)
    # JSON and pages gzipped for browsers (a 10,000-trial view shrinks ~5x); checkpoints and
    # weights are not: torch's zip files do not compress, and workers stream them.
    app.add_middleware(
        GZipMiddleware,
        minimum_size=2048,
        exclude_content_types=(*DEFAULT_EXCLUDED_CONTENT_TYPES, "application/octet-stream"),
    )
    return app
