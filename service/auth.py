"""Role tokens: admin ⊇ worker, viewer; Bearer header or the dashboard's `vitcube_token` cookie.

Tokens come from VITCUBE_ADMIN_TOKEN / _WORKER_TOKEN / _VIEWER_TOKEN or from the api_tokens table
(`vitcube token create`), which holds SHA-256 digests only. Environment tokens are compared in
constant time; database tokens are found by their digest. No token → 401, wrong role → 403.

A database token that was found is remembered by its digest for `auth_cache_seconds` (5 s by
default), so a busy worker does not cost a token query per request: revoking a token
(`revoked_at`) takes effect within that time. Unknown tokens are never remembered: a token just
made by the CLI works at once. The role check is an async dependency that only goes to a worker
thread (and the database) when the answer is not already known.

With no token configured anywhere the server is in *open* local mode (every request is admin);
`vitcube serve` refuses a non-loopback bind in that case. Imports service.settings,
service.tables, service.db only.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from fastapi import HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from vitcube.service.db import Database
from vitcube.service.settings import Settings
from vitcube.service.tables import ApiToken

Role = Literal["admin", "worker", "viewer"]
COOKIE_NAME = "vitcube_token"
OPEN_RECHECK_S = 2.0  # open mode is re-checked this often: a token made by the CLI closes it
MAX_REMEMBERED = 4096  # database tokens remembered at once (the cache is emptied beyond)
# Which roles may act as which: admin does everything.
GRANTS: dict[str, frozenset[str]] = {
    "admin": frozenset({"admin", "worker", "viewer"}),
    "worker": frozenset({"worker"}),
    "viewer": frozenset({"viewer"}),
}


@dataclass(frozen=True)
class Principal:
    """Who is calling: the role their token carries and where it came from."""

    role: str
    source: str  # "env", "db" or "open"
    token_id: int | None = None


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return "vc_" + secrets.token_urlsafe(32)


def create_token(session: Session, role: Role, name: str | None = None) -> tuple[ApiToken, str]:
    """Store a new token's digest; the plain token is returned once and never stored."""
    if role not in GRANTS:
        raise ValueError(f"role must be one of {sorted(GRANTS)}, got {role!r}")
    token = new_token()
    row = ApiToken(role=role, name=name, token_sha256=hash_token(token))
    session.add(row)
    session.flush()
    return row, token


class Authenticator:
    """Resolves a presented token to a Principal (or None)."""

    def __init__(self, settings: Settings, db: Database) -> None:
        self._db = db
        self._env: list[tuple[bytes, str]] = [
            (hash_token(secret.get_secret_value()).encode(), role)
            for role, secret in (
                ("admin", settings.admin_token),
                ("worker", settings.worker_token),
                ("viewer", settings.viewer_token),
            )
            if secret is not None
        ]
        self._open_checked_at = -OPEN_RECHECK_S
        self._open = False
        self._ttl = settings.auth_cache_seconds
        # digest → (principal, monotonic expiry): database tokens recently found.
        self._known: dict[str, tuple[Principal, float]] = {}

    def _from_env(self, digest: str) -> Principal | None:
        found: Principal | None = None
        for env_digest, role in self._env:  # every entry compared: no early exit on a match
            if hmac.compare_digest(env_digest, digest.encode()) and found is None:
                found = Principal(role=role, source="env")
        return found

    def _remembered(self, digest: str) -> Principal | None:
        entry = self._known.get(digest)
        if entry is None:
            return None
        if entry[1] <= time.monotonic():
            self._known.pop(digest, None)
            return None
        return entry[0]

    def cached(self, token: str) -> Principal | None:
        """The caller's Principal if known without the database (environment tokens, database
        tokens found within the last `auth_cache_seconds`), else None: ask `authenticate`."""
        digest = hash_token(token)
        return self._from_env(digest) or self._remembered(digest)

    def authenticate(self, token: str) -> Principal | None:
        digest = hash_token(token)
        found = self._from_env(digest) or self._remembered(digest)
        if found is not None:
            return found
        with self._db.session() as session:
            row = session.execute(
                select(ApiToken.id, ApiToken.role).where(
                    ApiToken.token_sha256 == digest, ApiToken.revoked_at.is_(None)
                )
            ).first()
        if row is None:
            return None
        found = Principal(role=row.role, source="db", token_id=row.id)
        if self._ttl > 0:
            if len(self._known) >= MAX_REMEMBERED:
                self._known.clear()
            self._known[digest] = (found, time.monotonic() + self._ttl)
        return found

    def open_mode_cached(self) -> bool | None:
        """`open_mode()` if known without the database, else None."""
        if self._env:
            return False
        if time.monotonic() - self._open_checked_at > OPEN_RECHECK_S:
            return None
        return self._open

    def open_mode(self) -> bool:
        """True when no token exists anywhere: a local, loopback-only server."""
        known = self.open_mode_cached()
        if known is not None:
            return known
        now = time.monotonic()
        with self._db.session() as session:
            self._open = not session.scalar(select(exists().where(ApiToken.id.is_not(None))))
        self._open_checked_at = now
        return self._open


def presented_token(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    cookie = request.cookies.get(COOKIE_NAME)
    return cookie or None


def require_role(role: Role) -> Callable[[Request], Awaitable[Principal]]:
    """A FastAPI dependency: the caller's Principal, or 401/403."""
    if role not in GRANTS:
        raise ValueError(f"unknown role {role!r}")

    async def dependency(request: Request) -> Principal:
        authenticator: Authenticator = request.app.state.authenticator
        token = presented_token(request)
        if token is None:
            is_open = authenticator.open_mode_cached()
            if is_open is None:
                is_open = await run_in_threadpool(authenticator.open_mode)
            if is_open:
                return Principal(role="admin", source="open")
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "missing token: send `Authorization: Bearer <token>`",
                headers={"WWW-Authenticate": "Bearer"},
            )
        principal = authenticator.cached(token)
        if principal is None:  # a database token not seen lately, or an unknown one
            principal = await run_in_threadpool(authenticator.authenticate, token)
        if principal is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "unknown token",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if role not in GRANTS[principal.role]:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"this needs the {role} role; the token is {principal.role}",
            )
        return principal

    dependency.__name__ = f"require_{role}"
    return dependency
