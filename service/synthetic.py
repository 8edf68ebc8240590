"""Synthetic searches for load tests and benchmarks: a search filled with many finished trials.

`fill_search` writes `n` completed trials of distinct buildable networks straight to the
database, as if workers had trained them, with a top-1 and a learning curve from the `score`
the caller passes (the surrogate trainer's `surrogate_top1`/`surrogate_curve`: service/ never
imports workers/). Every trial is marked `surrogate`, so the pages and the API label it as such.
It exists to load a dashboard with 10,000 trials in seconds, which real or surrogate workers
would take hours to report. Imports models/, search.space, service.db and service.tables.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import numpy as np
from sqlalchemy import insert, select

from vitcube.contract import FACTORS
from vitcube.service.db import Database
from vitcube.service.tables import Search, Trial, TrialMetric, utcnow

# score(arch as a dict, epochs, seed) -> the validation top-1 after each epoch (the last is final)
Score = Callable[[dict[str, Any], int, int], Sequence[float]]
INSERT_CHUNK = 1_000


class NotEnoughNetworksError(ValueError):
    """The search's space holds fewer distinct networks under its budget than asked for."""


def fill_search(
    db: Database,
    search_id: int,
    n: int,
    *,
    score: Score,
    seed: int = 0,
    curves: bool = True,
    images_per_s: float | None = None,
) -> list[int]:
    """Add `n` completed trials of distinct networks inside the search's space and budget.

    Networks are drawn uniformly from the space's unit cube and snapped to the lattice; a draw
    that builds a network the search already holds, or one outside [min_macs, max_macs], is
    drawn again. `curves` also writes one learning-curve point per epoch. Returns the new
    trials' ids. Raises NotEnoughNetworksError when the lattice runs out first.
    """
    from vitcube.models import ArchConfig
    from vitcube.search.space import Space

    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    with db.session() as session:
        search = session.get(Search, search_id)
        if search is None:
            raise ValueError(f"search {search_id} does not exist")
        base = ArchConfig.from_dict(search.base)
        space = Space(base, search.space)
        epochs = int(search.training["epochs"])
        low, high = search.min_macs or 0, search.max_macs
        taken = set(session.scalars(select(Trial.arch_key).where(Trial.search_id == search_id)))
    rng = np.random.default_rng(seed)
    ids: list[int] = []
    while len(ids) < n:
        rows = _draw(base, space, n - len(ids), low=low, high=high, taken=taken, rng=rng)
        if not rows:
            raise NotEnoughNetworksError(
                f"the space of search {search_id} holds only {len(ids)} more distinct networks "
                f"within its budget; ask for fewer than {n} or widen the space"
            )
        # Fewer may be written than drawn: the planner may have queued one of them meanwhile.
        ids.extend(
            _insert(
                db,
                search_id,
                rows,
                epochs=epochs,
                score=score,
                seed=seed,
                curves=curves,
                images_per_s=images_per_s,
            )
        )
    return ids


def _draw(
    base: Any,
    space: Any,
    n: int,
    *,
    low: int,
    high: int,
    taken: set[str],
    rng: np.random.Generator,
) -> list[dict[str, Any]]:
    """Up to `n` networks not in `taken` (which they join), fewer only when the lattice is spent."""
    from vitcube.models import count_params

    rows: list[dict[str, Any]] = []
    tries = 0
    while len(rows) < n and tries < 50:
        tries += 1
        batch = space.from_unit_points(rng.random((max(256, 2 * (n - len(rows))), 4)))
        for j in rng.permutation(len(batch)).tolist():
            macs = int(batch.macs[j])
            if not low <= macs <= high:
                continue
            requested = {f: float(batch.requested[j, k]) for k, f in enumerate(FACTORS)}
            arch = base.scale(**requested)
            key = arch.key()
            if key in taken:
                continue
            taken.add(key)
            tries = 0
            rows.append(
                {
                    "requested": requested,
                    "eff": arch.effective_factors(),
                    "arch": arch.to_dict(),
                    "key": key,
                    "macs": macs,
                    "params": int(count_params(arch)),
                    "resolution": int(arch.resolution),
                }
            )
            if len(rows) == n:
                break
    return rows


def _insert(
    db: Database,
    search_id: int,
    rows: list[dict[str, Any]],
    *,
    epochs: int,
    score: Score,
    seed: int,
    curves: bool,
    images_per_s: float | None,
) -> list[int]:
    now = utcnow()
    ids: list[int] = []
    for start in range(0, len(rows), INSERT_CHUNK):
        chunk = rows[start : start + INSERT_CHUNK]
        values: list[dict[str, Any]] = []
        points: list[list[float]] = []
        for i, row in enumerate(chunk):
            curve = [float(v) for v in score(row["arch"], epochs, seed)]
            finished = now - timedelta(seconds=len(rows) - start - i)
            values.append(
                {
                    "search_id": search_id,
                    "kind": "search",
                    "state": "completed",
                    **{f: row["requested"][f] for f in FACTORS},
                    **{f"eff_{f}": float(row["eff"][f]) for f in FACTORS},
                    "arch": row["arch"],
                    "arch_key": row["key"],
                    "resolution": row["resolution"],
                    "macs": row["macs"],
                    "params": row["params"],
                    "value": curve[-1],  # a val_top1 search's (the surrogate's top-1)
                    "images_per_s": images_per_s,
                    "surrogate": True,
                    "attempts": 1,
                    "worker": "synthetic",
                    "to_epoch": epochs,
                    "rung_values": {str(epochs): curve[-1]},
                    "epochs_trained": float(epochs),
                    "created_at": finished - timedelta(seconds=1),
                    "started_at": finished - timedelta(seconds=1),
                    "finished_at": finished,
                    "updated_at": finished,
                }
            )
            points.append(curve)
        with db.session(write=True) as session:
            held = set(
                session.scalars(
                    select(Trial.arch_key).where(
                        Trial.search_id == search_id,
                        Trial.arch_key.in_([v["arch_key"] for v in values]),
                    )
                )
            )
            kept = [i for i, v in enumerate(values) if v["arch_key"] not in held]
            values = [values[i] for i in kept]
            points = [points[i] for i in kept]
            if not values:
                continue
            new = list(
                session.scalars(
                    insert(Trial).returning(Trial.id, sort_by_parameter_order=True), values
                )
            )
            if curves:
                session.execute(
                    insert(TrialMetric),
                    [
                        {"trial_id": trial_id, "epoch": epoch + 1, "value": value}
                        for trial_id, curve in zip(new, points, strict=True)
                        for epoch, value in enumerate(curve)
                    ],
                )
        ids.extend(new)
    return ids


__all__ = ["NotEnoughNetworksError", "Score", "fill_search"]
