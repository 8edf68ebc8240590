"""The JSON API under /api: one router per resource, joined here.

Imports service.api.* only.
"""

from __future__ import annotations

from fastapi import APIRouter

from vitcube.service.api import searches, trials, workers

api_router = APIRouter(prefix="/api")
api_router.include_router(searches.router)
api_router.include_router(trials.router)
api_router.include_router(workers.router)
