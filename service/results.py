"""Results of a search computed by search/: analysis, formula, Pareto front, CSV export.

The GP views (search.analyze) and the downsizing formula (search.fit_formula) are computed off
the request path, by service.analyst's thread after completions, and stored in the
`search_analyses` row of the search with the completed set they were fitted on (its version:
count, newest finish time and newest id of the completed trials). A request answers from the
stored row even when newer trials have completed since (it says so: `stale`, `current_trials`),
so no request waits for a fit it can answer from the last one; only a search with nothing stored
yet, or a request that asks for `fresh`, computes in line. One computation per search at a time
across every replica: a computation first claims the row (a conditional UPDATE on
`claimed_until`, on the database clock), and stores its result only while it still holds the
claim. The formula is stored as its GPs' hyperparameters and points (search.Formula.state) and
rebuilt without fitting; the Pareto front is cached per process under the completed set's
version. The GP work runs outside any database transaction. search/ is handed scores of the
search's metric (service.metric: higher is better whatever the goal) and what it returns is
turned back into the metric's units here, so the views and the formula's points read in the
metric's units. Imports models/ and search/ lazily, service.db, service.metric, service.store,
service.tables.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import socket
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from vitcube.contract import MetricSpec
from vitcube.service import store
from vitcube.service.db import Database
from vitcube.service.errors import Conflict, InvalidInput
from vitcube.service.metric import (
    analysis_in_units,
    as_top1,
    formula_points_in_units,
    in_units,
    is_top1,
    metric_of,
    score_of,
)
from vitcube.service.schemas import TrialPublic
from vitcube.service.tables import Search, SearchAnalysis, Trial

log = logging.getLogger("vitcube.results")

CSV_COLUMNS = (
    "id",
    "search_id",
    "kind",
    "reference_name",
    "state",
    "r",
    "d_i",
    "d_m",
    "w",
    "eff_r",
    "eff_d_i",
    "eff_d_m",
    "eff_w",
    "resolution",
    "macs",
    "params",
    "top1",  # the trial's value of the search's metric, headed by its name (top1 for val_top1)
    "top5",
    "latency_ms",
    "images_per_s",
    "surrogate",
    "to_epoch",
    "epochs_trained",
    "worker",
    "attempts",
    "error",
    "created_at",
    "started_at",
    "finished_at",
)
CLAIM_S = 600.0  # a computation's claim lapses after this (its process died, or it hangs)
WAIT_POLL_S = 0.2  # how often a request waiting for another process's computation looks
WAIT_LIMIT_S = 300.0


@dataclass(frozen=True)
class Stored:
    """A search's stored analysis row, read in one transaction with the current version."""

    version: str | None
    trials: int
    analysis: dict[str, Any] | None
    formula: dict[str, Any] | None
    formula_error: str | None
    computed_at: str | None
    took_s: float | None
    current: str
    current_trials: int

    @property
    def fresh(self) -> bool:
        return self.version == self.current

    def meta(self) -> dict[str, Any]:
        """What every answer says about the fit it comes from."""
        return {
            "computed_at": self.computed_at,
            "took_s": self.took_s,
            "stale": not self.fresh,
            "current_trials": self.current_trials,
        }


class Results:
    """Stored analyses and formulas of searches, computed once per completed set."""

    def __init__(self, db: Database, *, max_entries: int = 256) -> None:
        self.db = db
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._cache: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
        self._max_entries = max_entries
        self._lock = threading.Lock()
        self._computing: dict[int, threading.Lock] = {}

    # -- versions and the stored row ------------------------------------------------------

    @staticmethod
    def _version(session: Session, search_id: int) -> tuple[str, int]:
        n, last, top = session.execute(
            select(func.count(), func.max(Trial.finished_at), func.max(Trial.id)).where(
                Trial.search_id == search_id, Trial.state == "completed"
            )
        ).one()
        return f"{n}:{last.isoformat() if last else '-'}:{top or 0}", int(n)

    def versions(self) -> dict[int, str]:
        """The current version of every search with a completed trial."""
        with self.db.session() as session:
            rows = session.execute(
                select(
                    Trial.search_id, func.count(), func.max(Trial.finished_at), func.max(Trial.id)
                )
                .where(Trial.state == "completed")
                .group_by(Trial.search_id)
            ).all()
        return {
            sid: f"{n}:{last.isoformat() if last else '-'}:{top or 0}" for sid, n, last, top in rows
        }

    def stored_versions(self) -> dict[int, str | None]:
        with self.db.session() as session:
            rows = session.execute(select(SearchAnalysis.search_id, SearchAnalysis.version))
            return {sid: version for sid, version in rows}

    def _stored(self, search_id: int) -> Stored:
        with self.db.session() as session:
            store.get_search(session, search_id)
            current, n = self._version(session, search_id)
            row = session.get(SearchAnalysis, search_id)
            if row is None:
                return Stored(None, 0, None, None, None, None, None, current, n)
            return Stored(
                row.version,
                row.trials,
                row.analysis,
                row.formula,
                row.formula_error,
                row.computed_at.isoformat() if row.computed_at else None,
                row.took_s,
                current,
                n,
            )

    def _answer(self, search_id: int, *, fresh: bool, wanted: str) -> Stored:
        """The stored row; computed first when there is none, when it is stale and `fresh` is
        asked, or when it is stale and has no `wanted` part ("analysis": the GP was not fitted;
        "formula": it could not be fitted) — too few trials then, so the fit is quick."""

        def usable(stored: Stored) -> bool:
            if stored.version is None:
                return False
            if stored.fresh:
                return True
            part = stored.analysis if wanted == "analysis" else stored.formula
            fitted = part is not None and (wanted != "analysis" or bool(part.get("fitted")))
            return not fresh and fitted

        stored = self._stored(search_id)
        if usable(stored):
            return stored
        deadline = time.monotonic() + WAIT_LIMIT_S
        while True:
            if self.compute(search_id):
                return self._stored(search_id)
            # Another thread or replica holds the claim: its answer will do.
            time.sleep(WAIT_POLL_S)
            stored = self._stored(search_id)
            if usable(stored):
                return stored
            if time.monotonic() > deadline:
                raise Conflict("the analysis of this search is still being computed; retry shortly")

    # -- computing ------------------------------------------------------------------------

    def _claim(self, search_id: int) -> bool:
        try:
            with self.db.session(write=True) as session:
                if session.get(SearchAnalysis, search_id) is None:
                    session.add(SearchAnalysis(search_id=search_id, trials=0))
        except IntegrityError:
            pass  # another process made the row first
        with self.db.session(write=True) as session:
            claimed = session.execute(
                update(SearchAnalysis)
                .where(
                    SearchAnalysis.search_id == search_id,
                    or_(
                        SearchAnalysis.claimed_until.is_(None),
                        SearchAnalysis.claimed_until < store.db_now(session),
                    ),
                )
                .values(claimed_by=self.owner, claimed_until=store.db_later(session, CLAIM_S))
                .execution_options(synchronize_session=False)
            )
            return claimed.rowcount == 1  # type: ignore[attr-defined]

    def _release(self, search_id: int, values: dict[str, Any] | None = None) -> bool:
        with self.db.session(write=True) as session:
            done = session.execute(
                update(SearchAnalysis)
                .where(
                    SearchAnalysis.search_id == search_id, SearchAnalysis.claimed_by == self.owner
                )
                .values(
                    **(values or {}),
                    **({"computed_at": store.db_now(session)} if values else {}),
                    claimed_by=None,
                    claimed_until=None,
                )
                .execution_options(synchronize_session=False)
            )
            return done.rowcount == 1  # type: ignore[attr-defined]

    def compute(self, search_id: int) -> bool:
        """Fit the GP views and the formula on the search's completed trials and store them.

        Returns False, having computed nothing, when another thread or process holds the claim.
        """
        with self._lock:
            gate = self._computing.setdefault(search_id, threading.Lock())
        if not gate.acquire(blocking=False):
            return False
        try:
            if not self._claim(search_id):
                return False
            try:
                values = self._fit(search_id)
            except BaseException:
                self._release(search_id)
                raise
            if not self._release(search_id, values):
                log.warning("analysis of search %d: the claim lapsed; result dropped", search_id)
            return True
        finally:
            gate.release()

    def _fit(self, search_id: int) -> dict[str, Any]:
        from vitcube.models import ArchConfig
        from vitcube.search import analyze, fit_formula

        started = time.perf_counter()
        with self.db.session() as session:
            search = store.get_search(session, search_id)
            version, _ = self._version(session, search_id)
            metric = metric_of(search.metric)
            info: dict[str, Any] = {
                "base": search.base,
                "space": search.space,
                "max_macs": search.max_macs,
                "epochs": int(search.training["epochs"]),
            }
            rows = session.execute(
                select(
                    Trial.kind,
                    Trial.value,
                    Trial.macs,
                    Trial.eff_r,
                    Trial.eff_d_i,
                    Trial.eff_d_m,
                    Trial.eff_w,
                )
                .where(Trial.search_id == search_id, Trial.state == "completed")
                .order_by(Trial.id)
            ).all()
        # Named references are another family's presets: yardsticks, never points of the cube.
        observations = _observations([r for r in rows if r.kind != "reference:named"], metric)
        base = ArchConfig.from_dict(info["base"])
        # The best in-budget reference (a value of 0 was never a result a search must beat).
        refs = [
            metric.score(r.value)
            for r in rows
            if r.kind.startswith("reference:") and r.macs <= info["max_macs"] and r.value
        ]
        reference_score = max(refs) if refs else None
        reference = in_units(metric, reference_score)
        fitted_on = {"trials": len(observations), "state": "completed", "epochs": info["epochs"]}
        analysis = analyze(
            observations,
            base=base,
            reference_top1=reference_score,
            space=info["space"],
            score_range=None,
        )
        analysis = {
            **analysis_in_units(metric, analysis),
            "metric": metric.model_dump(),
            "reference_value": reference,
            "reference_top1": as_top1(metric, reference),
            "fitted_on": fitted_on,
        }
        formula: dict[str, Any] | None = None
        formula_error = None
        try:
            fitted = fit_formula(observations, base=base, space=info["space"], score_range=None)
            formula = fitted.state()
        except ValueError as exc:
            formula_error = str(exc)
        return {
            "version": version,
            "trials": len(observations),
            "analysis": _json_safe(analysis),
            "formula": formula,
            "formula_error": formula_error,
            "took_s": round(time.perf_counter() - started, 3),
        }

    # -- answers --------------------------------------------------------------------------

    def analysis(self, search_id: int, *, fresh: bool = False) -> dict[str, Any]:
        stored = self._answer(search_id, fresh=fresh, wanted="analysis")
        return {**(stored.analysis or {}), **stored.meta()}

    def _formula(self, search_id: int, *, fresh: bool) -> tuple[Any, Stored, dict[str, Any]]:
        from vitcube.search.formula import Formula

        stored = self._answer(search_id, fresh=fresh, wanted="formula")
        state = stored.formula
        if state is None:
            raise Conflict(f"the formula cannot be fitted yet: {stored.formula_error}")
        formula = self._cached(
            (search_id, "formula", stored.version), lambda: Formula.from_state(state)
        )
        with self.db.session() as session:
            search = store.get_search(session, search_id)
            info = {
                "m0": search.m0,
                "max_macs": search.max_macs,
                "epochs": int(search.training["epochs"]),
                "metric": metric_of(search.metric),
            }
        fitted_on = {"trials": stored.trials, "state": "completed", "epochs": info["epochs"]}
        return formula, stored, {**info, "fitted_on": fitted_on}

    def formula(self, search_id: int, c: float | None, *, fresh: bool = False) -> dict[str, Any]:
        formula, stored, info = self._formula(search_id, fresh=fresh)
        c = info["max_macs"] / info["m0"] if c is None else c
        try:
            answer = formula.predict(float(c))
        except ValueError as exc:
            raise InvalidInput(f"c={c}: {exc}") from exc
        return {
            **_in_units(info["metric"], answer),
            "fitted_on": info["fitted_on"],
            **stored.meta(),
        }

    def formula_curve(
        self,
        search_id: int,
        c_min: float | None,
        c_max: float | None,
        points: int,
        *,
        fresh: bool = False,
    ) -> dict[str, Any]:
        formula, stored, info = self._formula(search_id, fresh=fresh)
        budget = info["max_macs"] / info["m0"]
        observed = [p["c"] for p in formula.points] or [budget]
        low = min(observed) if c_min is None else c_min
        high = max(max(observed), budget) if c_max is None else c_max
        if not low < high:
            if c_min is not None and c_max is not None:
                raise InvalidInput(f"c_min ({c_min}) must be below c_max ({c_max})")
            low, high = low * 0.9, high * 1.1
        cs = [low + (high - low) * i / (points - 1) for i in range(points)]
        try:
            answer = formula.curve(cs)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from exc
        return {
            **_in_units(info["metric"], answer),
            "fitted_on": info["fitted_on"],
            **stored.meta(),
        }

    def pareto(self, search_id: int) -> list[TrialPublic]:
        """The non-dominated completed trials by MACs; the front is found on three columns and
        cached per completed set, and only its members are read in full."""
        from vitcube.search import pareto_front

        with self.db.session() as session:
            search = store.get_search(session, search_id)
            version, _ = self._version(session, search_id)
            score = score_of(metric_of(search.metric), Trial.value)

            def front_ids() -> list[int]:
                rows = session.execute(
                    select(Trial.id, score.label("score"), Trial.macs)
                    .where(
                        Trial.search_id == search_id,
                        Trial.state == "completed",
                        Trial.value.is_not(None),
                    )
                    .order_by(Trial.id)
                ).all()
                front = [rows[i] for i in pareto_front([(r.score, r.macs) for r in rows])]
                front.sort(key=lambda r: (r.macs, r.id))
                return [r.id for r in front]

            ids = self._cached((search_id, "pareto", version), front_ids)
            by_id = {t.id: t for t in session.scalars(select(Trial).where(Trial.id.in_(ids)))}
            return store.trials_public(session, [by_id[i] for i in ids])

    def _cached(self, key: tuple[Any, ...], compute: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        value = compute()
        with self._lock:
            self._cache[key] = value
            while len(self._cache) > self._max_entries:
                self._cache.popitem(last=False)
        return value


def _observations(rows: Sequence[Any], metric: MetricSpec) -> list[Any]:
    """search.Observations of completed trials, scored by the search's metric."""
    from vitcube.search import Observation

    return [
        Observation(
            factors={"r": r.eff_r, "d_i": r.eff_d_i, "d_m": r.eff_d_m, "w": r.eff_w},
            top1=metric.score(float(r.value)),
            macs=int(r.macs),
        )
        for r in rows
        if r.value is not None
    ]


def _in_units(metric: MetricSpec, answer: dict[str, Any]) -> dict[str, Any]:
    """A formula answer with its selected points (if it shows them) in the metric's units."""
    if "points" not in answer:
        return answer
    return {**answer, "points": formula_points_in_units(metric, answer["points"])}


def _json_safe(value: Any) -> Any:
    """Plain JSON types: numpy scalars and arrays become floats and lists."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if hasattr(value, "tolist"):
        return _json_safe(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN or infinity (PostgreSQL refuses them)
    return value


def export_csv(session: Session, search_id: int) -> str:
    """The search's trials as CSV, each trial's value of the search's metric in the column named
    after it (`top1` for val_top1, as always; e.g. `val_loss` for a loss)."""
    search = store.get_search(session, search_id)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    header = "top1" if is_top1(metric_of(search.metric)) else metric_of(search.metric).name
    writer.writerow([header if column == "top1" else column for column in CSV_COLUMNS])
    for trial in session.scalars(
        select(Trial).where(Trial.search_id == search_id).order_by(Trial.id)
    ):
        row = []
        for column in CSV_COLUMNS:
            value = getattr(trial, "value" if column == "top1" else column)
            row.append(value.isoformat() if hasattr(value, "isoformat") else value)
        writer.writerow(row)
    return out.getvalue()


__all__ = ["Results", "Search", "export_csv"]
