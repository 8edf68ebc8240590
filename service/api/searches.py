"""/api/searches: create, list, read, stop and resume a search, its results and its artifacts.

HTTPException appears only in service/api/; domain errors come from service.store.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response, status
from sqlalchemy import select

from vitcube.service import artifacts, failfast, store
from vitcube.service.api.deps import (
    AdminAuth,
    ArtifactsDep,
    DbDep,
    PlannerDep,
    ResultsDep,
    SearchId,
    ViewerAuth,
)
from vitcube.service.results import export_csv
from vitcube.service.schemas import (
    ArtifactsDeleted,
    SearchArtifacts,
    SearchCreate,
    SearchPublic,
    TrialPublic,
)
from vitcube.service.tables import Search

router = APIRouter(prefix="/searches", tags=["searches"])


@router.post("", status_code=status.HTTP_201_CREATED, response_model=SearchPublic)
def create_search(body: SearchCreate, db: DbDep, planner: PlannerDep, _: AdminAuth) -> SearchPublic:
    """Create a search; the planner queues its reference trials, then the strategy's picks."""
    columns, strategy = store.resolve_search(body)  # 422 before anything is written
    with db.session(write=True) as session:
        search = Search(**columns)
        session.add(search)
        session.flush()
        public = store.search_public(session, [search])[0]
    planner.remember(public.id, strategy)
    planner.wake()
    return public


@router.get("", response_model=list[SearchPublic])
def list_searches(db: DbDep, _: ViewerAuth) -> list[SearchPublic]:
    with db.session() as session:
        searches = list(session.scalars(select(Search).order_by(Search.id.desc())))
        return store.search_public(session, searches)


@router.get("/{search_id}", response_model=SearchPublic)
def read_search(search_id: SearchId, db: DbDep, _: ViewerAuth) -> SearchPublic:
    with db.session() as session:
        return store.search_public(session, [store.get_search(session, search_id)])[0]


@router.post("/{search_id}/stop", response_model=SearchPublic)
def stop_search(search_id: SearchId, db: DbDep, planner: PlannerDep, _: AdminAuth) -> SearchPublic:
    """Stop: queued trials become stopped; running ones hear `stop` at their next heartbeat."""
    with db.session(write=True) as session:
        store.stop_search(session, search_id)
    planner.retain(search_id)  # after the commit: the stop stands even if the store fails
    planner.wake()
    with db.session() as session:
        return store.search_public(session, [store.get_search(session, search_id)])[0]


@router.post("/{search_id}/resume", response_model=SearchPublic)
def resume_search(
    search_id: SearchId, db: DbDep, planner: PlannerDep, _: AdminAuth
) -> SearchPublic:
    """Resume a search that fail fast paused (or planning failed), once the cause is fixed.

    Its queued trials are leased again and the planner tops it up; fail fast counts only
    failures after now.
    """
    with db.session(write=True) as session:
        search = failfast.resume(session, search_id)
        public = store.search_public(session, [search])[0]
    planner.wake()
    return public


@router.get("/{search_id}/trials", response_model=list[TrialPublic])
def list_trials(search_id: SearchId, db: DbDep, _: ViewerAuth) -> list[TrialPublic]:
    with db.session() as session:
        store.get_search(session, search_id)
        return store.list_trials(session, search_id)


@router.get("/{search_id}/pareto", response_model=list[TrialPublic])
def pareto(search_id: SearchId, results: ResultsDep, _: ViewerAuth) -> list[TrialPublic]:
    """The completed trials no other completed trial beats on both top-1 and MACs."""
    return results.pareto(search_id)


@router.get("/{search_id}/analysis")
def analysis(search_id: SearchId, results: ResultsDep, _: ViewerAuth) -> dict[str, Any]:
    """GP views (search.analyze) plus `reference_top1`, the best reference trial's top-1."""
    return results.analysis(search_id)


@router.get("/{search_id}/formula")
def formula(
    search_id: SearchId,
    results: ResultsDep,
    _: ViewerAuth,
    c: Annotated[
        float | None, Query(gt=0, le=100, allow_inf_nan=False, description="MACs / m0")
    ] = None,
) -> dict[str, Any]:
    """The downsizing formula at c (default: the search's own c); 409 until it can be fitted."""
    return results.formula(search_id, c)


@router.get("/{search_id}/formula/curve")
def formula_curve(
    search_id: SearchId,
    results: ResultsDep,
    _: ViewerAuth,
    c_min: Annotated[float | None, Query(gt=0, le=100, allow_inf_nan=False)] = None,
    c_max: Annotated[float | None, Query(gt=0, le=100, allow_inf_nan=False)] = None,
    points: Annotated[int, Query(ge=2, le=500)] = 50,
) -> dict[str, Any]:
    """Formula.curve over `points` values of c (default: the observed range of c)."""
    return results.formula_curve(search_id, c_min, c_max, points)


@router.get(
    "/{search_id}/export.csv",
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}}},
)
def export(search_id: SearchId, db: DbDep, _: ViewerAuth) -> Response:
    with db.session() as session:
        body = export_csv(session, search_id)
    return Response(
        body,
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="search-{search_id}.csv"'},
    )


@router.get("/{search_id}/artifacts", response_model=SearchArtifacts)
def list_artifacts(search_id: SearchId, db: DbDep, _: ViewerAuth) -> SearchArtifacts:
    """Every checkpoint and weights file the search holds in the artifact store."""
    with db.session() as session:
        store.get_search(session, search_id)
        held = artifacts.of_search(session, search_id)
    return SearchArtifacts(search_id=search_id, bytes=sum(a.bytes for a in held), artifacts=held)


@router.delete("/{search_id}/artifacts", response_model=ArtifactsDeleted)
def delete_artifacts(
    search_id: SearchId, db: DbDep, artifact_store: ArtifactsDep, _: AdminAuth
) -> ArtifactsDeleted:
    """Delete every artifact of the search (checkpoints and weights); trials keep their
    results. A running trial's next checkpoint upload is stored as usual."""
    with db.session(write=True) as session:
        keys, total = artifacts.delete_of_search(session, search_id)
    artifact_store.delete(keys)
    return ArtifactsDeleted(deleted=len(keys), bytes=total)
