"""Role tokens: admin ⊇ worker, viewer; Bearer header or the dashboard's `vitcube_token` cookie.

Tokens come from VITCUBE_ADMIN_TOKEN / _WORKER_TOKEN / _VIEWER_TOKEN or from the api_tokens table
(`vitcube token create`), which holds SHA-256 digests only. Environment tokens are compared in
constant time; database tokens are found by their digest. No token → 401, wrong role → 403.

With no token configured anywhere the server is in *open* local mode (every request is admin);
`vitcube serve` refuses a non-loopback bind in that case. Imports service.settings,
service.tables, service.db only.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from fastapi import HTTPException, Request, status
from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from service.db import Database
from service.settings import Settings
from service.tables import ApiToken

Role = Literal["admin", "worker", "viewer"]
COOKIE_NAME = "vitcube_token"
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
        self._open_checked_at = 0.0
        self._open = False

    def authenticate(self, token: str) -> Principal | None:
        digest = hash_token(token)
        found: Principal | None = None
        for env_digest, role in self._env:  # every entry compared: no early exit on a match
            if hmac.compare_digest(env_digest, digest.encode()) and found is None:
                found = Principal(role=role, source="env")
        if found is not None:
            return found
        with self._db.session() as session:
            row = session.execute(
                select(ApiToken.id, ApiToken.role).where(
                    ApiToken.token_sha256 == digest, ApiToken.revoked_at.is_(None)
                )
            ).first()
        return None if row is None else Principal(role=row.role, source="db", token_id=row.id)

    def open_mode(self) -> bool:
        """True when no token exists anywhere: a local, loopback-only server."""
        if self._env:
            return False
        now = time.monotonic()
        if now - self._open_checked_at > 2.0:  # a token made by the CLI closes it within 2 s
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


def require_role(role: Role) -> Callable[[Request], Principal]:
    """A FastAPI dependency: the caller's Principal, or 401/403."""
    if role not in GRANTS:
        raise ValueError(f"unknown role {role!r}")

    def dependency(request: Request) -> Principal:
        authenticator: Authenticator = request.app.state.authenticator
        token = presented_token(request)
        if token is None:
            if authenticator.open_mode():
                return Principal(role="admin", source="open")
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "missing token: send `Authorization: Bearer <token>`",
                headers={"WWW-Authenticate": "Bearer"},
            )
        principal = authenticator.authenticate(token)
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
