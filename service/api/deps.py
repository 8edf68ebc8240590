"""Typed FastAPI dependencies shared by the routers (the database, the trial queue, the artifact
store, the roles, the planner).

All are `async def`: FastAPI runs a plain `def` dependency in a worker thread, a hop that costs
more than these lookups do.

Imports service.artifacts, service.auth, service.db, service.planner, service.queue,
service.results, service.settings.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request

from vitcube.service.analyst import Analyst
from vitcube.service.artifacts import ArtifactStore
from vitcube.service.auth import Principal, require_role
from vitcube.service.db import Database
from vitcube.service.planner import Planner
from vitcube.service.queue import TrialQueue
from vitcube.service.results import Results
from vitcube.service.settings import Settings


async def get_db(request: Request) -> Database:
    return request.app.state.db


async def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


async def get_queue(request: Request) -> TrialQueue:
    return request.app.state.queue


async def get_artifacts(request: Request) -> ArtifactStore:
    return request.app.state.artifacts


async def get_planner(request: Request) -> Planner:
    return request.app.state.planner


async def get_results(request: Request) -> Results:
    return request.app.state.results


async def get_analyst(request: Request) -> Analyst:
    return request.app.state.analyst


DbDep = Annotated[Database, Depends(get_db)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
QueueDep = Annotated[TrialQueue, Depends(get_queue)]
ArtifactsDep = Annotated[ArtifactStore, Depends(get_artifacts)]
PlannerDep = Annotated[Planner, Depends(get_planner)]
ResultsDep = Annotated[Results, Depends(get_results)]
AnalystDep = Annotated[Analyst, Depends(get_analyst)]
AdminAuth = Annotated[Principal, Depends(require_role("admin"))]
WorkerAuth = Annotated[Principal, Depends(require_role("worker"))]
ViewerAuth = Annotated[Principal, Depends(require_role("viewer"))]
# Ids are 32-bit in the schema; larger ones are refused as 422, never reach the database.
SearchId = Annotated[int, Path(ge=1, le=2_147_483_647, description="Search id")]
TrialId = Annotated[int, Path(ge=1, le=2_147_483_647, description="Trial id")]
