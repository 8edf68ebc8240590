"""The JSON API under /api: one router per resource, joined here, with every route's error
responses declared (service.api.responses) so the OpenAPI document states them.

Imports service.api.* only.
"""

from __future__ import annotations

from fastapi import APIRouter

from vitcube.service.api import searches, trials, workers
from vitcube.service.api.responses import document_errors

api_router = APIRouter(prefix="/api")
for resource in (searches, trials, workers):
    document_errors(resource.router)  # before including: including reads each route's responses
    api_router.include_router(resource.router)
