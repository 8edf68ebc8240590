"""/api/workers: who has been leasing trials, and /api/health for load balancers."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import text

from vitcube.service import store
from vitcube.service.api.deps import DbDep, ViewerAuth
from vitcube.service.schemas import WorkerPublic

router = APIRouter(tags=["workers"])


@router.get("/workers", response_model=list[WorkerPublic])
def list_workers(db: DbDep, _: ViewerAuth) -> list[WorkerPublic]:
    """Every worker name seen in a lease, with its running/completed/failed trial counts."""
    with db.session() as session:
        return [WorkerPublic(**w) for w in store.list_workers(session)]


@router.get("/health")
def health(db: DbDep) -> dict[str, str]:
    """200 when the database answers; 503 (by the app's handler) when it does not."""
    with db.session() as session:
        session.execute(text("SELECT 1"))
    return {"status": "ok"}
