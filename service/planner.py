"""The planner: keeps every running search at `parallelism` queued + running trials.

A background thread (never the request path) asks the search's strategy for candidates given the
completed observations and the pending trials, reference trials first (the baseline if it fits
the budget, then search.reference_trials: width-only and compound shrinks). The strategy object
is cached per search and rebuilt from the database row alone after a restart.

On PostgreSQL one planning pass of a search is one transaction holding
`pg_try_advisory_xact_lock(PLANNER_LOCK, search_id)`, so several server processes on one
database never plan the same search at once; the unique (search_id, arch_key) constraint
backs that up: a network is never queued twice in one search. SQLite (one process) plans with a
read transaction, computes, then writes in a second transaction that re-checks the deficit.

Also the lease sweeper thread: expired leases are reclaimed against the database clock by the
trial queue's `sweep_expired`, on the thread's own event loop. A search this planner completes
gets artifact retention (service.artifacts.retain) right after the commit. Imports models/ and
search/ (lazily), service.artifacts, service.db, service.queue, service.tables.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.orm import Session

from vitcube.contract import FACTORS
from vitcube.service import artifacts
from vitcube.service.artifacts import ArtifactStore
from vitcube.service.db import Database
from vitcube.service.queue import TrialQueue, make_queue
from vitcube.service.settings import Settings
from vitcube.service.tables import Search, Trial, utcnow

log = logging.getLogger("vitcube.planner")

MIN_PASS_GAP_S = 0.05  # at most ~20 planning passes a second per process, however many wakes
PLANNER_LOCK = 0x76C0  # first key of the advisory lock; the second is the search id


@dataclass
class Snapshot:
    """What one planning pass knows about a search."""

    search: dict[str, Any]
    observations: list[Any]
    pending: list[dict[str, float]]  # requested factors of every non-completed trial
    keys: set[str]
    kinds: set[str]
    active: int  # queued + running
    total: int
    deficit: int
    rows: list[dict[str, Any]] = field(default_factory=list)
    completed: bool = False  # this pass completed the search (retention follows the commit)


class Planner:
    """Background planning of every running search; `wake()` to plan now."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        queue: TrialQueue | None = None,
        store: ArtifactStore | None = None,
    ) -> None:
        self.db = db
        self.settings = settings
        self.store = store if store is not None else ArtifactStore.from_settings(settings)
        self.queue = queue if queue is not None else make_queue(db, settings, self.store)
        self._strategies: dict[int, Any] = {}
        self._references: dict[int, list[tuple[str, dict[str, float]]]] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        self._stop.clear()
        for target, name in ((self._plan_loop, "planner"), (self._sweep_loop, "lease-sweeper")):
            thread = threading.Thread(target=target, name=f"vitcube-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout=30)
        self._threads.clear()

    def wake(self) -> None:
        self._wake.set()

    def remember(self, search_id: int, strategy: Any) -> None:
        """Cache a strategy built while validating a new search."""
        self._strategies[search_id] = strategy

    def _plan_loop(self) -> None:
        # Wakes come from every complete/fail; under many workers they would run passes back to
        # back. After a pass, wakes that arrived meanwhile wait out a short gap and are served
        # by one pass: planning lags a completion by at most MIN_PASS_GAP_S.
        gap = min(MIN_PASS_GAP_S, self.settings.planner_interval_s)
        while not self._stop.is_set():
            self._wake.wait(self.settings.planner_interval_s)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                self.run_once()
            except SQLAlchemyError as exc:  # e.g. the database is restarting: try again later
                log.warning("planner pass failed: %s", exc.__class__.__name__)
            except Exception:
                log.exception("planner pass failed")
            self._stop.wait(gap)

    def _sweep_loop(self) -> None:
        with asyncio.Runner() as runner:  # one event loop for this thread's sweeps
            while not self._stop.wait(self.settings.sweep_interval_s):
                try:
                    if runner.run(self.sweep()) > 0:
                        self.wake()
                except SQLAlchemyError as exc:
                    log.warning("lease sweep failed: %s", exc.__class__.__name__)
                except Exception:
                    log.exception("lease sweep failed")

    # -- work -----------------------------------------------------------------------------

    async def sweep(self) -> int:
        n = await self.queue.sweep_expired()
        if n:
            log.info("reclaimed %d expired lease(s)", n)
        return n

    def run_once(self) -> int:
        """One pass over every running search; returns how many trials were queued."""
        with self.db.session() as session:
            ids = list(session.scalars(select(Search.id).where(Search.state == "running")))
        created = 0
        for search_id in ids:
            try:
                created += self.plan_search(search_id)
            except DBAPIError:
                raise
            except Exception as exc:  # a bug or bad input below us: fail this search, not all
                log.exception("planning search %s failed", search_id)
                self._fail_search(search_id, f"planning failed: {exc.__class__.__name__}: {exc}")
        return created

    def plan_search(self, search_id: int) -> int:
        """Top the search up to `parallelism` active trials; returns how many were queued."""
        if self.db.is_postgres:
            with self.db.session() as session:
                locked = session.scalar(
                    select(func.pg_try_advisory_xact_lock(PLANNER_LOCK, search_id))
                )
                if not locked:
                    return 0  # another server process is planning this search right now
                snap = self._snapshot(session, search_id)
                if snap is None:
                    return 0
                self._propose(search_id, snap)
                created = self._write(session, search_id, snap)
        else:
            with self.db.session() as session:
                snap = self._snapshot(session, search_id)
            if snap is None:
                return 0
            self._propose(search_id, snap)
            with self.db.session(write=True) as session:
                created = self._write(session, search_id, snap)
        if snap.completed:
            self.retain(search_id)
        return created

    def retain(self, search_id: int) -> int:
        """Artifact retention for a search that ended (completed here, or stopped by an admin):
        keep the weights of its Pareto front and its best `keep_weights` trials, delete the rest
        and every checkpoint. Rows go in one transaction, objects after its commit (best
        effort). Returns how many objects were deleted."""
        with self.db.session(write=True) as session:
            keys = artifacts.retain(session, search_id, keep_weights=self.settings.keep_weights)
        deleted = self.store.delete(keys)
        if keys:
            log.info("search %s: retention deleted %d artifact(s)", search_id, deleted)
        return deleted

    # -- steps ----------------------------------------------------------------------------

    def _snapshot(self, session: Session, search_id: int) -> Snapshot | None:
        search = session.get(Search, search_id)
        if search is None or search.state != "running":
            return None
        active, total = _active_and_total(session, search_id)
        if min(search.parallelism - active, search.max_trials - total) <= 0 and active > 0:
            return None  # full: nothing to plan, nothing to complete; skip loading the trials
        from vitcube.search import Observation  # imports torch (seconds): only once there is work

        trials = session.execute(
            select(
                Trial.kind,
                Trial.state,
                Trial.r,
                Trial.d_i,
                Trial.d_m,
                Trial.w,
                Trial.eff_r,
                Trial.eff_d_i,
                Trial.eff_d_m,
                Trial.eff_w,
                Trial.top1,
                Trial.macs,
                Trial.arch_key,
            ).where(Trial.search_id == search_id)
        ).all()
        observations, pending = [], []
        active = 0
        for t in trials:
            if t.state == "completed" and t.top1 is not None:
                observations.append(
                    Observation(
                        factors={"r": t.eff_r, "d_i": t.eff_d_i, "d_m": t.eff_d_m, "w": t.eff_w},
                        top1=float(t.top1),
                        macs=int(t.macs),
                    )
                )
            else:
                # Queued/running ones are fantasies; failed and stopped ones must not come back.
                pending.append({"r": t.r, "d_i": t.d_i, "d_m": t.d_m, "w": t.w})
            active += t.state in ("queued", "running")
        total = len(trials)
        deficit = min(search.parallelism - active, search.max_trials - total)
        columns = {c: getattr(search, c) for c in ("base", "max_macs", "min_macs", "m0")}
        columns.update(
            strategy=search.strategy,
            objective=search.objective,
            space=search.space,
            seed=search.seed,
        )
        return Snapshot(
            search=columns,
            observations=observations,
            pending=pending,
            keys={t.arch_key for t in trials},
            kinds={t.kind for t in trials},
            active=active,
            total=total,
            deficit=deficit,
        )

    def _strategy(self, search_id: int, search: dict[str, Any]) -> Any:
        strategy = self._strategies.get(search_id)
        if strategy is None:
            from vitcube.models import ArchConfig
            from vitcube.search import make_strategy

            strategy = make_strategy(
                search["strategy"],
                base=ArchConfig.from_dict(search["base"]),
                max_macs=int(search["max_macs"]),
                objective=search["objective"],
                space={k: tuple(v) for k, v in search["space"].items()},
                seed=int(search["seed"]),
                min_macs=search["min_macs"],
            )
            self._strategies[search_id] = strategy
        return strategy

    def _reference_factors(
        self, search_id: int, search: dict[str, Any]
    ) -> list[tuple[str, dict[str, float]]]:
        refs = self._references.get(search_id)
        if refs is None:
            from vitcube.models import ArchConfig
            from vitcube.search import reference_trials

            base = ArchConfig.from_dict(search["base"])
            m0, max_macs, min_macs = search["m0"], search["max_macs"], search["min_macs"]
            refs = []
            if m0 <= max_macs and (min_macs is None or m0 >= min_macs):
                refs.append(("reference:baseline", {"r": 1.0, "d_i": 1.0, "d_m": 1.0, "w": 1.0}))
            for ref in reference_trials(base, int(max_macs)):
                refs.append((f"reference:{ref.name}", dict(ref.factors)))
            self._references[search_id] = refs
        return refs

    def _propose(self, search_id: int, snap: Snapshot) -> None:
        """Fill snap.rows with new trial rows (references first, then the strategy's picks)."""
        if snap.deficit <= 0:
            return
        from vitcube.models import ArchConfig, count_macs, count_params

        base = ArchConfig.from_dict(snap.search["base"])
        keys = set(snap.keys)

        def build(kind: str, factors: dict[str, float]) -> None:
            arch = base.scale(**{f: float(factors[f]) for f in FACTORS})
            key = arch.key()
            if key in keys:
                return  # the same network is never trained twice
            keys.add(key)
            eff = arch.effective_factors()
            snap.rows.append(
                {
                    "search_id": search_id,
                    "kind": kind,
                    "state": "queued",
                    **{f: float(factors[f]) for f in FACTORS},
                    **{f"eff_{f}": float(eff[f]) for f in FACTORS},
                    "arch": arch.to_dict(),
                    "arch_key": key,
                    "resolution": int(arch.resolution),
                    "macs": int(count_macs(arch)),
                    "params": int(count_params(arch)),
                }
            )
            snap.pending.append({f: float(factors[f]) for f in FACTORS})

        for kind, factors in self._reference_factors(search_id, snap.search):
            if len(snap.rows) >= snap.deficit:
                return
            if kind not in snap.kinds:
                build(kind, factors)
        wanted = snap.deficit - len(snap.rows)
        if wanted <= 0:
            return
        strategy = self._strategy(search_id, snap.search)
        for factors in strategy.suggest(snap.observations, snap.pending[:], wanted):
            build("search", factors)

    def _write(self, session: Session, search_id: int, snap: Snapshot) -> int:
        search = session.get(Search, search_id)
        if search is None or search.state != "running":
            return 0
        # Re-check: on SQLite the trials may have moved since the snapshot was read.
        active, total = _active_and_total(session, search_id)
        room = min(search.parallelism - active, search.max_trials - total)
        rows = snap.rows[: max(room, 0)]
        if rows:
            existing = set(
                session.scalars(
                    select(Trial.arch_key).where(
                        Trial.search_id == search_id,
                        Trial.arch_key.in_([r["arch_key"] for r in rows]),
                    )
                )
            )
            rows = [r for r in rows if r["arch_key"] not in existing]
        if rows:
            session.add_all(Trial(**row) for row in rows)
            session.flush()
            return len(rows)
        exhausted = snap.deficit > 0 and not snap.rows  # the strategy found nothing new
        if active == 0 and (total >= search.max_trials or exhausted):
            search.state = "completed"
            search.finished_at = utcnow()
            snap.completed = True
            self._strategies.pop(search_id, None)
            log.info("search %s completed with %d trials", search_id, total)
        return 0

    def _fail_search(self, search_id: int, message: str) -> None:
        with self.db.session(write=True) as session:
            session.execute(
                update(Search)
                .where(Search.id == search_id, Search.state == "running")
                .values(state="failed", error=message[:2000], finished_at=utcnow())
            )
        self._strategies.pop(search_id, None)


def _active_and_total(session: Session, search_id: int) -> tuple[int, int]:
    """(queued + running, all) trials of a search, counted in the database."""
    states = dict(
        session.execute(
            select(Trial.state, func.count())
            .where(Trial.search_id == search_id)
            .group_by(Trial.state)
        ).all()
    )
    return states.get("queued", 0) + states.get("running", 0), sum(states.values())
