"""Fail fast: pause a search whose trials keep failing the same way, and resume it.

A search whose every trial fails for one reason (a dataset missing on the workers, an import
error, a recipe the workers refuse) would otherwise burn its whole `max_trials`, one GPU lease
after another. After each non-retryable failure the queue calls `pause_if_failing` in the same
transaction: when the search's last `threshold` finished trials (since an admin last resumed it)
all failed non-retryably with the same error, the search becomes `paused` with that error as
its reason. The planner plans only running searches and the queue leases only their trials, so
nothing more is queued or leased; trials already running carry on. `resume` puts it back.

Retryable failures (SIGTERM, a lost lease, a faulty device) are the workers' trouble, not the
search's: they neither count nor break a run of failures. Imports service.tables and
service.errors only; the caller's session scope commits.
"""

from __future__ import annotations

import re

from sqlalchemy import and_, false, or_, select
from sqlalchemy.orm import Session

from vitcube.service.errors import InvalidTransition, NotFound
from vitcube.service.tables import Search, Trial, utcnow

RESUMABLE = ("paused", "failed")


def pause_if_failing(session: Session, search_id: int, *, threshold: int) -> bool:
    """Pause the search if its last `threshold` outcomes are one non-retryable error.

    Returns whether it paused the search. `threshold` 0 disables fail fast.
    """
    if threshold <= 0:
        return False
    search = session.scalar(select(Search).where(Search.id == search_id).with_for_update())
    if search is None or search.state != "running":
        return False
    outcomes = (
        select(Trial.state, Trial.error)
        .where(
            Trial.search_id == search_id,
            Trial.finished_at.is_not(None),
            or_(
                Trial.state == "completed",
                and_(Trial.state == "failed", Trial.error_retryable == false()),
            ),
        )
        .order_by(Trial.finished_at.desc(), Trial.id.desc())
        .limit(threshold)
    )
    if search.resumed_at is not None:
        outcomes = outcomes.where(Trial.finished_at > search.resumed_at)
    rows = session.execute(outcomes).all()
    if len(rows) < threshold or any(state != "failed" for state, _ in rows):
        return False
    signatures = {error_signature(error) for _, error in rows}
    if len(signatures) != 1:
        return False
    error = rows[0].error or "(no message)"
    search.state = "paused"
    search.error = (
        f"The last {threshold} trials failed with the same error and none completed "
        f"since: {error.strip()} — fix the cause on the workers or in the search, then resume "
        f"it (POST /api/searches/{search_id}/resume)"
    )
    return True


def error_signature(error: str | None) -> str:
    """What makes two failures "the same error": the first line, with numbers masked.

    "CUDA out of memory. Tried to allocate 2.31 GiB" and "… 1.07 GiB" are one cause.
    """
    first = (error or "").strip().splitlines()[0] if (error or "").strip() else ""
    return re.sub(r"\d+(\.\d+)?", "#", first)[:500]


def resume(session: Session, search_id: int) -> Search:
    """paused (or failed) → running: planning and leasing go on, the reason is cleared."""
    search = session.scalar(select(Search).where(Search.id == search_id).with_for_update())
    if search is None:
        raise NotFound(f"search {search_id} not found")
    if search.state not in RESUMABLE:
        raise InvalidTransition(
            f"search {search_id} is {search.state}; only a paused or failed search can be resumed"
        )
    search.state = "running"
    search.error = None
    search.finished_at = None
    search.resumed_at = utcnow()
    return search
