"""What the CLI prints: rich renderables of the contract's views (a search, its front, a plan,
the formula's answer), shared by `vitcube search show` and the live `watch`.

Pure functions of the models, no I/O. Imports rich and vitcube.contract.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from vitcube.contract import (
    DEFAULT_METRIC,
    FACTORS,
    FormulaPublic,
    MetricSpec,
    SearchPlan,
    SearchPublic,
    TrialPublic,
)

STATE_STYLE = {
    "running": "cyan",
    "queued": "white",
    "paused": "yellow",
    "completed": "green",
    "failed": "red",
    "stopped": "magenta",
}


def macs(value: float | None) -> str:
    """MACs with an SI prefix: 616.5 M, 1.23 G."""
    if value is None:
        return "—"
    for threshold, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= threshold:
            return f"{value / threshold:.4g} {prefix}"
    return f"{value:.4g}"


def short_kind(kind: str) -> str:
    """`search`, or the reference rule: `width_only`, `compound`, `baseline`."""
    return kind.removeprefix("reference:")


def plural(count: Any, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def percent(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f} %"


def baseline(base: dict[str, Any]) -> str:
    size = base.get("size")
    width = base.get("width")
    named = f" {size}" if size else (f"-{width}" if width is not None else "")
    dropped = base.get("dropped_stages") or []
    extra = f", stages {dropped} dropped" if dropped else ""
    return f"{base.get('family', '?')}{named} at {base.get('resolution', '?')} px{extra}"


def budget(search: SearchPublic | SearchPlan) -> str:
    low = f"{macs(search.min_macs)} – " if search.min_macs else "≤ "
    return f"{low}{macs(search.max_macs)}MACs (c = {search.c:.3g} of m0 = {macs(search.m0)}MACs)"


def metric_label(metric: MetricSpec) -> str:
    """A search's metric as a column or line names it: `top-1` for val_top1, else its name."""
    return "top-1" if metric.name == DEFAULT_METRIC.name else metric.name


def metric_value(metric: MetricSpec, value: float | None) -> str:
    """A value of the metric: a percentage for top-1, four significant digits otherwise."""
    if metric.name == DEFAULT_METRIC.name:
        return percent(value)
    return "—" if value is None else f"{value:.4g}"


def trials_table(
    trials: Sequence[TrialPublic],
    *,
    title: str | None = None,
    curve_epochs: bool = False,
    metric: MetricSpec = DEFAULT_METRIC,
) -> Table:
    """One row per trial: id, kind, state, effective factors, px, MACs, params, the metric."""
    table = Table(title=title, title_justify="left", box=None, pad_edge=False, header_style="bold")
    for column in ("id", "kind", "state", *FACTORS, "px", "MACs", "params", metric_label(metric)):
        table.add_column(column, justify="left" if column in ("kind", "state") else "right")
    if curve_epochs:
        table.add_column("epoch", justify="right")
    for trial in trials:
        row: list[RenderableType] = [
            str(trial.id),
            trial.reference or short_kind(trial.kind),
            Text(trial.state, style=STATE_STYLE.get(trial.state, "")),
            *(f"{trial.effective_factors.get(f, float('nan')):.3f}" for f in FACTORS),
            str(trial.resolution),
            macs(trial.macs),
            macs(trial.params),
            metric_value(metric, trial.value),
        ]
        if curve_epochs:
            row.append(_epoch(trial))
        table.add_row(*row)
    return table


def running_table(trials: Sequence[TrialPublic], *, metric: MetricSpec = DEFAULT_METRIC) -> Table:
    """The running trials with their epoch (of the segment's end) and latest value."""
    table = Table(title="running", title_justify="left", box=None, header_style="bold")
    label = "val top-1" if metric.name == DEFAULT_METRIC.name else metric.name
    for column in ("id", "worker", "epoch", label, "MACs", "px"):
        table.add_column(column, justify="left" if column == "worker" else "right")
    for trial in trials:
        last = trial.curve[-1] if trial.curve else {}
        value = last.get(metric.name)
        table.add_row(
            str(trial.id),
            trial.worker or "—",
            _epoch(trial),
            metric_value(metric, value) if isinstance(value, int | float) else "—",
            macs(trial.macs),
            str(trial.resolution),
        )
    return table


def counts_line(search: SearchPublic) -> Text:
    text = Text()
    for state, count in search.counts.model_dump().items():
        if count:
            text.append(f"{state} {count}  ", style=STATE_STYLE.get(state, ""))
    return text if text.plain else Text("no trials yet")


def search_header(search: SearchPublic) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    state = Text(search.state, style=STATE_STYLE.get(search.state, "bold"))
    grid.add_row("search", Text(f"{search.id} {search.name!r}  ").append(state))
    grid.add_row("baseline", f"{baseline(search.base)}, dataset {search.dataset.get('name')}")
    grid.add_row("budget", budget(search))
    grid.add_row(
        "strategy",
        f"{search.strategy}, {search.objective}, schedule {search.schedule.get('kind')}, "
        f"{plural(search.max_trials, 'trial')} × {plural(search.training.get('epochs'), 'epoch')}, "
        f"parallelism {search.parallelism}",
    )
    grid.add_row("trials", counts_line(search))
    if search.trainer.kind != "builtin" or search.notice:
        can_run = plural(search.trainer_workers, "connected worker")
        grid.add_row("trainer", f"{search.trainer.label} ({can_run} can run it)")
    if search.notice:
        grid.add_row("notice", Text(search.notice, style="yellow"))
    limit = f" of {search.max_train_epochs}" if search.max_train_epochs else ""
    grid.add_row(
        "compute",
        f"{search.epochs_trained:.1f}{limit} epochs trained, "
        f"{macs(search.train_macs)}MACs of training",
    )
    if search.error:
        grid.add_row("error", Text(search.error, style="red"))
    return grid


def best_line(search: SearchPublic) -> Text:
    best = search.best
    if best is None:
        return Text("best: none completed yet")
    factors = ", ".join(f"{f}={best.effective_factors.get(f, 0):.3f}" for f in FACTORS)
    return Text.assemble(
        ("best: ", "bold"),
        f"trial {best.id} ({best.kind}) {metric_label(search.metric)} "
        f"{metric_value(search.metric, best.value)} at {macs(best.macs)}MACs, "
        f"{best.resolution} px, {factors}\n",
        ("deploy it: ", "bold"),
        f"vitcube export --search {search.id} --trial {best.id} --out best.onnx",
    )


def search_view(search: SearchPublic, front: Sequence[TrialPublic]) -> RenderableType:
    """`vitcube search show`: the header, the Pareto front, the best network."""
    title = f"Pareto front ({len(front)} of {search.counts.completed} completed)"
    parts: list[RenderableType] = [search_header(search), Text("")]
    table = trials_table(front, title=title, metric=search.metric)
    parts.append(table if front else Text("Pareto front: empty"))
    parts += [Text(""), best_line(search)]
    return Group(*parts)


def watch_view(
    search: SearchPublic,
    front: Sequence[TrialPublic],
    running: Sequence[TrialPublic],
    failed: Sequence[TrialPublic],
    *,
    updated: datetime | None = None,
    problem: str | None = None,
) -> RenderableType:
    """`vitcube search watch`: the search's header, front, running trials and failures."""
    parts: list[RenderableType] = [search_header(search), Text("")]
    table = trials_table(front, title="Pareto front", metric=search.metric)
    parts.append(table if front else Text("front: empty"))
    if running:
        parts += [Text(""), running_table(running, metric=search.metric)]
    if failed:
        parts.append(Text(""))
        parts.append(Text(f"failed ({len(failed)}, latest first):", style="bold red"))
        for trial in sorted(failed, key=lambda t: t.id, reverse=True)[:5]:
            first = (trial.error or "no message").strip().splitlines()[0][:160]
            parts.append(Text(f"  trial {trial.id}: {first}", style="red"))
    parts += [Text(""), best_line(search)]
    stamp = (updated or datetime.now(UTC)).astimezone().strftime("%H:%M:%S")
    footer = f"updated {stamp} · Ctrl-C stops watching (the search goes on)"
    if problem:
        footer += f" · {problem}"
    parts.append(Text(footer, style="dim"))
    return Group(*parts)


def plan_view(plan: SearchPlan) -> RenderableType:
    """`vitcube search create --dry-run`: what the body would create."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("name", plan.name)
    grid.add_row("baseline", f"{baseline(plan.base)}, dataset {plan.dataset.get('name')}")
    grid.add_row("m0", f"{plan.m0:,} MACs ({macs(plan.m0)}MACs)")
    low = f"min_macs {plan.min_macs:,}, " if plan.min_macs else ""
    grid.add_row("budget", f"{low}max_macs {plan.max_macs:,} MACs (c = {plan.c:.4g})")
    space = ", ".join(f"{f} [{lo:g}, {hi:g}]" for f, (lo, hi) in plan.space.items())
    grid.add_row("space", space)
    grid.add_row(
        "reachable",
        f"smallest {plan.smallest_macs:,} MACs ({macs(plan.smallest_macs)}MACs), "
        f"largest {plan.largest_macs:,} MACs ({macs(plan.largest_macs)}MACs)",
    )
    schedule = ", ".join(f"{k} {v}" for k, v in plan.schedule.items() if k != "kind")
    grid.add_row(
        "schedule", f"{plan.schedule.get('kind')}" + (f" ({schedule})" if schedule else "")
    )
    grid.add_row(
        "search",
        f"{plan.strategy}, {plan.objective}, {plural(plan.max_trials, 'trial')}, parallelism "
        f"{plan.parallelism}, {plural(plan.training.get('epochs'), 'epoch')} at batch "
        f"{plan.training.get('batch_size')}",
    )
    refs = Table(title="reference networks", title_justify="left", box=None, header_style="bold")
    for column in ("kind", *FACTORS, "px", "MACs", "params"):
        refs.add_column(column, justify="left" if column == "kind" else "right")
    for ref in plan.references:
        refs.add_row(
            ref.name or short_kind(ref.kind),
            *(f"{ref.factors[f]:.3f}" for f in FACTORS),
            str(ref.resolution),
            f"{ref.macs:,}",
            f"{ref.params:,}",
        )
    body: RenderableType = refs if plan.references else Text("reference networks: none fit")
    warnings = [Text(f"warning: {warning}", style="yellow") for warning in plan.warnings]
    return Group(grid, Text(""), body, *([Text(""), *warnings] if warnings else []))


def formula_view(answer: FormulaPublic) -> RenderableType:
    """`vitcube search formula`: factors ± std at c, the network built and its MACs."""
    table = Table(box=None, header_style="bold")
    for column in ("factor", "mean", "± std", "built with"):
        table.add_column(column, justify="left" if column == "factor" else "right")
    for factor in FACTORS:
        estimate = answer.factors[factor]
        table.add_row(
            factor, f"{estimate.mean:.3f}", f"{estimate.std:.3f}", f"{answer.scale[factor]:.3f}"
        )
    fitted = answer.fitted_on.get("trials", "?")
    lines: list[RenderableType] = [
        Text.assemble(
            ("downsizing formula", "bold"),
            f" at c = {answer.c:.4g}, fitted on "
            f"{fitted} completed trials"
            + (" (stale: more completed since)" if answer.stale else ""),
        ),
        table,
        Text(
            f"network: {answer.arch.get('resolution', '?')} px input, {answer.macs:,} MACs "
            f"(budget {answer.max_macs:,}), {answer.params:,} params"
        ),
    ]
    return Group(*lines)


def _epoch(trial: TrialPublic) -> str:
    """The epoch reached (a running trial's from its last heartbeat) / the segment's end."""
    last = trial.curve[-1].get("epoch") if trial.curve else None
    done = max(int(trial.epochs_trained), last if isinstance(last, int) else 0)
    target = trial.to_epoch
    return f"{done}/{target}" if target else str(done)
