"""Dashboard pages (owned by the dashboard work; a stub until then)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(include_in_schema=False)
