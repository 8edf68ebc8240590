"""The planner: keeps every running search at `parallelism` queued + running trials.

A background thread (never the request path) asks the search's strategy for candidates given the
observations and the pending trials, reference trials first (the baseline if it fits the
budget, then search.reference_trials: width-only and compound shrinks). The strategy object is
cached per search and rebuilt from the database row alone after a restart.

Schedules (vitcube.contract): under `full` every trial trains all of training.epochs and the
observations are the completed trials. Under `asha` a free slot first goes to a promotion — a
trial paused at rung k whose result ranks in the top 1/eta of all results at rung k
(search.asha.promotable) is queued again with the next rung as its to_epoch — and only then to a
new configuration, at the first rung (or, with brackets, at the rung search.asha.start_rung
picks, in Hyperband's proportions); the GP fits the results at the highest rung that holds
MODEL_MIN_POINTS of them (BOHB), with every trial lacking a result there as pending. A search's
optional compute budget (max_train_epochs) bounds what is trained and what the active segments
will train. Every input is read from the database on each pass, so a restarted server, or
another replica, carries on where the last pass left off.

On PostgreSQL one planning pass of a search is one transaction holding
`pg_try_advisory_xact_lock(PLANNER_LOCK, search_id)`, so several server processes on one
database never plan the same search at once; the unique (search_id, arch_key) constraint
backs that up: a network is never queued twice in one search. SQLite (one process) plans with a
read transaction, computes, then writes in a second transaction that re-checks the deficit.

Also the lease sweeper thread: expired leases are reclaimed against the database clock by the
trial queue's `sweep_expired`, on the thread's own event loop. A search this planner completes
gets artifact retention (service.artifacts.retain) right after the commit. Imports models/ and
search/ (lazily), service.artifacts, service.db, service.metric (the strategy and ASHA are
handed scores of the search's metric, higher is better), service.queue, service.tables.
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

from vitcube.contract import FACTORS, AshaSchedule
from vitcube.service import artifacts, store
from vitcube.service.artifacts import ArtifactStore
from vitcube.service.db import Database
from vitcube.service.metric import metric_of
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
    pending: list[dict[str, float]]  # requested factors of every trial without a result to fit
    keys: set[str]
    kinds: set[str]
    named: set[str]  # the presets of the reference:named trials it holds
    active: int  # queued + running
    total: int
    deficit: int  # new configurations wanted
    rungs: tuple[int, ...] = ()
    promotions: list[tuple[int, int, int]] = field(default_factory=list)  # (id, at, to) epochs
    affordable: bool = True  # the compute budget leaves room for one more segment
    states: dict[str, int] = field(default_factory=dict)  # trials by state, as read
    started: list[int] = field(default_factory=list)  # search trials by start rung (asha)
    eta: int = 3
    brackets: int = 1
    rows: list[dict[str, Any]] = field(default_factory=list)
    completed: bool = False  # this pass completed the search (retention follows the commit)


# BOHB's rule for the GP's evidence under ASHA: the highest rung with at least this many results
# (the factors plus two, so the GP has more points than ARD lengthscales).
MODEL_MIN_POINTS = len(FACTORS) + 2


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
        states = _states(session, search_id)
        active = states.get("queued", 0) + states.get("running", 0)
        total = sum(states.values())
        room = search.parallelism - active
        more = total < search.max_trials or states.get("paused", 0) > 0
        if active > 0 and (room <= 0 or not more):
            return None  # full: nothing to plan, nothing to complete; skip loading the trials
        from vitcube.search import Observation  # imports torch (seconds): only once there is work
        from vitcube.search.asha import model_rung, promotable

        trials = session.execute(
            select(
                Trial.id,
                Trial.kind,
                Trial.reference_name,
                Trial.state,
                Trial.r,
                Trial.d_i,
                Trial.d_m,
                Trial.w,
                Trial.eff_r,
                Trial.eff_d_i,
                Trial.eff_d_m,
                Trial.eff_w,
                Trial.value,
                Trial.macs,
                Trial.arch_key,
                Trial.to_epoch,
                Trial.rung_values,
                Trial.epochs_trained,
            )
            .where(Trial.search_id == search_id)
            .order_by(Trial.id)
        ).all()
        schedule = store.schedule_of(search)
        rungs = store.rungs_of(search)
        last = rungs[-1]
        metric = metric_of(search.metric)

        def result(t: Any, epoch: int) -> float | None:
            """The trial's score at this rung (its value of the metric, higher-is-better)."""
            found = (t.rung_values or {}).get(str(epoch))
            if found is None and epoch == last and t.state == "completed" and not t.rung_values:
                found = t.value  # completed before schedules were stored
            return None if found is None else metric.score(float(found))

        # The GP fits the results at the highest rung with enough of them (BOHB); with `full`
        # that is the only rung. Trials without a result there are pending information.
        # A named reference (another family's preset) is a yardstick, not a point of this cube.
        cube = [t for t in trials if t.kind != "reference:named"]
        counts = [sum(result(t, epoch) is not None for t in cube) for epoch in rungs]
        fit_epoch = rungs[model_rung(counts, min_points=MODEL_MIN_POINTS)]
        observations, pending = [], []
        active = sum(
            t.state in ("queued", "running") for t in trials if t.kind == "reference:named"
        )
        for t in cube:
            value = result(t, fit_epoch)
            if value is not None:
                observations.append(
                    Observation(
                        factors={"r": t.eff_r, "d_i": t.eff_d_i, "d_m": t.eff_d_m, "w": t.eff_w},
                        top1=value,
                        macs=int(t.macs),
                    )
                )
            else:
                # Queued, running and paused ones are fantasies; failed and stopped ones must
                # not come back.
                pending.append({"r": t.r, "d_i": t.d_i, "d_m": t.d_m, "w": t.w})
            active += t.state in ("queued", "running")
        total = len(trials)
        # Compute: what has been trained, what the active segments will train.
        spent = sum(float(t.epochs_trained or 0.0) for t in trials)
        spent += sum(
            (t.to_epoch or last) - float(t.epochs_trained or 0.0)
            for t in trials
            if t.state in ("queued", "running")
        )
        budget = search.max_train_epochs
        room = search.parallelism - active
        promotions: list[tuple[int, int, int]] = []
        if isinstance(schedule, AshaSchedule):
            # ASHA: a free slot goes to a promotion first, the highest rung first.
            for k in range(len(rungs) - 2, -1, -1):
                at, to = rungs[k], rungs[k + 1]
                results = {
                    t.id: value
                    for t in trials
                    if t.kind == "search" and (value := result(t, at)) is not None
                }
                paused = [t.id for t in trials if t.state == "paused" and t.to_epoch == at]
                for trial_id in promotable(results, paused, schedule.eta):
                    if len(promotions) >= room:
                        break
                    if budget is not None and spent + (to - at) > budget:
                        continue
                    promotions.append((trial_id, at, to))
                    spent += to - at
        # Where each search trial started (its first rung): what the brackets balance.
        started = [0] * len(rungs)
        for t in trials:
            if t.kind == "search":
                first = min([int(e) for e in (t.rung_values or {})] + [t.to_epoch or last])
                started[rungs.index(first) if first in rungs else 0] += 1
        deficit = min(room - len(promotions), search.max_trials - total)
        affordable = budget is None or spent + rungs[0] <= budget
        if budget is not None:
            deficit = min(deficit, max(0, int((budget - spent) // rungs[0])))
        columns = {
            c: getattr(search, c)
            for c in ("base", "max_macs", "min_macs", "m0", "named_references")
        }
        columns.update(
            strategy=search.strategy,
            objective=search.objective,
            space=search.space,
            seed=search.seed,
            budget_left=None if budget is None else budget - spent,
        )
        return Snapshot(
            search=columns,
            observations=observations,
            pending=pending,
            keys={t.arch_key for t in trials},
            kinds={t.kind for t in trials},
            named={t.reference_name for t in trials if t.reference_name},
            active=active,
            total=total,
            deficit=deficit,
            rungs=rungs,
            promotions=promotions,
            affordable=affordable,
            states=states,
            started=started,
            eta=schedule.eta if isinstance(schedule, AshaSchedule) else 3,
            brackets=schedule.brackets if isinstance(schedule, AshaSchedule) else 1,
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
                score_range=None,  # scores of the search's metric (service.metric)
            )
            self._strategies[search_id] = strategy
        return strategy

    def _reference_factors(
        self, search_id: int, search: dict[str, Any]
    ) -> list[tuple[str, dict[str, float]]]:
        refs = self._references.get(search_id)
        if refs is None:
            from vitcube.models import ArchConfig

            refs = [
                (str(kind), factors)
                for kind, factors in store.reference_factors(
                    ArchConfig.from_dict(search["base"]),
                    m0=search["m0"],
                    max_macs=search["max_macs"],
                    min_macs=search["min_macs"],
                )
            ]
            self._references[search_id] = refs
        return refs

    def _propose(self, search_id: int, snap: Snapshot) -> None:
        """Fill snap.rows with new trial rows (references first, then the strategy's picks).

        Reference trials train all of training.epochs in one segment (they are the yardsticks
        the search must beat, never cut short); the strategy's trials start at the first rung,
        or with brackets at the rung `search.asha.start_rung` picks.
        Under a compute budget, a row is added only while its segment still fits in it."""
        if snap.deficit <= 0:
            return
        from vitcube.models import ArchConfig, count_macs, count_params
        from vitcube.search.asha import start_rung

        base = ArchConfig.from_dict(snap.search["base"])
        keys = set(snap.keys)
        budget_left = snap.search.get("budget_left")
        last = snap.rungs[-1]

        def build(
            kind: str, factors: dict[str, float], arch: Any = None, name: str | None = None
        ) -> None:
            nonlocal budget_left
            start = 0
            if kind == "search":
                start = start_rung(snap.started, eta=snap.eta, brackets=snap.brackets)
            to_epoch = snap.rungs[start] if kind == "search" else last
            if budget_left is not None and to_epoch > budget_left:
                return
            if arch is None:
                arch = base.scale(**{f: float(factors[f]) for f in FACTORS})
            key = arch.key()
            if key in keys:
                return  # the same network is never trained twice
            keys.add(key)
            if budget_left is not None:
                budget_left -= to_epoch
            if kind == "search":
                snap.started[start] += 1
            # A named reference's factors are its own preset's (1.0): it is not in the cube.
            eff = arch.effective_factors() if name is None else dict(factors)
            snap.rows.append(
                {
                    "search_id": search_id,
                    "kind": kind,
                    "reference_name": name,
                    "state": "queued",
                    **{f: float(factors[f]) for f in FACTORS},
                    **{f"eff_{f}": float(eff[f]) for f in FACTORS},
                    "arch": arch.to_dict(),
                    "arch_key": key,
                    "resolution": int(arch.resolution),
                    "macs": int(count_macs(arch)),
                    "params": int(count_params(arch)),
                    "to_epoch": to_epoch,
                }
            )
            if name is None:
                snap.pending.append({f: float(factors[f]) for f in FACTORS})

        for kind, factors in self._reference_factors(search_id, snap.search):
            if len(snap.rows) >= snap.deficit:
                return
            if kind not in snap.kinds:
                build(kind, factors)
        for name, arch in store.named_reference_archs(snap.search):
            if len(snap.rows) >= snap.deficit:
                return
            if name not in snap.named:
                build("reference:named", {f: 1.0 for f in FACTORS}, arch, name)
        wanted = snap.deficit - len(snap.rows)
        if wanted <= 0:
            return
        strategy = self._strategy(search_id, snap.search)
        for factors in strategy.suggest(snap.observations, snap.pending[:], wanted):
            build("search", factors)

    def _write(self, session: Session, search_id: int, snap: Snapshot) -> int:
        """Promote, insert, or complete the search; returns how many trials were queued."""
        search = session.get(Search, search_id)
        if search is None or search.state != "running":
            return 0
        # Re-check: on SQLite the trials may have moved since the snapshot was read.
        states = _states(session, search_id)
        active = states.get("queued", 0) + states.get("running", 0)
        total = sum(states.values())
        room = search.parallelism - active
        promoted = 0
        for trial_id, at, to in snap.promotions[: max(room, 0)]:
            # Only a trial still paused at that rung moves: a promotion happens exactly once.
            done = session.execute(
                update(Trial)
                .where(Trial.id == trial_id, Trial.state == "paused", Trial.to_epoch == at)
                .values(
                    state="queued",
                    to_epoch=to,
                    lease_id=None,
                    lease_expires_at=None,
                    error=None,
                    updated_at=utcnow(),
                )
            )
            promoted += int(done.rowcount or 0)  # type: ignore[attr-defined]
        if promoted:
            log.info("search %s: promoted %d trial(s)", search_id, promoted)
        room -= promoted
        rows = snap.rows[: max(min(room, search.max_trials - total), 0)]
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
        if rows or promoted:
            return len(rows) + promoted
        exhausted = snap.deficit > 0 and not snap.rows  # the strategy found nothing new
        spent = not snap.affordable  # the compute budget has no room for another segment
        # Only a pass whose snapshot is still the truth may end the search: a trial that paused
        # after the snapshot was read may be promotable (its complete wakes another pass).
        current = states == snap.states
        if current and active == 0 and (total >= search.max_trials or exhausted or spent):
            search.state = "completed"
            search.finished_at = utcnow()
            snap.completed = True
            self._strategies.pop(search_id, None)
            log.info(
                "search %s completed with %d trials (%d paused at a rung)",
                search_id,
                total,
                states.get("paused", 0),
            )
        return 0

    def _fail_search(self, search_id: int, message: str) -> None:
        with self.db.session(write=True) as session:
            session.execute(
                update(Search)
                .where(Search.id == search_id, Search.state == "running")
                .values(state="failed", error=message[:2000], finished_at=utcnow())
            )
        self._strategies.pop(search_id, None)


def _states(session: Session, search_id: int) -> dict[str, int]:
    """The search's trials counted by state, in the database."""
    return dict(
        session.execute(
            select(Trial.state, func.count())
            .where(Trial.search_id == search_id)
            .group_by(Trial.state)
        ).all()
    )
