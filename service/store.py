"""Domain operations on searches and trials: create, read, stop; the database clock.

Every function takes an open Session and never commits: the caller's `Database.session()` scope
is the one transaction. A request that is impossible raises a domain error (service.errors)
*before* anything is written, so the rolled-back transaction changes nothing. Times that judge
staleness (lease expiry) come from the database clock, `db_now` / `db_later` (`now()` on
PostgreSQL; SQLite is embedded in this process, so its clock is this process's clock).

The worker protocol (lease, heartbeat, complete, fail, the lease sweep) is service.queue: one
interface, a backend per database. Imports models/ and search/ lazily (only where a search is
created or its results computed), service.artifacts (the rows, for the public views),
service.tables, service.schemas and service.errors.
"""

from __future__ import annotations

import difflib
import json
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Interval,
    and_,
    case,
    func,
    literal,
    select,
    update,
)
from sqlalchemy.orm import Session

from vitcube.contract import (
    BUILTIN_TRAINER,
    DEFAULT_METRIC,
    DEFAULT_SPACE,
    FACTORS,
    AshaSchedule,
    FullSchedule,
    InvalidRecipeError,
    MetricSpec,
    TrainerSpec,
    TrialKind,
    default_schedule,
    rung_epochs,
)
from vitcube.service import artifacts
from vitcube.service.errors import InvalidInput, InvalidTransition, NotFound
from vitcube.service.metric import as_top1, best_of, is_top1, metric_of, score_of
from vitcube.service.schemas import (
    COMPACT_COLUMNS,
    CheckpointSummary,
    Counts,
    NamedReference,
    ReferencePlan,
    RungSummary,
    SearchCreate,
    SearchPlan,
    SearchPublic,
    TrialPublic,
    TrialsCompact,
)
from vitcube.service.tables import (
    TRIAL_STATES,
    Artifact,
    Search,
    Trial,
    TrialMetric,
    UTCDateTime,
    Worker,
    utcnow,
)

# trial_metrics' columns besides `value` (the search's metric, named by `searches.metric`).
CURVE_COLUMNS = ("val_top5", "train_loss")
# A `since` read also returns trials updated this long before its cursor: a transaction that
# stamped updated_at before the previous read but committed after it is not missed, and
# replicas' clocks may differ by this much.
SINCE_OVERLAP_S = 10.0


# -- the database clock -----------------------------------------------------------------------


def is_postgres(session: Session) -> bool:
    """Whether the session talks to PostgreSQL (else SQLite)."""
    return session.get_bind().dialect.name == "postgresql"


def db_now(session: Session) -> ColumnElement[datetime]:
    """The database's notion of now, as a SQL expression."""
    if is_postgres(session):
        return func.now()
    return literal(utcnow(), UTCDateTime())


def db_later(session: Session, seconds: float) -> ColumnElement[datetime]:
    """now() + seconds on the database clock."""
    if is_postgres(session):
        return func.now() + literal(timedelta(seconds=seconds), Interval())
    return literal(utcnow() + timedelta(seconds=seconds), UTCDateTime())


# -- searches ---------------------------------------------------------------------------------


def resolve_search(body: SearchCreate) -> tuple[dict[str, Any], Any]:
    """Validate a create body against models/ and search/: the new search's columns and strategy.

    Raises InvalidInput naming what to change (unknown family, unmeetable budget, …).
    """
    from vitcube.models import ArchConfig, count_macs
    from vitcube.search import InfeasibleBudgetError, make_strategy

    # Always known for the builtin datasets; a command trainer's block may leave it out (the
    # script owns its data), and then the base says it or the network keeps its default.
    num_classes = body.dataset.num_classes
    base_in = dict(body.base)
    if num_classes is not None:
        if base_in.get("num_classes") not in (None, num_classes):
            raise InvalidInput(
                f"base.num_classes={base_in['num_classes']} disagrees with dataset "
                f"{body.dataset.name} ({num_classes} classes); drop base.num_classes"
            )
        base_in["num_classes"] = num_classes
    try:
        base = ArchConfig.from_dict(base_in)
    except (ValueError, TypeError, KeyError) as exc:
        raise InvalidInput(f"base: {exc}") from exc
    m0 = int(count_macs(base))
    if body.budget.max_macs is not None:
        max_macs = int(body.budget.max_macs)
    else:
        assert body.budget.c is not None  # the schema guarantees one of them
        max_macs = int(body.budget.c * m0)
    if max_macs < 1:
        raise InvalidInput(f"budget.c={body.budget.c} leaves less than one MAC; raise it")
    min_macs = body.budget.min_macs
    space = {k: (float(lo), float(hi)) for k, (lo, hi) in DEFAULT_SPACE.items()}
    space.update({k: (float(lo), float(hi)) for k, (lo, hi) in (body.space or {}).items()})
    try:
        strategy = make_strategy(
            body.strategy,
            base=base,
            max_macs=max_macs,
            objective=body.objective,
            space=space,
            seed=body.seed,
            min_macs=min_macs,
            score_range=None,  # the planner hands it scores of the search's metric
        )
    except InfeasibleBudgetError as exc:
        raise InvalidInput(f"budget: {exc}") from exc
    except ValueError as exc:
        raise InvalidInput(str(exc)) from exc
    if min_macs is not None and min_macs > max_macs:
        raise InvalidInput(f"budget.min_macs={min_macs:,} exceeds max_macs={max_macs:,}")
    try:
        training = body.training.resolved(
            family=base.family, size=base.size, dataset=body.dataset.name
        )
    except InvalidRecipeError as exc:
        raise InvalidInput(str(exc)) from exc
    schedule = body.schedule if body.schedule is not None else default_schedule(training.epochs)
    named = resolve_named_references(body.references, num_classes=base.num_classes)
    budget = body.budget.model_dump(exclude_none=True)
    known = set(SearchCreate.model_fields)
    extra = {k: v for k, v in (body.model_extra or {}).items() if k not in known}
    try:
        extra = json.loads(json.dumps(extra, allow_nan=False, default=str))
    except ValueError as exc:
        raise InvalidInput(f"extra fields must be plain JSON without NaN: {exc}") from exc
    return {
        "name": body.name,
        "state": "running",
        "base": base.to_dict(),
        # A command trainer's block exactly as given (its script reads it); a builtin one with
        # its classes filled in.
        "dataset": body.dataset.model_dump(exclude_unset=body.trainer.kind == "command"),
        "trainer": body.trainer.model_dump(mode="json", exclude_none=True),
        "trainer_label": body.trainer.label,
        "metric": body.metric.model_dump(mode="json"),
        "budget": budget,
        "m0": m0,
        "max_macs": max_macs,
        "min_macs": min_macs,
        "space": {k: list(v) for k, v in space.items()},
        "objective": body.objective,
        "strategy": body.strategy,
        "max_trials": body.max_trials,
        "parallelism": body.parallelism,
        # The whole validated recipe, the family's and dataset's defaults filled in: what every
        # trial of the search trains with, and a block every worker accepts unchanged (it
        # validates and resolves with the same TrainingRecipe).
        "training": training.model_dump(mode="json"),
        "seed": body.seed,
        "extra": extra,
        "schedule": schedule.model_dump(mode="json"),
        "max_train_epochs": body.max_train_epochs,
        "named_references": named,
    }, strategy


def resolve_named_references(
    references: Sequence[str | NamedReference], *, num_classes: int
) -> list[dict[str, Any]]:
    """The create body's `references` as [{"name", "resolution"}], each a registered preset that
    builds at its resolution for the dataset's classes; InvalidInput naming what to change."""
    from vitcube.models import ArchConfig

    presets = ArchConfig.presets()
    resolved: list[dict[str, Any]] = []
    for index, reference in enumerate(references):
        spec = NamedReference(name=reference) if isinstance(reference, str) else reference
        where = f"references[{index}]"
        if spec.name not in presets:
            close = difflib.get_close_matches(spec.name, presets, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise InvalidInput(
                f"{where}: no preset {spec.name!r}{hint} (presets: {', '.join(presets)})"
            )
        if any(r["name"] == spec.name for r in resolved):
            raise InvalidInput(f"{where}: {spec.name!r} is named twice; name each preset once")
        try:
            arch = ArchConfig.preset(
                spec.name, num_classes=num_classes, resolution=spec.resolution
            ).scale()
        except ValueError as exc:
            raise InvalidInput(f"{where} ({spec.name}): {exc}") from exc
        # The resolution it is built at (a multiple of 16), as its trial will say.
        resolved.append({"name": spec.name, "resolution": int(arch.resolution)})
    return resolved


def named_reference_archs(columns: dict[str, Any]) -> list[tuple[str, Any]]:
    """(name, Arch) of every named reference of a search, from its columns (`named_references`
    and `base`, whose num_classes the presets are built for)."""
    from vitcube.models import ArchConfig

    num_classes = int(columns["base"].get("num_classes") or 1000)
    return [
        (
            ref["name"],
            ArchConfig.preset(
                ref["name"], num_classes=num_classes, resolution=ref["resolution"]
            ).scale(),
        )
        for ref in columns.get("named_references") or []
    ]


def reference_factors(
    base: Any, *, m0: int, max_macs: int, min_macs: int | None
) -> list[tuple[TrialKind, dict[str, float]]]:
    """The reference trials a search starts with, as (kind, factors): the baseline itself when
    it is inside the budget, then the width-only and compound shrinks (search.reference_trials).
    `base` is the search's ArchConfig."""
    from vitcube.search import reference_trials

    refs: list[tuple[TrialKind, dict[str, float]]] = []
    if m0 <= max_macs and (min_macs is None or m0 >= min_macs):
        refs.append(("reference:baseline", {"r": 1.0, "d_i": 1.0, "d_m": 1.0, "w": 1.0}))
    for ref in reference_trials(base, int(max_macs)):
        kind: TrialKind = (
            "reference:width_only" if ref.name == "width_only" else "reference:compound"
        )
        refs.append((kind, dict(ref.factors)))
    return refs


def plan_search(body: SearchCreate) -> SearchPlan:
    """What `body` would create (POST /api/searches/validate), validated as create does and
    nothing written: m0, the budget in MACs, the reference networks, the space's extremes."""
    from vitcube.models import ArchConfig, count_macs, count_params
    from vitcube.search.space import max_reachable_macs, min_reachable_macs

    columns, _ = resolve_search(body)
    base = ArchConfig.from_dict(columns["base"])
    # (kind, preset name, requested factors, network) of every reference the search starts with.
    networks: list[tuple[TrialKind, str | None, dict[str, float], Any]] = [
        (kind, None, factors, base.scale(**factors))
        for kind, factors in reference_factors(
            base, m0=columns["m0"], max_macs=columns["max_macs"], min_macs=columns["min_macs"]
        )
    ]
    networks += [
        ("reference:named", name, {f: 1.0 for f in FACTORS}, arch)
        for name, arch in named_reference_archs(columns)
    ]
    references = [
        ReferencePlan(
            kind=kind,
            name=name,
            factors=factors,
            resolution=arch.resolution,
            macs=count_macs(arch),
            params=count_params(arch),
        )
        for kind, name, factors, arch in networks
    ]
    return SearchPlan(
        warnings=plan_warnings(columns, references=len(references)),
        **{
            key: columns[key]
            for key in (
                "name",
                "base",
                "dataset",
                "m0",
                "max_macs",
                "min_macs",
                "space",
                "objective",
                "strategy",
                "max_trials",
                "parallelism",
                "schedule",
                "training",
                "trainer",
                "metric",
            )
        },
        c=columns["max_macs"] / columns["m0"],
        references=references,
        smallest_macs=min_reachable_macs(base, columns["space"]),
        largest_macs=max_reachable_macs(base, columns["space"]),
    )


def plan_warnings(columns: dict[str, Any], *, references: int) -> list[str]:
    """What a resolved create body allows but will likely not do: under ASHA, a configuration
    trains all epochs only after winning every promotion from its start rung, which takes at
    least eta^promotions configurations there; fewer search trials than that, and possibly none
    trains to the end (the front would hold only references)."""
    schedule = columns["schedule"]
    if schedule.get("kind") != "asha":
        return []
    epochs = int(columns["training"]["epochs"])
    rungs = rung_epochs(AshaSchedule.model_validate(schedule), epochs)
    eta = int(schedule["eta"])
    # The latest bracket starts at rung brackets - 1: the fewest promotions to the last rung.
    promotions = len(rungs) - min(int(schedule.get("brackets", 1)), len(rungs))
    needed = eta**promotions
    search_trials = int(columns["max_trials"]) - references
    if promotions == 0 or search_trials >= needed:
        return []
    rungs_text = ", ".join(str(r) for r in rungs)
    return [
        f"schedule asha (rungs at {rungs_text} epochs, eta {eta}): a configuration trains all "
        f"{epochs} epochs only after {promotions} promotion(s), which takes at least {needed} "
        f"configurations at its start rung; max_trials {columns['max_trials']} leaves "
        f"{max(search_trials, 0)} after the {references} reference trial(s), so possibly none of "
        f"the search's own trains to the end: raise max_trials to at least {needed + references}, "
        'or set schedule: {"kind": "full"}'
    ]


def schedule_of(search: Search) -> FullSchedule | AshaSchedule:
    """The search's stored schedule as its contract model (a row from before schedules: full)."""
    stored = search.schedule or {"kind": "full"}
    if stored.get("kind") == "asha":
        return AshaSchedule.model_validate(stored)
    return FullSchedule(kind="full")


def rungs_of(search: Search) -> tuple[int, ...]:
    """The epochs at which the search's trials' segments end, last = training.epochs."""
    return rung_epochs(schedule_of(search), int(search.training["epochs"]))


def get_search(session: Session, search_id: int, *, for_update: bool = False) -> Search:
    query = select(Search).where(Search.id == search_id)
    if for_update:
        query = query.with_for_update()
    found = session.scalar(query)
    if found is None:
        raise NotFound(f"search {search_id} does not exist")
    return found


def get_trial(session: Session, trial_id: int) -> Trial:
    found = session.get(Trial, trial_id)
    if found is None:
        raise NotFound(f"trial {trial_id} does not exist")
    return found


def counts_by_search(session: Session, search_ids: list[int]) -> dict[int, Counts]:
    rows = session.execute(
        select(Trial.search_id, Trial.state, func.count())
        .where(Trial.search_id.in_(search_ids))
        .group_by(Trial.search_id, Trial.state)
    )
    raw: dict[int, dict[str, int]] = defaultdict(dict)
    for search_id, state, n in rows:
        raw[search_id][state] = n
    return {sid: Counts(**raw.get(sid, {})) for sid in search_ids}


def best_trials(session: Session, searches: list[Search]) -> dict[int, Trial]:
    """The completed trial with the best value of the search's metric within its budget."""
    best: dict[int, Trial] = {}
    for search in searches:
        score = score_of(metric_of(search.metric), Trial.value)
        query = (
            select(Trial)
            .where(
                Trial.search_id == search.id,
                Trial.state == "completed",
                Trial.macs <= search.max_macs,
            )
            .order_by(score.desc(), Trial.macs, Trial.id)
            .limit(1)
        )
        if search.min_macs is not None:
            query = query.where(Trial.macs >= search.min_macs)
        trial = session.scalar(query)
        if trial is not None:
            best[search.id] = trial
    return best


def curves(session: Session, trial_ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    """The learning curves of these trials: points {epoch, <the search's metric>, val_top5,
    train_loss, …extra}, in epoch order."""
    out: dict[int, list[dict[str, Any]]] = defaultdict(list)
    if not trial_ids:
        return out
    rows = session.execute(
        select(TrialMetric, Search.metric)
        .join(Trial, Trial.id == TrialMetric.trial_id)
        .join(Search, Search.id == Trial.search_id)
        .where(TrialMetric.trial_id.in_(trial_ids))
        .order_by(TrialMetric.trial_id, TrialMetric.epoch)
    )
    names: dict[str, str] = {}  # the stored metric (as JSON text) -> its name
    for row, stored in rows:
        key = json.dumps(stored, sort_keys=True)
        name = names.get(key) or names.setdefault(key, metric_of(stored).name)
        point: dict[str, Any] = {"epoch": row.epoch, name: row.value}
        for column in CURVE_COLUMNS:
            point.setdefault(column, getattr(row, column))
        point.update(row.extra or {})
        out[row.trial_id].append(point)
    return out


def trial_public(
    trial: Trial,
    curve: list[dict[str, Any]],
    artifacts: dict[str, Artifact] | None = None,
    *,
    rungs: tuple[int, ...] = (),
    train_images: int | None = None,
    metric: MetricSpec = DEFAULT_METRIC,
) -> TrialPublic:
    """The public view; `artifacts`: the trial's artifact rows by kind (weights, checkpoint);
    `rungs`: its search's rung epochs; `train_images`: its search's images per epoch; `metric`:
    its search's (`value` is the trial's value of it; `top1` is that value for val_top1)."""
    # Older PostgreSQL completes could store a JSON array here (see queue.postgres._complete).
    metrics = trial.metrics if isinstance(trial.metrics, dict) else {}
    weights = (artifacts or {}).get("weights")
    checkpoint = (artifacts or {}).get("checkpoint")
    return TrialPublic(
        id=trial.id,
        search_id=trial.search_id,
        state=trial.state,  # type: ignore[arg-type]
        kind=trial.kind,  # type: ignore[arg-type]
        reference=trial.reference_name,
        factors=trial.factors,
        effective_factors=trial.effective_factors,
        arch=trial.arch,
        resolution=trial.resolution,
        macs=trial.macs,
        params=trial.params,
        value=trial.value,
        top1=as_top1(metric, trial.value),
        top5=trial.top5,
        latency_ms=trial.latency_ms,
        images_per_s=trial.images_per_s,
        worker=trial.worker,
        attempts=trial.attempts,
        error=trial.error,
        surrogate=trial.surrogate,
        curve=curve,
        created_at=trial.created_at,
        started_at=trial.started_at,
        finished_at=trial.finished_at,
        lease_expires_at=trial.lease_expires_at if trial.state == "running" else None,
        resumed_from_epoch=metrics.get("resumed_from_epoch"),
        attempt_epochs_trained=metrics.get("epochs_trained"),
        to_epoch=trial.to_epoch,
        rung=_rung_index(trial.to_epoch, rungs),
        rung_values=dict(trial.rung_values or {}),
        rung_top1=dict(trial.rung_values or {}) if is_top1(metric) else {},
        epochs_trained=trial.epochs_trained or 0.0,
        train_macs=(trial.epochs_trained or 0.0) * trial.macs * (train_images or 0),
        latency_onnx_ms=metrics.get("latency_onnx_ms"),
        weights_bytes=None if weights is None else weights.bytes,
        checkpoint=None
        if checkpoint is None
        else CheckpointSummary(
            epoch=checkpoint.epoch, step=checkpoint.step, bytes=checkpoint.bytes
        ),
    )


def _rung_index(to_epoch: int | None, rungs: tuple[int, ...]) -> int | None:
    if not rungs:
        return None
    if to_epoch is None:
        return len(rungs) - 1
    return rungs.index(to_epoch) if to_epoch in rungs else None


def trials_public(session: Session, trials: list[Trial]) -> list[TrialPublic]:
    """Public views of these trials, with their curves and artifacts, in their order."""
    ids = [t.id for t in trials]
    by_trial = curves(session, ids)
    held = artifacts.by_trial(session, ids)
    # Each search's rungs and images per epoch, once per search rather than once per trial.
    context = {
        s.id: (rungs_of(s), s.train_images, metric_of(s.metric))
        for s in session.scalars(select(Search).where(Search.id.in_({t.search_id for t in trials})))
    }
    return [
        trial_public(
            t,
            by_trial.get(t.id, []),
            held.get(t.id),
            rungs=context[t.search_id][0],
            train_images=context[t.search_id][1],
            metric=context[t.search_id][2],
        )
        for t in trials
    ]


def list_trials(session: Session, search_id: int) -> list[TrialPublic]:
    trials = list(
        session.scalars(select(Trial).where(Trial.search_id == search_id).order_by(Trial.id))
    )
    return trials_public(session, trials)


def list_trials_page(
    session: Session,
    search_id: int,
    *,
    limit: int | None,
    offset: int,
    states: Sequence[str] | None = None,
) -> tuple[list[TrialPublic], int]:
    """One page of a search's trials in id order (only those in `states`, if given), and how
    many there are in all."""
    where = [Trial.search_id == search_id]
    if states:
        where.append(Trial.state.in_(list(states)))
    total = session.scalar(select(func.count()).where(*where)) or 0
    query = select(Trial).where(*where).order_by(Trial.id).offset(offset)
    if limit is not None:
        query = query.limit(limit)
    return trials_public(session, list(session.scalars(query))), int(total)


def compact_trials(session: Session, search_id: int, since: datetime | None) -> TrialsCompact:
    """The dashboard's view of a search's trials (schemas.COMPACT_COLUMNS), all of them or
    those updated after `since` − SINCE_OVERLAP_S."""
    cursor: datetime = session.execute(select(db_now(session))).scalar_one()
    metric = metric_of(session.scalar(select(Search.metric).where(Search.id == search_id)))
    top1 = Trial.value if is_top1(metric) else literal(None)
    eff = (Trial.eff_r, Trial.eff_d_i, Trial.eff_d_m, Trial.eff_w)
    query = select(
        Trial.id, Trial.kind, Trial.state, *eff, Trial.resolution, Trial.macs, Trial.params,
        top1, Trial.top5, Trial.latency_ms, Trial.worker, Trial.attempts, Trial.surrogate,
        Trial.to_epoch, Trial.epochs_trained, func.substr(Trial.error, 1, 300),
        Trial.reference_name, Trial.value,
    ).where(Trial.search_id == search_id)  # fmt: skip
    if since is not None:
        query = query.where(Trial.updated_at > since - timedelta(seconds=SINCE_OVERLAP_S))
    rows = session.execute(query.order_by(Trial.id)).all()
    weights = dict(
        session.execute(
            select(Artifact.trial_id, Artifact.bytes).where(
                Artifact.search_id == search_id, Artifact.kind == "weights"
            )
        ).all()
    )
    total = session.scalar(select(func.count()).where(Trial.search_id == search_id)) or 0
    return TrialsCompact(
        search_id=search_id,
        # COMPACT_COLUMNS order: ... to_epoch, epochs_trained, weights_bytes, error, reference,
        # value.
        rows=[
            [*_rounded(row[:-3]), weights.get(row[0]), *row[-3:-1], _rounded_value(row[-1], metric)]
            for row in rows
        ],
        total=int(total),
        since=since,
        cursor=cursor if cursor.tzinfo else cursor.replace(tzinfo=UTC),
    )


# Digits kept per compact column: the factors to 1e-4 (their lattice is coarser), accuracies to
# 1e-5 (a thousandth of a point); a 10,000-trial view is a sixth smaller for it.
_DIGITS: dict[str, int] = {
    **dict.fromkeys(FACTORS, 4),
    "top1": 5,
    "top5": 5,
    "latency_ms": 3,
    "epochs_trained": 3,
}
_COMPACT_DIGITS = {COMPACT_COLUMNS.index(name): digits for name, digits in _DIGITS.items()}


def _rounded_value(value: float | None, metric: MetricSpec) -> float | None:
    """The metric's value as the compact view sends it: as top1 for top-1 (the page sorts by it,
    so both must tie alike), else to six significant digits whatever its scale."""
    if value is None:
        return None
    if is_top1(metric):
        return round(float(value), _DIGITS["top1"])
    return float(f"{float(value):.6g}")


def _rounded(row: Sequence[Any]) -> list[Any]:
    out = list(row)
    for i, digits in _COMPACT_DIGITS.items():
        if out[i] is not None:
            out[i] = round(float(out[i]), digits)
    return out


def curves_of(session: Session, search_id: int, trial_ids: list[int]) -> dict[int, Any]:
    """The learning curves of these trials of the search (others' ids are left out)."""
    ids = list(
        session.scalars(
            select(Trial.id).where(Trial.search_id == search_id, Trial.id.in_(trial_ids))
        )
    )
    return dict(curves(session, ids))


def search_public(session: Session, searches: list[Search]) -> list[SearchPublic]:
    ids = [s.id for s in searches]
    counts = counts_by_search(session, ids)
    best = best_trials(session, searches)
    best_public = {p.search_id: p for p in trials_public(session, list(best.values()))}
    held = artifacts.bytes_by_search(session, ids)
    spent = compute_by_search(session, ids)
    rungs = rung_summaries(session, searches)
    can_run = trainer_workers(session)
    out = []
    for s in searches:
        epochs, epoch_macs = spent.get(s.id, (0.0, 0.0))
        label = s.trainer_label or BUILTIN_TRAINER
        workers = can_run.get(label, 0)
        out.append(
            SearchPublic(
                id=s.id,
                name=s.name,
                state=s.state,  # type: ignore[arg-type]
                base=s.base,
                dataset=s.dataset,
                budget=s.budget,
                m0=s.m0,
                max_macs=s.max_macs,
                min_macs=s.min_macs,
                c=s.max_macs / s.m0,
                space={k: (v[0], v[1]) for k, v in s.space.items()},
                objective=s.objective,
                strategy=s.strategy,
                max_trials=s.max_trials,
                parallelism=s.parallelism,
                training=s.training,
                seed=s.seed,
                extra=s.extra,
                counts=counts[s.id],
                best=best_public.get(s.id),
                error=s.error,
                created_at=s.created_at,
                finished_at=s.finished_at,
                artifact_bytes=held.get(s.id, 0),
                schedule=schedule_of(s).model_dump(mode="json"),
                rungs=rungs[s.id],
                max_train_epochs=s.max_train_epochs,
                references=list(s.named_references or []),
                epochs_trained=epochs,
                train_macs=epoch_macs * (s.train_images or 0),
                trainer=TrainerSpec.model_validate(s.trainer or {"kind": BUILTIN_TRAINER}),
                metric=MetricSpec.model_validate(s.metric or {}),
                trainer_workers=workers,
                notice=no_worker_notice(label)
                if s.state == "running" and counts[s.id].queued and not workers
                else None,
            )
        )
    return out


def no_worker_notice(label: str) -> str:
    """What a running search with queued trials says when no connected worker can run its
    trainer: not an error (workers may come later), and how to start one."""
    trainer = TrainerSpec.from_label(label)
    start = (
        "vitcube worker --server URL --token TOKEN"
        if trainer.kind == "builtin"
        else f"vitcube worker --command {trainer.name}='…'"
    )
    return (
        f"no connected worker can run trainer {label}: start one with {start}; its queued "
        "trials wait until one asks for a lease"
    )


def compute_by_search(session: Session, search_ids: list[int]) -> dict[int, tuple[float, float]]:
    """(Σ epochs_trained, Σ epochs_trained × MACs) over each search's trials."""
    rows = session.execute(
        select(
            Trial.search_id,
            func.sum(Trial.epochs_trained),
            func.sum(Trial.epochs_trained * Trial.macs),
        )
        .where(Trial.search_id.in_(search_ids))
        .group_by(Trial.search_id)
    )
    return {sid: (float(epochs or 0.0), float(macs or 0.0)) for sid, epochs, macs in rows}


def rung_summaries(session: Session, searches: list[Search]) -> dict[int, list[RungSummary]]:
    """Per search, how many of its trials reached each rung, wait there, went on, and the best
    result there: counted in the database, one query per distinct rung epoch of these searches
    (a page of a 10,000-trial search must not read every trial's rung results)."""
    by_search = {s.id: rungs_of(s) for s in searches}
    metrics = {s.id: metric_of(s.metric) for s in searches}
    counted: dict[tuple[int, int], Any] = {}
    for epoch in sorted({e for rungs in by_search.values() for e in rungs}):
        ids = [sid for sid, rungs in by_search.items() if epoch in rungs]
        result = Trial.rung_values[str(epoch)].as_float()
        rows = session.execute(
            select(
                Trial.search_id,
                func.count(),
                func.max(result),
                func.min(result),
                func.count(case((and_(Trial.state == "paused", Trial.to_epoch == epoch), 1))),
                func.count(case((Trial.to_epoch > epoch, 1))),
                func.count(case((Trial.to_epoch.is_(None), 1))),
            )
            .where(Trial.search_id.in_(ids), result.is_not(None))
            .group_by(Trial.search_id)
        )
        for sid, reached, highest, lowest, paused, later, unknown in rows:
            best = best_of(metrics[sid], (highest, lowest))
            counted[(sid, epoch)] = (reached, best, paused, later, unknown)
    out: dict[int, list[RungSummary]] = {}
    for sid, rungs in by_search.items():
        out[sid] = []
        for k, epoch in enumerate(rungs):
            reached, best, paused, later, unknown = counted.get((sid, epoch), (0, None, 0, 0, 0))
            last = k + 1 == len(rungs)
            # A trial without a segment end (older rows) is at the last rung.
            promoted = 0 if last else later + unknown
            out[sid].append(
                RungSummary(
                    epoch=epoch,
                    reached=reached,
                    paused=paused,
                    promoted=promoted,
                    best_top1=None if best is None else as_top1(metrics[sid], float(best)),
                    best_value=None if best is None else float(best),
                )
            )
    return out


def stop_search(session: Session, search_id: int) -> Search:
    """running or paused → stopped; queued trials → stopped; running ones hear `stop`."""
    search = get_search(session, search_id, for_update=True)
    if search.state in ("completed", "failed"):
        raise InvalidTransition(f"search {search_id} is already {search.state}")
    if search.state in ("running", "paused"):
        search.state = "stopped"
        search.finished_at = utcnow()
        session.execute(
            update(Trial)
            .where(Trial.search_id == search_id, Trial.state == "queued")
            .values(state="stopped", finished_at=db_now(session), error="search stopped")
        )
    return search


# -- workers ----------------------------------------------------------------------------------

# A worker counts as connected (able to take a search's trials) while its latest lease request
# is at most this old by the database clock; idle workers ask every few seconds.
WORKER_SEEN_WINDOW_S = 300.0


def trainer_workers(session: Session) -> dict[str, int]:
    """Per trainer label, the workers seen within WORKER_SEEN_WINDOW_S that can run it."""
    recent = session.scalars(
        select(Worker.trainers).where(
            Worker.last_seen_at >= db_later(session, -WORKER_SEEN_WINDOW_S)
        )
    )
    counted: dict[str, int] = defaultdict(int)
    for trainers in recent:
        for label in set(trainers or ()):
            counted[label] += 1
    return dict(counted)


def list_workers(session: Session) -> list[dict[str, Any]]:
    """Every worker that asked for a lease (the workers table) or holds trials: its trainers,
    trial counts and when it was last seen (its latest lease request or heartbeat)."""

    def entry(name: str) -> dict[str, Any]:
        return by_worker.setdefault(
            name,
            {
                "worker": name,
                "running": 0,
                "completed": 0,
                "failed": 0,
                "last_seen_at": None,
                "running_trials": [],
                "trainers": [],
            },
        )

    by_worker: dict[str, dict[str, Any]] = {}
    for name, trainers, last_seen in session.execute(
        select(Worker.name, Worker.trainers, Worker.last_seen_at)
    ):
        w = entry(name)
        w["trainers"] = list(trainers or [])
        w["last_seen_at"] = last_seen
    rows = session.execute(
        select(Trial.worker, Trial.state, Trial.id, Trial.heartbeat_at).where(
            Trial.worker.is_not(None)
        )
    )
    for worker, state, trial_id, seen in rows:
        if worker is None:
            continue
        w = entry(worker)
        if state in ("running", "completed", "failed"):
            w[state] += 1
        if state == "running":
            w["running_trials"].append(trial_id)
        if seen is not None and (w["last_seen_at"] is None or seen > w["last_seen_at"]):
            w["last_seen_at"] = seen
    return sorted(by_worker.values(), key=lambda w: w["worker"])


assert set(Counts.model_fields) == set(TRIAL_STATES)
