"""/api/searches: create, list, read, stop and resume a search, its results and its artifacts.

HTTPException appears only in service/api/; domain errors come from service.store.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response, status
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
from vitcube.service.errors import InvalidInput
from vitcube.service.results import export_csv
from vitcube.service.schemas import (
    ArtifactsDeleted,
    SearchArtifacts,
    SearchCreate,
    SearchPlan,
    SearchPublic,
    TrialPublic,
    TrialsCompact,
    TrialState,
)
from vitcube.service.tables import Search

router = APIRouter(prefix="/searches", tags=["searches"])
MAX_PAGE = 10_000
MAX_CURVES = 500


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


@router.post("/validate", response_model=SearchPlan)
def validate_search(body: SearchCreate, _: ViewerAuth) -> SearchPlan:
    """Validate a create body as POST /api/searches does, writing nothing: what it would create
    (m0, the budget in MACs, the reference networks, the space's smallest and largest networks)
    or the same 422 that create would answer. `vitcube search create --dry-run` calls this."""
    return store.plan_search(body)


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


@router.get(
    "/{search_id}/trials",
    response_model=list[TrialPublic],
    responses={
        200: {
            "headers": {
                "X-Total-Count": {
                    "description": "Trials in the search",
                    "schema": {"type": "integer"},
                },
                "Link": {
                    "description": 'The next page: <url>; rel="next"',
                    "schema": {"type": "string"},
                },
            }
        }
    },
)
def list_trials(
    search_id: SearchId,
    db: DbDep,
    request: Request,
    response: Response,
    _: ViewerAuth,
    limit: Annotated[
        int | None, Query(ge=1, le=MAX_PAGE, description="Trials per page (default: all)")
    ] = None,
    offset: Annotated[int, Query(ge=0, le=2_147_483_647, description="Trials to skip")] = 0,
    state: Annotated[
        list[TrialState] | None,
        Query(description="Only trials in these states (repeat the parameter for several)"),
    ] = None,
) -> list[TrialPublic]:
    """Every trial in full, in id order; `limit`/`offset` page through them (`X-Total-Count`
    and a `Link: rel="next"` header say what is left); `state` keeps only those states. A
    dashboard wants `/trials/compact`."""
    with db.session() as session:
        store.get_search(session, search_id)
        page, total = store.list_trials_page(
            session, search_id, limit=limit, offset=offset, states=state
        )
    response.headers["X-Total-Count"] = str(total)
    if limit is not None and offset + limit < total:
        following = request.url.include_query_params(limit=limit, offset=offset + limit)
        response.headers["Link"] = f'<{following}>; rel="next"'
    return page


@router.get("/{search_id}/trials/compact", response_model=TrialsCompact)
def compact_trials(
    search_id: SearchId,
    db: DbDep,
    _: ViewerAuth,
    since: Annotated[
        str | None,
        Query(
            max_length=64,
            description="A `cursor` from an earlier answer: only the trials changed since",
            json_schema_extra={"format": "date-time"},
        ),
    ] = None,
) -> TrialsCompact:
    """The trials as a dashboard shows them: one array per trial, no curves; with `since`,
    only those that changed, so a refresh of a large search moves a few kilobytes."""
    cursor = _parse_cursor(since)
    with db.session() as session:
        store.get_search(session, search_id)
        return store.compact_trials(session, search_id, cursor)


def _parse_cursor(since: str | None) -> datetime | None:
    if since is None:
        return None
    try:
        cursor = datetime.fromisoformat(since)
    except ValueError:
        cursor = None
    if cursor is None or cursor.tzinfo is None:
        raise InvalidInput(
            f"since must be a `cursor` from an earlier answer: an ISO 8601 time with its zone "
            f"(e.g. 2026-12-01T21:40:00.123456+00:00), got {since[:64]!r}"
        )
    return cursor


@router.get("/{search_id}/curves")
def curves(
    search_id: SearchId,
    db: DbDep,
    _: ViewerAuth,
    ids: Annotated[str, Query(max_length=8_000, description="Trial ids, comma-separated")],
) -> dict[str, list[dict[str, Any]]]:
    """The learning curves of some of the search's trials: {trial id: [{epoch, <the search's
    metric, e.g. val_top1>, …}]}."""
    try:
        wanted = sorted({int(part) for part in ids.split(",") if part.strip()})
    except ValueError:
        raise InvalidInput(f"ids must be trial ids separated by commas, got {ids[:80]!r}") from None
    if len(wanted) > MAX_CURVES:
        raise InvalidInput(f"ask for at most {MAX_CURVES} curves at a time, not {len(wanted)}")
    if any(not 1 <= i <= 2_147_483_647 for i in wanted):
        raise InvalidInput("trial ids are positive 32-bit integers")
    with db.session() as session:
        store.get_search(session, search_id)
        found = store.curves_of(session, search_id, wanted)
    return {str(i): found.get(i, []) for i in wanted}


@router.get("/{search_id}/pareto", response_model=list[TrialPublic])
def pareto(search_id: SearchId, results: ResultsDep, _: ViewerAuth) -> list[TrialPublic]:
    """The completed trials no other completed trial beats on both the search's metric (by its
    goal) and MACs."""
    return results.pareto(search_id)


Fresh = Annotated[
    bool,
    Query(
        description="Wait for a fit of the trials completed now, rather than answer from the "
        "last stored one (which says `stale` when trials completed since)"
    ),
]


@router.get("/{search_id}/analysis")
def analysis(
    search_id: SearchId, results: ResultsDep, _: ViewerAuth, fresh: Fresh = False
) -> dict[str, Any]:
    """GP views (search.analyze) of the search's metric, in its units (`metric`), plus
    `reference_value`, the best reference trial's value (`reference_top1` too for val_top1), as
    last computed in the background: `fitted_on` says on how many trials, `stale` whether
    more have completed since (`current_trials`)."""
    return results.analysis(search_id, fresh=fresh)


@router.get("/{search_id}/formula")
def formula(
    search_id: SearchId,
    results: ResultsDep,
    _: ViewerAuth,
    c: Annotated[
        float | None, Query(gt=0, le=100, allow_inf_nan=False, description="MACs / m0")
    ] = None,
    fresh: Fresh = False,
) -> dict[str, Any]:
    """The downsizing formula at c (default: the search's own c); 409 until it can be fitted."""
    return results.formula(search_id, c, fresh=fresh)


@router.get("/{search_id}/formula/curve")
def formula_curve(
    search_id: SearchId,
    results: ResultsDep,
    _: ViewerAuth,
    c_min: Annotated[float | None, Query(gt=0, le=100, allow_inf_nan=False)] = None,
    c_max: Annotated[float | None, Query(gt=0, le=100, allow_inf_nan=False)] = None,
    points: Annotated[int, Query(ge=2, le=500)] = 50,
    fresh: Fresh = False,
) -> dict[str, Any]:
    """Formula.curve over `points` values of c (default: the fitted points' range of c)."""
    return results.formula_curve(search_id, c_min, c_max, points, fresh=fresh)


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
