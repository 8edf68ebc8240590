"""Results of a search computed by search/: analysis, formula, Pareto front, CSV export.

Results depend only on the completed trials, and a completed trial never changes, so each result
is cached under (search id, number of completed trials, newest finish time, arguments): a new
completion changes the key and the next request recomputes. The cache is per process; the key
comes from the database, so several server processes stay consistent. The GP work runs outside
any database transaction. Imports models/ and search/ lazily, service.db, service.store.
"""

from __future__ import annotations

import csv
import io
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from vitcube.service import store
from vitcube.service.db import Database
from vitcube.service.errors import Conflict, InvalidInput
from vitcube.service.schemas import TrialPublic
from vitcube.service.tables import Search, Trial

CSV_COLUMNS = (
    "id",
    "search_id",
    "kind",
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
    "top1",
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


class Results:
    """Per-process cache of computed results keyed by the search's completed set."""

    def __init__(self, db: Database, *, max_entries: int = 256) -> None:
        self.db = db
        self._cache: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
        self._max_entries = max_entries
        self._lock = threading.Lock()
        self._computing: dict[tuple[Any, ...], threading.Lock] = {}

    def _version(self, session: Session, search_id: int) -> tuple[Any, ...]:
        n, last, top = session.execute(
            select(func.count(), func.max(Trial.finished_at), func.max(Trial.id)).where(
                Trial.search_id == search_id, Trial.state == "completed"
            )
        ).one()
        return (n, last.isoformat() if last else None, top)

    def _cached(self, key: tuple[Any, ...], compute: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
            gate = self._computing.setdefault(key, threading.Lock())
        with gate:  # one computation per key; the others wait for it
            with self._lock:
                if key in self._cache:
                    return self._cache[key]
            value = compute()
            with self._lock:
                self._cache[key] = value
                self._computing.pop(key, None)
                while len(self._cache) > self._max_entries:
                    self._cache.popitem(last=False)
            return value

    def _load(self, search_id: int) -> tuple[dict[str, Any], list[Trial], tuple[Any, ...]]:
        with self.db.session() as session:
            search = store.get_search(session, search_id)
            version = self._version(session, search_id)
            completed = list(
                session.scalars(
                    select(Trial)
                    .where(Trial.search_id == search_id, Trial.state == "completed")
                    .order_by(Trial.id)
                )
            )
            info = {
                "base": search.base,
                "space": search.space,
                "m0": search.m0,
                "max_macs": search.max_macs,
                "min_macs": search.min_macs,
                "epochs": int(search.training["epochs"]),
            }
        return info, completed, version

    @staticmethod
    def _fitted_on(info: dict[str, Any], trials: list[Trial]) -> dict[str, Any]:
        """What a GP view or the formula was fitted on: completed trials only, at the last
        rung; a paused trial's partial result at an earlier rung is never mixed in."""
        return {
            "trials": sum(t.top1 is not None for t in trials),
            "state": "completed",
            "epochs": info["epochs"],
        }

    @staticmethod
    def _observations(trials: list[Trial]) -> list[Any]:
        from vitcube.search import Observation

        return [
            Observation(factors=t.effective_factors, top1=float(t.top1), macs=int(t.macs))
            for t in trials
            if t.top1 is not None
        ]

    def analysis(self, search_id: int) -> dict[str, Any]:
        info, trials, version = self._load(search_id)

        def compute() -> dict[str, Any]:
            from vitcube.models import ArchConfig
            from vitcube.search import analyze

            refs = [
                t.top1
                for t in trials
                if t.kind.startswith("reference:") and t.macs <= info["max_macs"] and t.top1
            ]
            reference_top1 = max(refs) if refs else None
            result = analyze(
                self._observations(trials),
                base=ArchConfig.from_dict(info["base"]),
                reference_top1=reference_top1,
                space=info["space"],
            )
            return {
                **result,
                "reference_top1": reference_top1,
                "fitted_on": self._fitted_on(info, trials),
            }

        return dict(self._cached((search_id, "analysis", *version), compute))

    def _formula(self, search_id: int) -> tuple[Any, dict[str, Any]]:
        info, trials, version = self._load(search_id)

        def compute() -> Any:
            from vitcube.models import ArchConfig
            from vitcube.search import fit_formula

            observations = self._observations(trials)
            try:
                return fit_formula(
                    observations, base=ArchConfig.from_dict(info["base"]), space=info["space"]
                )
            except ValueError as exc:
                return exc  # cached too: the same trials cannot fit any better

        fitted = self._cached((search_id, "formula", *version), compute)
        if isinstance(fitted, ValueError):
            raise Conflict(f"the formula cannot be fitted yet: {fitted}")
        return fitted, info

    def formula(self, search_id: int, c: float | None) -> dict[str, Any]:
        formula, info = self._formula(search_id)
        _, trials, _ = self._load(search_id)
        c = info["max_macs"] / info["m0"] if c is None else c
        try:
            return {**formula.predict(float(c)), "fitted_on": self._fitted_on(info, trials)}
        except ValueError as exc:
            raise InvalidInput(f"c={c}: {exc}") from exc

    def formula_curve(
        self, search_id: int, c_min: float | None, c_max: float | None, points: int
    ) -> dict[str, Any]:
        formula, info = self._formula(search_id)
        _, trials, _ = self._load(search_id)
        observed = [t.macs / info["m0"] for t in trials] or [info["max_macs"] / info["m0"]]
        low = min(observed) if c_min is None else c_min
        high = max(max(observed), info["max_macs"] / info["m0"]) if c_max is None else c_max
        if not low < high:
            if c_min is not None and c_max is not None:
                raise InvalidInput(f"c_min ({c_min}) must be below c_max ({c_max})")
            low, high = low * 0.9, high * 1.1
        cs = [low + (high - low) * i / (points - 1) for i in range(points)]
        try:
            return dict(formula.curve(cs))
        except ValueError as exc:
            raise InvalidInput(str(exc)) from exc

    def pareto(self, search_id: int) -> list[TrialPublic]:
        from vitcube.search import pareto_front

        with self.db.session() as session:
            store.get_search(session, search_id)
            trials = list(
                session.scalars(
                    select(Trial)
                    .where(
                        Trial.search_id == search_id,
                        Trial.state == "completed",
                        Trial.top1.is_not(None),
                    )
                    .order_by(Trial.id)
                )
            )
            front = [trials[i] for i in pareto_front([(t.top1 or 0.0, t.macs) for t in trials])]
            front.sort(key=lambda t: (t.macs, t.id))
            return store.trials_public(session, front)


def export_csv(session: Session, search_id: int) -> str:
    store.get_search(session, search_id)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for trial in session.scalars(
        select(Trial).where(Trial.search_id == search_id).order_by(Trial.id)
    ):
        row = []
        for column in CSV_COLUMNS:
            value = getattr(trial, column)
            row.append(value.isoformat() if hasattr(value, "isoformat") else value)
        writer.writerow(row)
    return out.getvalue()


__all__ = ["Results", "Search", "export_csv"]
